// Drives the dashboard of a running server in headless Chromium, for tests/integration/dashboard.rs.
//
//   node tests/dashboard/check.mjs BASE_URL TOKEN
//
// Loads BASE_URL/ once without a token (the page must ask for one, and connect once it is typed),
// then as BASE_URL/#token=TOKEN, and answers commands read from stdin, one per line:
//
//   match FILES RECONNECTS  waits until the numbers the page shows equal /api/v1/stats and the
//                           counters of /metrics (read here with the token), with FILES files in
//                           total and at least RECONNECTS reconnections of its stream; prints
//                           `matched JSON` (what the page shows)
//   screenshot PATH         saves a full-page screenshot; prints `screenshot PATH`
//   quit                    closes the browser; prints `done`
//
// Any failure prints `failed REASON` and exits 1. Chromium is /usr/bin/chromium (or $CHROMIUM).
import { chromium } from "playwright-core";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import readline from "node:readline";

const [base, token] = process.argv.slice(2);
if (!base || !token) fail("usage: check.mjs BASE_URL TOKEN");
const MATCH_TIMEOUT_MS = 60_000;
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

function fail(reason) {
  console.log("failed " + String(reason).replace(/\n/g, " | "));
  // Playwright kills the browser it launched when the process exits.
  process.exit(1);
}

const userDataDir = await mkdtemp(join(tmpdir(), "exoflow-dashboard-"));
let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    viewport: { width: 1280, height: 1000 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
} catch (error) {
  fail(`cannot start ${executablePath}: ${error.message}`);
}

// Every request the page makes must go to the server itself; the page must raise no error.
const problems = [];
const origin = new URL(base).origin;
context.on("request", (request) => {
  if (!request.url().startsWith(origin + "/")) problems.push("a request outside the server: " + request.url());
});
function watch(page) {
  page.on("pageerror", (error) => problems.push("page error: " + error.message));
  page.on("console", (message) => {
    // A fetch that fails while the server restarts is expected; nothing else is.
    const text = message.text();
    if (message.type() === "error" && !/Failed to load resource|ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|network error/i.test(text)) {
      problems.push("console error: " + text);
    }
  });
  return page;
}
function checkProblems() {
  if (problems.length > 0) fail(problems.join("; "));
}

async function stats() {
  const response = await fetch(base + "/api/v1/stats", { headers: { Authorization: "Bearer " + token } });
  if (!response.ok) throw new Error("/api/v1/stats answered " + response.status);
  return response.json();
}

/** The counters of /metrics that the page shows: files read and latency observations. */
async function metrics() {
  const response = await fetch(base + "/metrics", { headers: { Authorization: "Bearer " + token } });
  if (!response.ok) throw new Error("/metrics answered " + response.status);
  const text = await response.text();
  const sample = (name) => Number((new RegExp("^" + name + " (\\S+)$", "m").exec(text) || [])[1]);
  return {
    files_read: sample("exoflow_files_total"),
    latency_events: sample("exoflow_event_to_stats_latency_seconds_count"),
  };
}

/** What the statistics say the page must show: totals, languages (files, lines), rules, groups. */
function expected(body) {
  const shown = {};
  let groups = 0;
  for (const row of body.rows) {
    const wanted =
      row.dimension === "total" ||
      (row.dimension === "language" && (row.metric === "files" || row.metric === "lines")) ||
      row.dimension === "rule";
    if (wanted) shown[[row.dimension, row.key, row.rule ?? "", row.metric].join("/")] = row.value;
    if (row.dimension === "duplicates" && row.metric === "paths") groups++;
  }
  return { values: shown, duplicate_groups: groups };
}

/** What the page shows, read from its data attributes. */
async function shown(page) {
  return page.evaluate(() => {
    const values = {};
    for (const el of document.querySelectorAll("[data-dimension][data-metric]")) {
      const d = el.dataset;
      if (d.dimension === "duplicates") continue;
      const v = Number(d.value ?? "0");
      // The totals show a zero too; the statistics leave zeros out.
      if (v !== 0) values[[d.dimension, d.key, d.rule, d.metric].join("/")] = v;
    }
    const connection = document.getElementById("connection").dataset;
    return {
      values,
      duplicate_groups: Number(document.getElementById("duplicate-groups").dataset.value ?? "0"),
      connection: connection.connection,
      reconnects: Number(connection.reconnects),
      epoch: Number(document.getElementById("epoch").textContent),
      committed_epoch: Number(document.getElementById("committed-epoch").textContent),
      latency: document.getElementById("latency-quantiles").textContent,
      latency_events: Number(document.getElementById("latency-quantiles").dataset.events ?? "-1"),
      files_read: Number(document.getElementById("files-read").dataset.value ?? "-1"),
      latency_bars: document.querySelectorAll("#latency-chart rect").length,
      rate: document.getElementById("rate-now").textContent,
    };
  });
}

function same(a, b) {
  return JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort());
}

async function match(page, files, reconnects) {
  const started = Date.now();
  let last = "nothing read";
  while (Date.now() - started < MATCH_TIMEOUT_MS) {
    checkProblems();
    const want = expected(await stats().catch(() => ({ rows: [] })));
    const counters = await metrics().catch(() => ({}));
    const now = await shown(page);
    const total = now.values["total///files"] ?? 0;
    if (
      now.connection === "live" &&
      now.reconnects >= reconnects &&
      total === files &&
      same(now.values, want.values) &&
      now.duplicate_groups === want.duplicate_groups &&
      now.files_read === counters.files_read &&
      now.latency_events === counters.latency_events
    ) {
      return now;
    }
    last = JSON.stringify({ page: now, stats: want, metrics: counters });
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  fail(`the page never showed ${files} files and /api/v1/stats (${reconnects} reconnections); last: ${last}`);
}

// Without a token the page asks for one, and connects once it is given.
const asking = watch(await context.newPage());
await asking.goto(base + "/");
try {
  await asking.waitForSelector('#connection[data-connection="auth"]', { timeout: 20_000 });
  await asking.waitForSelector("#token-form", { state: "visible", timeout: 5_000 });
  await asking.fill("#token-input", token);
  await asking.click('#token-form button[type="submit"]');
  await asking.waitForSelector('#connection[data-connection="live"]', { timeout: 20_000 });
} catch (error) {
  fail("the token prompt: " + error.message);
}
await asking.close();

// The token in the fragment: the page keeps it for the tab and takes it out of the address.
const page = watch(await context.newPage());
await page.goto(base + "/#token=" + encodeURIComponent(token));
try {
  await page.waitForSelector('#connection[data-connection="live"]', { timeout: 20_000 });
} catch (error) {
  fail("the page with #token= never connected: " + error.message);
}
if (page.url().includes(token)) fail("the token stayed in the address: " + page.url());
checkProblems();
console.log("ready");

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  const [command, ...args] = line.trim().split(/\s+/);
  if (command === "match") {
    const now = await match(page, Number(args[0]), Number(args[1] ?? "0"));
    console.log("matched " + JSON.stringify(now));
  } else if (command === "screenshot") {
    await page.screenshot({ path: args[0], fullPage: true });
    console.log("screenshot " + args[0]);
  } else if (command === "quit") {
    break;
  } else if (command) {
    fail("unknown command: " + line);
  }
}
checkProblems();
await context.close();
await rm(userDataDir, { recursive: true, force: true });
console.log("done");
// stdin stays open in the event loop: leave now.
process.exit(0);
