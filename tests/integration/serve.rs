//! `replay --http [--serve]` and `serve LAKE` through a real HTTP client: a replay serves while it
//! runs and, with `--serve`, its final statistics after it; `serve` follows the commits of a watch
//! writing the lake and leaves the lake as it found it. And 1,000 idle stream clients of a watch
//! neither slow its ingestion nor grow its memory past a bound.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::{
    Summed, add, agent, eventually, files_total, get, printed, serve, stats, subscribe,
};
use crate::util::{Watching, exoflow, s, stats_current, write};

/// A running exoflow that serves HTTP: its base URL, as its stderr reports it.
struct Serving {
    child: Child,
    base: String,
    stderr: std::thread::JoinHandle<String>,
}

impl Serving {
    /// Runs `exoflow args...` with `--http 127.0.0.1:0`, once it reports where it serves.
    fn start(args: &[&str]) -> Serving {
        let mut child = exoflow()
            .args(args)
            .args(["--http", "127.0.0.1:0"])
            .env_remove("EXOFLOW_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("exoflow starts");
        let stderr = child.stderr.take().unwrap();
        let (sender, addr) = std::sync::mpsc::channel();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(base) = line.strip_prefix("serving on ") {
                    let _ = sender.send(base.to_string());
                }
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        let base = match addr.recv_timeout(Duration::from_secs(30)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                panic!("no server: {}", stderr.join().unwrap());
            }
        };
        Serving {
            child,
            base,
            stderr,
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits (up to a minute) for the process to exit; its status, stdout and stderr.
    fn wait(mut self) -> (ExitStatus, String, String) {
        let started = Instant::now();
        while self.running() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "it never ended"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut stdout = String::new();
        let _ = self
            .child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout);
        let status = self.child.wait().unwrap();
        (status, stdout, self.stderr.join().unwrap())
    }

    /// SIGTERM, then what [`Serving::wait`] returns.
    fn stop(self) -> (ExitStatus, String, String) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait()
    }
}

/// Every file under `root` with its bytes.
fn tree_bytes(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let name = path.strip_prefix(root).unwrap().display().to_string();
                files.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

fn corpus(dir: &Path, files: usize) {
    for i in 0..files {
        let text = format!("// file {i}\nfn f{i}() {{}} // TODO {}\n", i % 7);
        write(dir, &format!("d{}/f{i}.rs", i % 10), text);
    }
}

#[test]
fn api_replay_http_serves_while_it_runs_and_stops_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, lake) = (tmp.path().join("tree"), tmp.path().join("lake"));
    corpus(&tree, 4000);
    let mut replay = Serving::start(&[
        "replay",
        s(&tree),
        "--out",
        s(&lake),
        "--workers",
        "2",
        "--commit-interval",
        "10ms",
    ]);
    let base = replay.base.clone();
    // The server answers from the start of the run, before the replay is done: the live
    // statistics are 503 until the restored state is in them, then the count as it grows.
    let (status, body) = get(&base, "/healthz");
    assert_eq!(status, 200, "{body}");
    let mut seen_files = Vec::new();
    while replay.running() {
        match agent()
            .get(format!("{base}/api/v1/stats?dimension=total"))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
        {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let body = response.body_mut().read_to_string().unwrap();
                match status {
                    200 => seen_files.push(files_total(&serde_json::from_str(&body).unwrap())),
                    503 if seen_files.is_empty() => {}
                    _ => panic!("{status} {body} after {seen_files:?}"),
                }
            }
            Err(_) => break, // the server stopped with the replay
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!seen_files.is_empty(), "no answer while the replay ran");
    let (status, stdout, stderr) = replay.wait();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stdout.contains("4000 files"), "{stdout}");
    assert!(
        seen_files.windows(2).all(|w| w[0] <= w[1]),
        "the live count only grows: {seen_files:?}"
    );
    println!("files seen during the replay: {seen_files:?}");
    // Without --serve, the server ended with the replay.
    assert!(
        agent().get(format!("{base}/healthz")).call().is_err(),
        "still serving after the replay"
    );
}

