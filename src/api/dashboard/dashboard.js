// The dashboard: /api/v1/stats for the first picture, then the change stream
// /api/v1/stats/stream (each event's diffs applied, its id the epoch), and /metrics polled for the
// ingestion rate, the latency histogram and the epochs. The stream is read with fetch() so that it
// can carry the bearer token; after the server goes away it resumes with Last-Event-ID from the
// last epoch applied, and starts over from a fresh snapshot when the server cannot resume it.
"use strict";

const TOKEN_KEY = "exoflow.token";
const METRICS_EVERY_MS = 2000;
const RATE_POINTS = 60;
const TOP_RULES = 12;
const TOP_DUPLICATES = 10;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";

/** The statistics the page shows: "dimension\0key\0rule\0metric" -> value. */
const values = new Map();
let epoch = null;
let committedEpoch = null;
/** The epoch through which the page holds every change: where a resumed stream starts. */
let lastEventId = null;
/** Whether a stream was ever open, and how often one was opened again since. */
let connected = false;
let reconnects = 0;
let following = false;
let polling = false;
let renderQueued = false;
/** Per scrape: time, files and bytes read, for the rate. */
const scrapes = [];

const $ = (id) => document.getElementById(id);

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** A token in the URL fragment (`#token=...`) is kept for this tab and taken out of the address bar. */
function takeTokenFromFragment() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const given = fragment.get("token");
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function headers(extra) {
  const h = Object.assign({}, extra);
  const t = token();
  if (t) h.Authorization = "Bearer " + t;
  return h;
}

class Unauthorized extends Error {}
class CannotResume extends Error {}

async function call(path, extra) {
  const response = await fetch(path, { headers: headers(extra), cache: "no-store" });
  if (response.status === 401 || response.status === 403) throw new Unauthorized(path);
  return response;
}

function keyOf(row) {
  return [row.dimension, row.key, row.rule ?? "", row.metric].join("\u0000");
}

function setConnection(state, text) {
  const el = $("connection");
  el.dataset.connection = state;
  el.dataset.reconnects = String(reconnects);
  el.textContent = text;
}

function showError(text) {
  const el = $("last-error");
  el.hidden = !text;
  el.textContent = text || "";
}

// ---- the statistics ---------------------------------------------------------------------------

function replaceAll(rows) {
  values.clear();
  applyRows(rows);
}

function applyRows(rows) {
  for (const row of rows) {
    const key = keyOf(row);
    const value = (values.get(key) || 0) + row.value;
    if (value === 0) values.delete(key);
    else values.set(key, value);
  }
}

function setEpoch(e) {
  if (e !== null && e !== undefined && (epoch === null || e > epoch)) epoch = e;
}

/** The rows of one dimension as [key, rule, metric, value]. */
function rowsOf(dimension) {
  const out = [];
  for (const [key, value] of values) {
    const [d, k, rule, metric] = key.split("\u0000");
    if (d === dimension) out.push({ key: k, rule, metric, value });
  }
  return out;
}

function value(dimension, key, rule, metric) {
  return values.get([dimension, key, rule, metric].join("\u0000")) || 0;
}

function queueRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

function render() {
  $("epoch").textContent = epoch === null ? "–" : String(epoch);
  $("committed-epoch").textContent = committedEpoch === null ? "–" : String(committedEpoch);
  for (const el of document.querySelectorAll(".totals [data-dimension]")) {
    const v = value("total", "", "", el.dataset.metric);
    show(el, v, el.dataset.format);
  }
  renderLanguages();
  renderRules();
  renderDuplicates();
}

function show(el, v, format) {
  el.dataset.value = String(v);
  el.textContent = format === "bytes" ? bytes(v) : v.toLocaleString("en");
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i === 0 ? String(n) : n.toFixed(1)) + " " + units[i];
}

