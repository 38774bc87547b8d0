//! The dashboard in a real browser: headless Chromium, driven by `tests/dashboard/check.mjs`
//! (playwright-core), loads `/` from a running `exoflow watch --http` with a token; while files are
//! written, modified and deleted its numbers come to equal `/api/v1/stats`, and they go on doing so
//! after the watch restarts on the same lake and port.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Watching, s, write};

const TOKEN: &str = "dashboard-token-0123";
/// How long one answer of the browser script may take; it gives up on a match itself after 60 s.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// What the browser test needs; a missing piece fails the test with how to install it.
fn check_prerequisites() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "the dashboard test needs node on PATH (apt-get install nodejs npm): {node:?}"
    );
    let module = repo().join("tests/dashboard/node_modules/playwright-core/package.json");
    assert!(
        module.exists(),
        "the dashboard test needs playwright-core: run `npm ci --prefix tests/dashboard` ({} is missing)",
        module.display()
    );
    let chromium = chromium();
    assert!(
        chromium.exists(),
        "the dashboard test needs Chromium at {} (apt-get install chromium)",
        chromium.display()
    );
}

/// `check.mjs` running against one server: commands go to its stdin, answers come from its stdout.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Browser {
    fn start(base: &str) -> Browser {
        let mut child = Command::new("node")
            .arg(repo().join("tests/dashboard/check.mjs"))
            .args([base, TOKEN])
            .env("CHROMIUM", chromium())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (sender, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut text);
            text
        });
        Browser {
            child,
            stdin,
            answers,
            stderr: Some(stderr),
        }
    }

    /// The next answer, which must start with `word`; the rest of it.
    fn expect(&mut self, word: &str) -> String {
        let started = Instant::now();
        let answer = loop {
            match self.answers.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => break Some(line),
                Err(mpsc::RecvTimeoutError::Timeout) if started.elapsed() < ANSWER_TIMEOUT => {}
                Err(_) => break None,
            }
        };
        match answer.as_deref().and_then(|a| a.strip_prefix(word)) {
            Some(rest) => rest.trim_start().to_string(),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
                panic!(
                    "the browser script answered {answer:?}, not `{word} ...`; its stderr:\n{}",
                    stderr.unwrap_or_default()
                );
            }
        }
    }

    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").expect("the browser script reads its commands");
        self.stdin.flush().unwrap();
    }

    /// Waits until the page shows `files` files, what `/api/v1/stats` says and the counters of
    /// `/metrics` it charts, with at least
    /// `reconnects` reconnections of its stream; returns what the page shows.
    fn shows(&mut self, files: u64, reconnects: u64) -> Value {
        self.send(&format!("match {files} {reconnects}"));
        serde_json::from_str(&self.expect("matched")).expect("the page's numbers are JSON")
    }
}