#[test]
fn api_replay_serve_keeps_serving_the_final_statistics_until_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, lake) = (tmp.path().join("tree"), tmp.path().join("lake"));
    corpus(&tree, 40);
    write(&tree, "notes.md", "# FIXME later\n");
    let mut replay = Serving::start(&[
        "replay",
        s(&tree),
        "--out",
        s(&lake),
        "--workers",
        "2",
        "--serve",
    ]);
    let base = replay.base.clone();
    let settled = eventually(
        "/readyz 200 and /api/v1/stats equal to stats_current",
        || {
            let (status, body) = get(&base, "/readyz");
            if status != 200 || !lake.join("stats_current.parquet").exists() {
                return Err(format!("{status} {body}"));
            }
            let now = stats(&base, "");
            (printed(&now["rows"]) == stats_current(&lake))
                .then_some(now.clone())
                .ok_or(now.to_string())
        },
    );
    assert_eq!(files_total(&settled), 41, "{settled}");
    assert_eq!(settled["epoch"], settled["committed_epoch"], "{settled}");
    // The replay is over (its summary is printed) and the server stays.
    std::thread::sleep(Duration::from_millis(500));
    assert!(replay.running(), "--serve ended with the replay");
    assert_eq!(get(&base, "/readyz").0, 200);
    let (status, rules) = get(&base, "/api/v1/rules");
    assert_eq!(status, 200, "{rules}");
    let rules: Value = serde_json::from_str(&rules).unwrap();
    let fixme = (rules["rules"].as_array().unwrap().iter())
        .find(|r| r["id"] == "fixme")
        .unwrap_or_else(|| panic!("{rules}"));
    assert_eq!(fixme["files"], 1, "{rules}");
    let (status, stdout, stderr) = replay.stop();
    assert!(
        status.success(),
        "SIGTERM after the replay exits 0: {status}\n{stderr}"
    );
    assert!(stdout.contains("replayed 1 snapshot"), "{stdout}");
    assert!(stderr.contains("serving the final statistics"), "{stderr}");
}

#[test]
fn api_replay_serve_requires_http() {
    let tmp = tempfile::tempdir().unwrap();
    let out = exoflow()
        .args(["replay", s(tmp.path()), "--out"])
        .arg(tmp.path().join("lake"))
        .arg("--serve")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--http"), "{stderr}");
}

#[test]
fn api_serve_follows_a_watch_and_leaves_the_lake_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("dir"), tmp.path().join("lake"));
    std::fs::create_dir(&dir).unwrap();
    write(&dir, "a.rs", "fn main() {} // TODO\n");
    let watch = Watching::start(&dir, &lake);
    eventually("the watch's first commit", || {
        if !lake.join("stats_current.parquet").exists() {
            return Err("no stats_current.parquet yet".to_string());
        }
        stats_current(&lake)
            .iter()
            .any(|r| r == "total  null files 1")
            .then_some(())
            .ok_or(format!("{:?}", stats_current(&lake)))
    });
    let served = Serving::start(&["serve", s(&lake)]);
    let base = served.base.clone();
    eventually("/readyz 200", || {
        let (status, body) = get(&base, "/readyz");
        (status == 200).then_some(()).ok_or(body)
    });
    let stream = subscribe(&base);
    let (event, _, snapshot) = stream.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(event, "snapshot");
    let mut summed = Summed::new();
    add(&mut summed, &snapshot["rows"]);

    // The watch writes; the serving process follows its commits.
    write(&dir, "b.py", "print('x')  # FIXME\n");
    write(&dir, "c.md", "# notes\n");
    write(&dir, "a.rs", "fn main() { loop {} }\n");
    std::fs::remove_file(dir.join("c.md")).unwrap();
    for i in 0..20 {
        write(&dir, &format!("more/m{i}.txt"), format!("line {i}\n"));
    }
    let settled = eventually(
        "serve's /api/v1/stats equal to stats_current.parquet",
        || {
            let now = stats(&base, "");
            let want = stats_current(&lake);
            (files_total(&now) == 22 && printed(&now["rows"]) == want)
                .then_some(now.clone())
                .ok_or(format!("{now} against {want:?}"))
        },
    );
    let mut last = 0;
    eventually("the stream's sum equal to /api/v1/stats", || {
        while let Ok((event, id, data)) = stream.try_recv() {
            assert_eq!(event, "diff", "{data}");
            let id = crate::api::epoch_of(&id.unwrap());
            assert!(id > last, "event ids grow: {id} after {last}");
            last = id;
            add(&mut summed, &data["rows"]);
        }
        let got: Vec<String> = (summed.iter())
            .map(|([d, k, r, m], v)| format!("{d} {k} {r} {m} {v}"))
            .collect();
        (got == printed(&settled["rows"]))
            .then_some(())
            .ok_or(format!("{got:?}"))
    });
    assert!(last > 0, "no diff event came");
    watch.stop();

    // With the writer gone, serving reads and never writes: every route, a resumed stream, the
    // metrics, and the lake holds the same bytes before and after.
    let before = tree_bytes(&lake);
    let want = stats_current(&lake);
    eventually("the final commit followed", || {
        let now = stats(&base, "");
        (printed(&now["rows"]) == want)
            .then_some(())
            .ok_or(now.to_string())
    });
    for path in [
        "/api/v1/stats",
        "/api/v1/epochs",
        "/api/v1/rules",
        "/metrics",
        "/readyz",
    ] {
        let (status, body) = get(&base, path);
        assert_eq!(status, 200, "{path}: {body}");
    }
    let resumed = crate::api::subscribe_to(&base, "/api/v1/stats/stream?since=0", None);
    let (event, _, _) = resumed.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        event, "diff",
        "a resumed stream starts with the lake's diffs"
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(tree_bytes(&lake), before, "serve changed the lake");
    let (status, _, stderr) = served.stop();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(tree_bytes(&lake), before, "serve changed the lake");
}