function element(tag, attrs, text) {
  const el = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** A cell that shows one statistic, with what it is in data attributes. */
function statCell(dimension, key, rule, metric, v) {
  const el = element("span", {
    class: "num",
    "data-dimension": dimension,
    "data-key": key,
    "data-rule": rule,
    "data-metric": metric,
  });
  show(el, v);
  return el;
}

/** A horizontal bar, `fraction` of the full width. */
function bar(fraction, cls) {
  const svg = element("svg:svg", { class: "bar", viewBox: "0 0 100 10", preserveAspectRatio: "none" });
  svg.appendChild(element("svg:rect", { x: 0, y: 0, height: 10, width: Math.max(0.5, 100 * fraction), class: cls }));
  return svg;
}

function renderLanguages() {
  const byLanguage = new Map();
  for (const r of rowsOf("language")) {
    const entry = byLanguage.get(r.key) || { files: 0, lines: 0 };
    entry[r.metric] = r.value;
    byLanguage.set(r.key, entry);
  }
  const languages = [...byLanguage.entries()].sort((a, b) => b[1].files - a[1].files || a[0].localeCompare(b[0]));
  const most = Math.max(1, ...languages.map(([, e]) => e.files));
  const box = $("languages");
  box.replaceChildren();
  for (const [language, e] of languages) {
    const row = element("div", { class: "bar-row", "data-language": language });
    row.append(
      element("span", { class: "name" }, language || "(unknown)"),
      bar(e.files / most, "files"),
      statCell("language", language, "", "files", e.files || 0),
      statCell("language", language, "", "lines", e.lines || 0),
    );
    box.appendChild(row);
  }
  if (languages.length === 0) box.appendChild(element("p", { class: "empty" }, "no files yet"));
}

function renderRules() {
  const byRule = new Map();
  for (const r of rowsOf("rule")) {
    const entry = byRule.get(r.rule) || { files: 0, matches: 0 };
    entry[r.metric] = r.value;
    byRule.set(r.rule, entry);
  }
  const rules = [...byRule.entries()]
    .sort((a, b) => b[1].matches - a[1].matches || b[1].files - a[1].files || a[0].localeCompare(b[0]))
    .slice(0, TOP_RULES);
  const most = Math.max(1, ...rules.map(([, e]) => e.matches));
  const box = $("rules");
  box.replaceChildren();
  for (const [rule, e] of rules) {
    const row = element("div", { class: "bar-row", "data-rule-row": rule });
    row.append(
      element("span", { class: "name" }, rule),
      bar(e.matches / most, "matches"),
      statCell("rule", "", rule, "files", e.files || 0),
      statCell("rule", "", rule, "matches", e.matches || 0),
    );
    box.appendChild(row);
  }
  if (rules.length === 0) box.appendChild(element("p", { class: "empty" }, "no matches yet"));
}

function renderDuplicates() {
  const groups = rowsOf("duplicates").filter((r) => r.metric === "paths");
  groups.sort((a, b) => b.value - a.value || a.key.localeCompare(b.key));
  const paths = groups.reduce((sum, g) => sum + g.value, 0);
  show($("duplicate-groups"), groups.length);
  $("duplicate-paths").textContent = paths + " paths";
  const body = $("duplicates").tBodies[0];
  body.replaceChildren();
  for (const g of groups.slice(0, TOP_DUPLICATES)) {
    const tr = element("tr", { "data-duplicate": g.key });
    tr.append(element("td", { class: "hash", title: g.key }, g.key.slice(0, 16) + "…"), element("td"));
    tr.lastChild.appendChild(statCell("duplicates", g.key, "", "paths", g.value));
    body.appendChild(tr);
  }
  if (groups.length === 0) {
    const tr = element("tr");
    tr.appendChild(element("td", { colspan: 2, class: "empty" }, "no two current files share their content"));
    body.appendChild(tr);
  }
}

// ---- the change stream ------------------------------------------------------------------------

/** Server-Sent Events from a fetch() body: calls `onEvent({event, id, data})` per event. */
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { event: "message", id: null, data: [] };
  for (;;) {
    const { value: chunk, done } = await reader.read();
    if (done) return;
    buffer += chunk;
    let end;
    while ((end = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + (buffer.startsWith("\r\n", end) ? 2 : 1));
      if (line === "") {
        if (event.data.length > 0) onEvent({ event: event.event, id: event.id, data: event.data.join("\n") });
        event = { event: "message", id: null, data: [] };
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let text = colon < 0 ? "" : line.slice(colon + 1);
      if (text.startsWith(" ")) text = text.slice(1);
      if (field === "event") event.event = text;
      else if (field === "data") event.data.push(text);
      else if (field === "id") event.id = text;
    }
  }
}

/** One connection of the stream, until it ends; resumes after `lastEventId` when there is one. */
async function streamOnce() {
  const resume = lastEventId !== null ? { "Last-Event-ID": lastEventId } : {};
  const response = await call("/api/v1/stats/stream", resume);
  if (response.status === 410 || response.status === 400) throw new CannotResume(await response.text());
  if (!response.ok) throw new Error("the stream answered " + response.status);
  if (connected) reconnects++;
  connected = true;
  setConnection("live", "live");
  showError("");
  await readEvents(response.body, (e) => {
    if (e.event === "snapshot") {
      const body = JSON.parse(e.data);
      replaceAll(body.rows);
      epoch = body.epoch;
      committedEpoch = body.committed_epoch;
      lastEventId = e.id;
    } else if (e.event === "diff") {
      const body = JSON.parse(e.data);
      applyRows(body.rows);
      setEpoch(body.epoch);
      lastEventId = e.id;
    } else if (e.event === "error") {
      // The server dropped this client for falling behind: start over from a snapshot.
      lastEventId = null;
      showError(JSON.parse(e.data).error);
    }
    queueRender();
  });
}

/** The first picture from /api/v1/stats; the stream resumes after its epoch. */
async function loadSnapshot() {
  const response = await call("/api/v1/stats");
  if (!response.ok) throw new Error("/api/v1/stats answered " + response.status);
  const body = await response.json();
  replaceAll(body.rows);
  epoch = body.epoch;
  committedEpoch = body.committed_epoch;
  // The stream's event ids are EPOCH-RUN: resume after this epoch of this run.
  lastEventId = `${body.epoch}-${body.run}`;
  queueRender();
}

/** Follows the stream for good: reconnects after each end or failure, waiting longer each time. */
async function follow() {
  let wait = RETRY_MIN_MS;
  for (;;) {
    try {
      if (lastEventId === null) await loadSnapshot();
      await streamOnce();
      wait = RETRY_MIN_MS;
    } catch (error) {
      if (error instanceof Unauthorized) {
        following = false;
        askForToken(token() !== null);
        return;
      }
      if (error instanceof CannotResume) {
        // A server that does not hold the changes after our epoch: a fresh picture.
        lastEventId = null;
        wait = RETRY_MIN_MS;
      } else {
        showError(String(error.message || error));
      }
    }
    setConnection("reconnecting", "reconnecting…");
    await new Promise((resolve) => setTimeout(resolve, wait));
    wait = Math.min(RETRY_MAX_MS, wait * 2);
  }
}

// ---- /metrics ---------------------------------------------------------------------------------

/** Prometheus text -> [{name, labels, value}]. */
function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

function sample(samples, name) {
  const s = samples.find((x) => x.name === name);
  return s ? s.value : null;
}

async function pollMetrics() {
  polling = true;
  try {
    const response = await call("/metrics");
    if (response.ok) {
      const samples = parseMetrics(await response.text());
      const e = sample(samples, "exoflow_epoch");
      const c = sample(samples, "exoflow_committed_epoch");
      if (e !== null) setEpoch(e);
      if (c !== null) committedEpoch = c;
      renderRate(samples);
      renderLatency(samples);
      queueRender();
    }
  } catch (error) {
    if (error instanceof Unauthorized) {
      polling = false;
      return;
    }
    // The server is away; the stream's reconnection says so.
  }
  setTimeout(pollMetrics, METRICS_EVERY_MS);
}

function renderRate(samples) {
  const files = sample(samples, "exoflow_files_total");
  const read = sample(samples, "exoflow_bytes_total");
  if (files === null || read === null) return;
  const now = performance.now();
  const last = scrapes[scrapes.length - 1];
  // A restarted server counts from zero again: the rate starts over.
  if (last && (files < last.files || read < last.bytes)) scrapes.length = 0;
  scrapes.push({ at: now, files, bytes: read });
  while (scrapes.length > RATE_POINTS + 1) scrapes.shift();
  const rates = [];
  for (let i = 1; i < scrapes.length; i++) {
    const dt = (scrapes[i].at - scrapes[i - 1].at) / 1000;
    rates.push({
      files: (scrapes[i].files - scrapes[i - 1].files) / dt,
      bytes: (scrapes[i].bytes - scrapes[i - 1].bytes) / dt,
    });
  }
  const current = rates[rates.length - 1];
  $("files-read").textContent = files.toLocaleString("en");
  $("files-read").dataset.value = String(files);
  $("rate-now").textContent = current ? current.files.toFixed(1) + " files/s" : "– files/s";
  $("rate-bytes").textContent = current ? bytes(Math.round(current.bytes)) + "/s" : "–";
  const chart = $("rate-chart");
  chart.replaceChildren();
  const most = Math.max(1, ...rates.map((r) => r.files));
  const step = 300 / RATE_POINTS;
  const offset = 300 - rates.length * step;
  rates.forEach((r, i) => {
    const h = (r.files / most) * 95;
    chart.appendChild(element("svg:rect", { class: "rate", x: offset + i * step, y: 100 - h, width: step * 0.8, height: h }));
  });
  $("rate-peak").textContent = "peak " + most.toFixed(1) + " files/s";
}

function renderLatency(samples) {
  const buckets = samples
    .filter((s) => s.name === "exoflow_event_to_stats_latency_seconds_bucket")
    .map((s) => ({ le: s.labels.le === "+Inf" ? Infinity : Number(s.labels.le), cumulative: s.value }))
    .sort((a, b) => a.le - b.le);
  if (buckets.length === 0) return;
  const counts = buckets.map((b, i) => b.cumulative - (i > 0 ? buckets[i - 1].cumulative : 0));
  const total = buckets[buckets.length - 1].cumulative;
  const quantile = (q) => {
    const b = buckets.find((x) => x.cumulative >= q * total);
    return b ? b.le : null;
  };
  const label = (le) => (le === Infinity ? "+Inf" : le < 1 ? (le * 1000).toPrecision(3) + " ms" : le.toPrecision(3) + " s");
  $("latency-quantiles").dataset.events = String(total);
  $("latency-quantiles").textContent =
    total > 0 ? "p50 ≤ " + label(quantile(0.5)) + " · p99 ≤ " + label(quantile(0.99)) + " · " + total + " events" : "no events yet";
  const chart = $("latency-chart");
  chart.replaceChildren();
  const most = Math.max(1, ...counts);
  const width = 300 / counts.length;
  counts.forEach((n, i) => {
    const h = (n / most) * 95;
    const rect = element("svg:rect", { class: "latency", x: i * width, y: 100 - h, width: width * 0.85, height: h });
    rect.appendChild(element("svg:title", {}, "≤ " + label(buckets[i].le) + ": " + n));
    chart.appendChild(rect);
  });
  $("latency-axis").textContent = "buckets from ≤ " + label(buckets[0].le) + " to " + label(buckets[buckets.length - 1].le);
}

// ---- the token --------------------------------------------------------------------------------

function askForToken(refused) {
  setConnection("auth", "token required");
  $("token-form").hidden = false;
  $("token-error").hidden = !refused;
  $("token-input").focus();
}

function start() {
  $("token-form").hidden = true;
  if (!following) {
    following = true;
    follow();
  }
  if (!polling) pollMetrics();
}

document.addEventListener("DOMContentLoaded", () => {
  takeTokenFromFragment();
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const given = $("token-input").value.trim();
    if (!given) return;
    sessionStorage.setItem(TOKEN_KEY, given);
    $("token-input").value = "";
    start();
  });
  start();
});