impl Drop for Browser {
    /// A test that fails half-way leaves no browser behind.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

/// The status, content type, Content-Security-Policy and body of a GET, with the token or not.
fn get(base: &str, path: &str, token: bool) -> (u16, String, String, String) {
    let mut request = agent().get(format!("{base}{path}"));
    if token {
        request = request.header("Authorization", format!("Bearer {TOKEN}"));
    }
    let mut response = request.call().unwrap();
    let header = |name: &str| {
        (response.headers().get(name))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (kind, policy) = (header("content-type"), header("content-security-policy"));
    let status = response.status().as_u16();
    (
        status,
        kind,
        policy,
        response.body_mut().read_to_string().unwrap(),
    )
}

/// A watch serving at `addr` with the token, once `/readyz` answers 200.
fn serve(dir: &Path, lake: &Path, addr: &str, tokens: &Path) -> (Watching, String) {
    let (watch, base) = Watching::serving_on(dir, lake, addr, &["--token-file", s(tokens)]);
    let started = Instant::now();
    while !(agent().get(format!("{base}/readyz")).call()).is_ok_and(|r| r.status() == 200) {
        assert!(started.elapsed() < Duration::from_secs(30), "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    (watch, base)
}

/// The numbers the page must show, as the browser script names them, from `/api/v1/stats`.
fn expected(base: &str) -> Value {
    let (status, _, _, body) = get(base, "/api/v1/stats", true);
    assert_eq!(status, 200, "{body}");
    let stats: Value = serde_json::from_str(&body).unwrap();
    let mut shown = serde_json::Map::new();
    for row in stats["rows"].as_array().unwrap() {
        let (dimension, metric) = (row["dimension"].as_str().unwrap(), row["metric"].as_str());
        let wanted = dimension == "total"
            || dimension == "rule"
            || (dimension == "language" && matches!(metric, Some("files" | "lines")));
        if wanted {
            let name = format!(
                "{dimension}/{}/{}/{}",
                row["key"].as_str().unwrap(),
                row["rule"].as_str().unwrap_or(""),
                metric.unwrap()
            );
            shown.insert(name, row["value"].clone());
        }
    }
    Value::Object(shown)
}

#[test]
fn api_dashboard_in_chromium_follows_the_stream_and_reconnects_across_a_restart() {
    check_prerequisites();
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("dir"), tmp.path().join("lake"));
    std::fs::create_dir(&dir).unwrap();
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, format!("dashboard:{TOKEN}\n")).unwrap();
    let (watch, base) = serve(&dir, &lake, "127.0.0.1:0", &tokens);

    // The page and its assets hold no data: open, with a policy that allows only this server.
    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard/dashboard.js", "text/javascript"),
        ("/dashboard/dashboard.css", "text/css"),
    ] {
        let (status, content_type, policy, _) = get(&base, path, false);
        assert_eq!(status, 200, "{path}");
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(policy.contains("default-src 'none'"), "{path}: {policy}");
        assert!(policy.contains("connect-src 'self'"), "{path}: {policy}");
    }
    assert_eq!(get(&base, "/api/v1/stats", false).0, 401);

    let mut browser = Browser::start(&base);
    browser.expect("ready");

    write(&dir, "src/main.rs", "fn main() {\n    // TODO: more\n}\n");
    write(&dir, "src/copy.rs", "fn main() {\n    // TODO: more\n}\n");
    write(&dir, "tool.py", "print('x')  # TODO FIXME\n");
    write(&dir, "notes.md", "# Notes\n\nnothing to do\n");
    let page = browser.shows(4, 0);
    assert_eq!(page["values"], expected(&base), "{page}");
    assert_eq!(page["values"]["total///files"], 4);
    assert_eq!(page["values"]["language/Rust//files"], 2);
    assert_eq!(page["duplicate_groups"], 1, "the two copies: {page}");
    assert!(page["epoch"].as_u64().unwrap() >= 1, "{page}");
    assert!(page["files_read"].as_u64().unwrap() >= 4, "{page}");

    // A modification retracts the old contribution, a delete the whole file's.
    write(&dir, "tool.py", "print('x')\n");
    std::fs::remove_file(dir.join("notes.md")).unwrap();
    let page = browser.shows(3, 0);
    assert_eq!(page["values"], expected(&base), "{page}");
    assert!(page["values"].get("rule//fixme/files").is_none(), "{page}");

    // The server goes away; files change meanwhile; a new one serves the same lake on the same
    // port, and the page reconnects by itself.
    let addr = base.strip_prefix("http://").unwrap().to_string();
    watch.stop();
    write(&dir, "lib.go", "package lib // TODO\n");
    std::fs::remove_file(dir.join("src/copy.rs")).unwrap();
    let (watch, again) = serve(&dir, &lake, &addr, &tokens);
    assert_eq!(again, base);
    write(&dir, "more.py", "# FIXME later\n");
    let page = browser.shows(4, 1);
    assert_eq!(page["values"], expected(&base), "{page}");
    assert_eq!(page["values"]["rule//fixme/files"], 1, "{page}");
    assert_eq!(page["duplicate_groups"], 0, "{page}");
    // The ingestion and latency panels show the new run's counters of /metrics: it read the file
    // that changed while it was away and the one written since.
    assert!(page["files_read"].as_u64().unwrap() >= 2, "{page}");
    assert!(page["latency_events"].as_u64().unwrap() >= 1, "{page}");
    assert!(page["latency_bars"].as_u64().unwrap() > 1, "{page}");
    assert!(page["committed_epoch"].as_u64().unwrap() >= 1, "{page}");

    let shots = repo().join("target/dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("dashboard.png");
    browser.send(&format!("screenshot {}", shot.display()));
    browser.expect("screenshot");
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG at {}", shot.display());
    println!("dashboard screenshot: {}", shot.display());

    browser.send("quit");
    browser.expect("done");
    assert!(browser.child.wait().unwrap().success());
    watch.stop();
}