#[test]
fn api_serve_a_lake_without_commits_is_not_ready_and_needs_its_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("dir"), tmp.path().join("lake"));
    std::fs::create_dir(&dir).unwrap();
    // What a run creates when it opens a lake, before its first commit.
    std::fs::create_dir_all(lake.join("_exoflow/commits")).unwrap();
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, "ops:right-token\n").unwrap();
    let served = Serving::start(&["serve", s(&lake), "--token-file", s(&tokens)]);
    let base = served.base.clone();
    let call = |path: &str, token: Option<&str>| {
        let mut request = agent().get(format!("{base}{path}"));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let mut response = request.call().unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    };
    assert_eq!(call("/healthz", None).0, 200);
    assert_eq!(call("/readyz", None).0, 503);
    assert_eq!(call("/api/v1/stats", None).0, 401);
    assert_eq!(call("/api/v1/stats", Some("wrong-token")).0, 401);
    // The routes that read the live statistics or the committed lake: 503 with a JSON error
    // until there is a commit.
    for path in [
        "/api/v1/stats",
        "/api/v1/stats/stream",
        "/api/v1/rules",
        "/api/v1/files",
        "/api/v1/duplicates",
        "/api/v1/files/s/a.rs",
    ] {
        let (status, body) = call(path, Some("right-token"));
        assert_eq!(status, 503, "{path}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert!(
            error["error"].as_str().unwrap().contains("not ready"),
            "{body}"
        );
    }

    // A watch opens the lake while it is served (serving holds no lock) and commits.
    write(&dir, "a.rs", "// TODO\n");
    let watch = Watching::start(&dir, &lake);
    eventually("/readyz 200 after the first commit", || {
        let (status, body) = call("/readyz", None);
        (status == 200).then_some(()).ok_or(body)
    });
    let (_, body) = call(
        "/api/v1/stats?dimension=total&metric=files",
        Some("right-token"),
    );
    let now: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(files_total(&now), 1, "{now}");
    watch.stop();
    let (status, _, stderr) = served.stop();
    assert!(status.success(), "{status}: {stderr}");
}

#[test]
fn api_serve_refuses_what_is_not_a_lake() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    write(&plain, "x.txt", "not a lake\n");
    for path in [plain.clone(), tmp.path().join("missing")] {
        let out = exoflow()
            .args(["serve", s(&path), "--http", "127.0.0.1:0"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("is not an exoflow lake"), "{stderr}");
    }
    assert!(!tmp.path().join("missing").exists(), "nothing was created");
    assert!(!plain.join("_exoflow").exists(), "nothing was created");
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = (status.lines())
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or_else(|| panic!("no VmRSS in {status}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Raises the soft limit of open files to `want` (or to the hard limit, when that is lower);
/// the watch started afterwards inherits it.
fn raise_open_files(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if limit.rlim_cur < want {
        limit.rlim_cur = want.min(limit.rlim_max);
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }
    limit.rlim_cur
}

/// Writes one file and returns how long until `/api/v1/stats` counts `files` files.
fn ingestion_latency(dir: &Path, base: &str, name: &str, files: i64) -> Duration {
    let started = Instant::now();
    write(dir, name, format!("// {name} TODO\n"));
    loop {
        if files_total(&stats(base, "?dimension=total&metric=files")) == files {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{name} never reached the statistics"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A watch's statistics still update promptly with this many stream clients connected and idle.
const IDLE_CLIENTS: usize = 1000;
/// The most the watch's resident memory may grow with them connected.
const IDLE_CLIENTS_RSS_BOUND_KIB: u64 = 64 * 1024;
/// The longest a write may take to reach the statistics with them connected: twice the longest
/// without them, measured in the same test, plus this much: each client's stream encodes every
/// diff itself (a few hundred ms an epoch for all of them in a debug build on a loaded machine),
/// and room for noise.
const IDLE_CLIENTS_LATENCY_SLACK: Duration = Duration::from_millis(750);

#[test]
fn api_a_thousand_idle_stream_clients_neither_slow_ingestion_nor_grow_memory_unbounded() {
    let limit = raise_open_files(IDLE_CLIENTS as u64 + 1024);
    assert!(
        limit >= IDLE_CLIENTS as u64 + 256,
        "the open files limit {limit} is too low for {IDLE_CLIENTS} clients"
    );
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("dir"), tmp.path().join("lake"));
    std::fs::create_dir(&dir).unwrap();
    let (watch, base) = serve(&dir, &lake, &[]);
    eventually("/readyz 200", || {
        let (status, body) = get(&base, "/readyz");
        (status == 200).then_some(()).ok_or(body)
    });
    let pid = watch.pid();
    let mut alone = Vec::new();
    for i in 0..5 {
        alone.push(ingestion_latency(&dir, &base, &format!("a{i}.rs"), i + 1));
    }
    let rss_before = rss_kib(pid);

    let addr = base.strip_prefix("http://").unwrap().to_string();
    let mut clients = Vec::with_capacity(IDLE_CLIENTS);
    for _ in 0..IDLE_CLIENTS {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "GET /api/v1/stats/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        clients.push(stream);
    }
    // Every client is answered (its stream starts), then none of them reads again.
    for stream in &mut clients {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&head));
    }
    let mut crowded = Vec::new();
    for i in 0..5 {
        crowded.push(ingestion_latency(&dir, &base, &format!("b{i}.rs"), i + 6));
    }
    // Changes reach every idle client's socket meanwhile; they are still connected.
    for i in 0..20 {
        write(&dir, &format!("c/c{i}.txt"), format!("{i}\n"));
    }
    eventually("30 files in /api/v1/stats", || {
        let now = stats(&base, "?dimension=total&metric=files");
        (files_total(&now) == 30)
            .then_some(())
            .ok_or(now.to_string())
    });
    let rss_after = rss_kib(pid);
    let (status, text) = get(&base, "/metrics");
    assert_eq!(status, 200);
    let open = (text.lines())
        .find(|l| l.starts_with("exoflow_http_requests_total{route=\"/api/v1/stats/stream\""))
        .unwrap_or_else(|| panic!("no stream requests counted:\n{text}"))
        .to_string();
    drop(clients);
    let slowest = |d: &[Duration]| d.iter().max().copied().unwrap();
    let bound = 2 * slowest(&alone) + IDLE_CLIENTS_LATENCY_SLACK;
    println!(
        "{IDLE_CLIENTS} idle stream clients: write-to-statistics latency alone {:?} (max {:?}), \
         with them {:?} (max {:?}, bound {bound:?}); watch RSS {} KiB before, {} KiB with them \
         (+{} KiB); {open}",
        alone,
        slowest(&alone),
        crowded,
        slowest(&crowded),
        rss_before,
        rss_after,
        rss_after.saturating_sub(rss_before)
    );
    assert!(
        slowest(&crowded) <= bound,
        "ingestion slowed: {crowded:?} against {alone:?} without the clients (bound {bound:?})"
    );
    assert!(
        rss_after < rss_before + IDLE_CLIENTS_RSS_BOUND_KIB,
        "RSS grew from {rss_before} KiB to {rss_after} KiB with {IDLE_CLIENTS} idle clients"
    );
    watch.stop();
}
