//! The live service through a real HTTP client against a real `exoflow watch --http`: the REST
//! answers equal `stats_current.parquet`, the change stream sums to them, the metrics parse.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Watching, exoflow, python, s, stats_current, write};

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

/// The status and body of a GET.
pub fn get(base: &str, path: &str) -> (u16, String) {
    let mut response = agent().get(format!("{base}{path}")).call().unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

/// Polls `check` every 50 ms for up to 20 s; panics with the last value when it never holds.
pub fn eventually<T: std::fmt::Debug>(
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if started.elapsed() > Duration::from_secs(20) => {
                panic!("{what} never held; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A watch with a server, once `/healthz` answers.
/// A watch serving on a free port, once it is ready (the live statistics are 503 before).
pub fn serve(dir: &std::path::Path, lake: &std::path::Path, extra: &[&str]) -> (Watching, String) {
    let (watch, base) = Watching::serving(dir, lake, extra);
    eventually("/readyz answers 200", || {
        let response = agent().get(format!("{base}/readyz")).call();
        let status = response.map_err(|e| e.to_string())?.status().as_u16();
        (status == 200)
            .then_some(())
            .ok_or(format!("/readyz answered {status}"))
    });
    (watch, base)
}

/// Rows as `stats_current` prints them: `dimension key rule metric value`.
pub fn printed(rows: &Value) -> Vec<String> {
    let mut printed: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let rule = r["rule"].as_str().unwrap_or("null");
            format!(
                "{} {} {} {} {}",
                r["dimension"].as_str().unwrap(),
                r["key"].as_str().unwrap(),
                rule,
                r["metric"].as_str().unwrap(),
                r["value"].as_i64().unwrap()
            )
        })
        .collect();
    printed.sort();
    printed
}

pub fn stats(base: &str, query: &str) -> Value {
    let (status, body) = get(base, &format!("/api/v1/stats{query}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

pub fn files_total(stats: &Value) -> i64 {
    total(stats, "files")
}

pub fn total(stats: &Value, metric: &str) -> i64 {
    stats["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dimension"] == "total" && r["metric"] == metric)
        .map_or(0, |r| r["value"].as_i64().unwrap())
}

/// A consumer of `/api/v1/stats/stream`: each event's name and parsed data, on a thread.
pub fn subscribe(base: &str) -> mpsc::Receiver<(String, Option<String>, Value)> {
    subscribe_to(base, "/api/v1/stats/stream", None)
}

/// The epoch of a stream event id `EPOCH-RUN`, checking that it has both parts.
pub fn epoch_of(id: &str) -> u64 {
    let (epoch, run) = id
        .split_once('-')
        .unwrap_or_else(|| panic!("{id} is not EPOCH-RUN"));
    assert_eq!(run.len(), 8, "{id}: the run id is 8 hex digits");
    assert!(run.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    epoch.parse().unwrap()
}

/// A consumer of `path`, sending `Last-Event-ID` when given one.
pub fn subscribe_to(
    base: &str,
    path: &str,
    last_event_id: Option<&str>,
) -> mpsc::Receiver<(String, Option<String>, Value)> {
    let mut request = ureq::Agent::config_builder()
        .build()
        .new_agent()
        .get(format!("{base}{path}"));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let (sender, events) = mpsc::channel();
    std::thread::spawn(move || {
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        let (mut event, mut id, mut data) = (String::new(), None, String::new());
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if line.is_empty() {
                if !data.is_empty() {
                    let value = serde_json::from_str(&data).unwrap();
                    if sender.send((event.clone(), id.take(), value)).is_err() {
                        return;
                    }
                }
                (event, data) = (String::new(), String::new());
            } else if let Some(name) = line.strip_prefix("event: ") {
                event = name.to_string();
            } else if let Some(value) = line.strip_prefix("id: ") {
                id = Some(value.to_string());
            } else if let Some(text) = line.strip_prefix("data: ") {
                data.push_str(text);
            }
        }
    });
    events
}

/// Statistics summed from a stream, by (dimension, key, rule, metric).
pub type Summed = BTreeMap<[String; 4], i64>;

pub fn add(summed: &mut Summed, rows: &Value) {
    for r in rows.as_array().unwrap() {
        let key = ["dimension", "key", "rule", "metric"]
            .map(|f| r[f].as_str().unwrap_or("null").to_string());
        *summed.entry(key).or_default() += r["value"].as_i64().unwrap();
    }
    summed.retain(|_, v| *v != 0);
}

#[test]
fn api_stats_equal_stats_current_and_the_stream_sums_to_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("dir"), tmp.path().join("lake"));
    std::fs::create_dir(&dir).unwrap();
    let (watch, base) = serve(&dir, &lake, &[]);
    let stream = subscribe(&base);
    let (event, _, snapshot) = stream.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(event, "snapshot");
    let mut summed = Summed::new();
    add(&mut summed, &snapshot["rows"]);

    write(&dir, "a.rs", "fn main() { println!(\"TODO\"); }\n");
    write(&dir, "b.py", "print('hello')\n# TODO\n");
    eventually("two files in /api/v1/stats", || {
        let now = stats(&base, "");
        (files_total(&now) == 2)
            .then_some(())
            .ok_or(now.to_string())
    });
    write(&dir, "b.py", "print('bye')\n");
    write(&dir, "c.txt", "plain\n");
    std::os::unix::fs::symlink(dir.join("c.txt"), dir.join("link")).unwrap();
    std::fs::remove_file(dir.join("a.rs")).unwrap();

    // After a commit that nothing follows, the API answers what the lake holds. Only the final
    // tree (b.py and c.txt) has 2 files of 19 bytes, so no state on the way is taken for it.
    eventually("/api/v1/stats equal to stats_current.parquet", || {
        let now = stats(&base, "");
        let rows = printed(&now["rows"]);
        let settled = files_total(&now) == 2
            && total(&now, "bytes") == 19
            && now["epoch"] == now["committed_epoch"]
            && lake.join("stats_current.parquet").exists()
            && rows == stats_current(&lake);
        settled.then_some(()).ok_or(now.to_string())
    });
    assert_eq!(get(&base, "/readyz").0, 200);

    // The stream's snapshot plus its diffs end where /api/v1/stats is (read again each time: an
    // event that comes late, a rescan's say, may still change a statistic after `settled`).
    let mut last_id = 0u64;
    eventually("the stream's sum equal to /api/v1/stats", || {
        while let Ok((event, id, data)) = stream.try_recv() {
            assert_eq!(event, "diff", "{data}");
            let id = epoch_of(&id.unwrap());
            assert!(id > last_id, "event ids grow: {id} after {last_id}");
            assert_eq!(data["epoch"].as_u64(), Some(id));
            last_id = id;
            add(&mut summed, &data["rows"]);
        }
        let got: Vec<String> = (summed.iter())
            .map(|([d, k, r, m], v)| format!("{d} {k} {r} {m} {v}"))
            .collect();
        let want = printed(&stats(&base, "")["rows"]);
        (got == want)
            .then_some(())
            .ok_or(format!("{got:?}, want {want:?}"))
    });

    // Filters select rows; an unknown dimension or metric is a 400 with a JSON error.
    let totals = stats(&base, "?dimension=total&metric=files");
    assert_eq!(totals["rows"].as_array().unwrap().len(), 1, "{totals}");
    for query in ["?dimension=nope", "?metric=nope", "?colour=red"] {
        let (status, body) = get(&base, &format!("/api/v1/stats{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert!(error["error"].is_string(), "{body}");
    }
    let (status, body) = get(&base, "/api/v2/nothing");
    assert_eq!(status, 404);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
    let long = format!("/api/v1/stats?key={}", "k".repeat(5000));
    assert_eq!(get(&base, &long).0, 414);

    // The metrics: files and bytes read, epochs, requests by route and status.
    let (status, text) = get(&base, "/metrics");
    assert_eq!(status, 200);
    let sample = |name: &str| -> f64 {
        let line = (text.lines())
            .find(|l| l.split([' ', '{']).next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(sample("exoflow_files_total") >= 2.0, "{text}");
    assert!(sample("exoflow_bytes_total") > 0.0, "{text}");
    assert!(sample("exoflow_committed_epoch") >= 1.0, "{text}");
    assert!(sample("exoflow_epoch") >= sample("exoflow_committed_epoch"));
    assert!(
        text.lines().any(|l| l
            .starts_with("exoflow_http_requests_total{route=\"/api/v1/stats\",status=\"400\"}")),
        "{text}"
    );
    assert!(
        text.contains("# TYPE exoflow_files counter") && text.ends_with("# EOF\n"),
        "{text}"
    );
    // A real client's parser reads it too.
    let exposition = tmp.path().join("metrics.txt");
    std::fs::write(&exposition, &text).unwrap();
    let (parsed, samples) = python("tests/metrics_parse.py", &[s(&exposition)]);
    assert!(parsed, "{samples}");
    for name in ["exoflow_files_total{}", "exoflow_committed_epoch{}"] {
        assert!(
            samples.lines().any(|l| l.starts_with(name)),
            "{name}: {samples}"
        );
    }
    // Events by kind, skipped by reason, rescans, both histograms and the lake's part files, as
    // the parser reads them: 5 upserts (one a skipped symlink) and 1 delete were written, every
    // epoch committed at least once.
    let parsed = |name: &str| -> f64 {
        let line = (samples.lines())
            .find(|l| l.split(' ').next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing in\n{samples}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(
        parsed("exoflow_events_total{kind=\"upsert\"}") >= 5.0,
        "{samples}"
    );
    assert!(
        parsed("exoflow_events_total{kind=\"delete\"}") >= 1.0,
        "{samples}"
    );
    assert_eq!(
        parsed("exoflow_skipped_total{reason=\"symlink\"}"),
        1.0,
        "{samples}"
    );
    for reason in ["not_regular", "too_large", "vanished", "unreadable"] {
        let name = format!("exoflow_skipped_total{{reason=\"{reason}\"}}");
        assert_eq!(parsed(&name), 0.0, "{samples}");
    }
    assert_eq!(parsed("exoflow_rescans_total{}"), 0.0, "{samples}");
    for histogram in [
        "exoflow_event_to_stats_latency_seconds",
        "exoflow_commit_duration_seconds",
    ] {
        let count = parsed(&format!("{histogram}_count{{}}"));
        assert!(count >= 1.0, "{histogram}: {samples}");
        let sum = parsed(&format!("{histogram}_sum{{}}"));
        assert!(sum > 0.0 && sum < 60.0 * count, "{histogram}: {samples}");
        assert_eq!(parsed(&format!("{histogram}_bucket{{le=\"+Inf\"}}")), count);
    }
    assert!(
        parsed("exoflow_lake_part_files{table=\"files\"}") >= 1.0,
        "{samples}"
    );
    assert!(parsed("exoflow_lake_bytes{}") > 0.0, "{samples}");
    // Files read counts each upsert taken (read, or a skipped symlink) and no delete: here every
    // upsert was written.
    assert_eq!(
        parsed("exoflow_files_total{}"),
        parsed("exoflow_events_total{kind=\"upsert\"}"),
        "{samples}"
    );
    for kind in [
        "unreadable",
        "vanished",
        "watch",
        "lake_write",
        "commit",
        "compaction",
    ] {
        let name = format!("exoflow_errors_total{{kind=\"{kind}\"}}");
        assert_eq!(parsed(&name), 0.0, "{samples}");
    }
    // Settled: nothing waits in the queues.
    assert_eq!(parsed("exoflow_event_queue_depth{}"), 0.0, "{samples}");
    assert_eq!(parsed("exoflow_events_in_flight{}"), 0.0, "{samples}");
    // The requests this test made, timed by route.
    let stats_route = "route=\"/api/v1/stats\"";
    let requests = parsed(&format!(
        "exoflow_http_request_duration_seconds_count{{{stats_route}}}"
    ));
    assert!(requests >= 5.0, "{samples}");
    assert_eq!(
        parsed(&format!(
            "exoflow_http_request_duration_seconds_bucket{{le=\"+Inf\",{stats_route}}}"
        )),
        requests
    );
    let seconds = parsed(&format!(
        "exoflow_http_request_duration_seconds_sum{{{stats_route}}}"
    ));
    assert!(seconds > 0.0 && seconds < requests * 5.0, "{samples}");
    watch.stop();
}

#[test]
fn api_readyz_turns_200_once_the_initial_scan_is_processed_even_of_an_empty_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("dir"), tmp.path().join("lake"));
    std::fs::create_dir(&dir).unwrap();
    let (watch, base) = serve(&dir, &lake, &[]);
    eventually("/readyz is 200", || {
        let (status, body) = get(&base, "/readyz");
        (status == 200)
            .then_some(())
            .ok_or(format!("{status} {body}"))
    });
    assert_eq!(get(&base, "/healthz").0, 200);
    watch.stop();
}

#[test]
fn api_a_restarted_watch_serves_the_restored_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("dir"), tmp.path().join("lake"));
    std::fs::create_dir(&dir).unwrap();
    write(&dir, "a.rs", "// TODO one\n");
    write(&dir, "b.md", "# notes\n");
    let (watch, base) = serve(&dir, &lake, &[]);
    eventually("two files in /api/v1/stats", || {
        let now = stats(&base, "");
        (files_total(&now) == 2)
            .then_some(())
            .ok_or(now.to_string())
    });
    watch.stop();
    let committed = stats_current(&lake);
    let (watch, base) = serve(&dir, &lake, &[]);
    let ready = eventually("the restarted watch ready", || {
        let (status, body) = get(&base, "/readyz");
        let now = stats(&base, "");
        (status == 200)
            .then_some(now)
            .ok_or(format!("{status} {body}"))
    });
    assert_eq!(printed(&ready["rows"]), committed);
    let stream = subscribe(&base);
    let (event, _, snapshot) = stream.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(event, "snapshot");
    assert_eq!(printed(&snapshot["rows"]), committed);
    let rules = stats(&base, "?dimension=rule&metric=files");
    let rows = rules["rows"].as_array().unwrap();
    assert!(
        rows.iter()
            .all(|r| r["dimension"] == "rule" && r["rule"].is_string()),
        "{rules}"
    );
    if let Some(rule) = rows.first().and_then(|r| r["rule"].as_str()) {
        let one = stats(&base, &format!("?dimension=rule&metric=files&rule={rule}"));
        assert_eq!(one["rows"].as_array().unwrap().len(), 1, "{one}");
    }
    watch.stop();
}

#[test]
fn api_a_non_loopback_bind_without_a_token_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dir");
    std::fs::create_dir(&dir).unwrap();
    let lake = tmp.path().join("lake");
    let out = exoflow()
        .args(["watch", s(&dir), "--out", s(&lake), "--http", "0.0.0.0:0"])
        .env_remove("EXOFLOW_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("without a token"), "{stderr}");
    assert!(!lake.exists(), "nothing was done");
}

#[test]
fn api_tokens_guard_everything_but_the_health_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("dir"), tmp.path().join("lake"));
    std::fs::create_dir(&dir).unwrap();
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, "ops:right-token\n").unwrap();
    let (watch, base) = serve(&dir, &lake, &["--token-file", s(&tokens)]);
    let with = |token: Option<&str>| {
        let mut request = agent().get(format!("{base}/api/v1/stats"));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        request.call().unwrap().status().as_u16()
    };
    assert_eq!(with(None), 401);
    assert_eq!(with(Some("wrong-token")), 401);
    assert_eq!(with(Some("right-token")), 200);
    assert_eq!(get(&base, "/healthz").0, 200);
    assert_ne!(get(&base, "/readyz").0, 401);
    watch.stop();
}

/// Reads diff events into `summed` until it equals `/api/v1/stats` with `files` files; returns
/// the last event id seen (or `last`), as sent.
pub fn sum_until_settled(
    base: &str,
    stream: &mpsc::Receiver<(String, Option<String>, Value)>,
    summed: &mut Summed,
    files: i64,
    last: &str,
) -> String {
    let mut last = last.to_string();
    eventually("the stream's sum equal to /api/v1/stats", || {
        while let Ok((event, id, data)) = stream.try_recv() {
            assert_eq!(event, "diff", "{data}");
            let id = id.unwrap();
            assert!(
                epoch_of(&id) > epoch_of(&last),
                "event ids grow: {id} after {last}"
            );
            assert_eq!(data["epoch"].as_u64(), Some(epoch_of(&id)));
            last = id;
            add(summed, &data["rows"]);
        }
        let now = stats(base, "");
        let got: Vec<String> = (summed.iter())
            .map(|([d, k, r, m], v)| format!("{d} {k} {r} {m} {v}"))
            .collect();
        (files_total(&now) == files && got == printed(&now["rows"]))
            .then_some(())
            .ok_or(format!("{got:?} against {now}"))
    });
    last
}

#[test]
fn api_a_resumed_stream_misses_nothing_and_counts_nothing_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("dir"), tmp.path().join("lake"));
    std::fs::create_dir(&dir).unwrap();
    let (watch, base) = serve(&dir, &lake, &[]);
    let stream = subscribe(&base);
    let (event, id, snapshot) = stream.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(event, "snapshot");
    let mut summed = Summed::new();
    add(&mut summed, &snapshot["rows"]);
    write(&dir, "a.rs", "// TODO one\n");
    let first = sum_until_settled(&base, &stream, &mut summed, 1, &id.unwrap());
    drop(stream);
    let (at_first, summed_at_first) = (epoch_of(&first), summed.clone());

    // Changes while no client listens; the resumed stream starts with them, without a snapshot.
    write(&dir, "b.py", "# TODO two\nprint(2)\n");
    write(&dir, "a.rs", "// TODO one, changed\n");
    eventually("two files in /api/v1/stats", || {
        let now = stats(&base, "");
        (files_total(&now) == 2)
            .then_some(())
            .ok_or(now.to_string())
    });
    let resumed = subscribe_to(&base, "/api/v1/stats/stream", Some(&first));
    let last = sum_until_settled(&base, &resumed, &mut summed, 2, &first);
    write(&dir, "c.txt", "plain\n");
    sum_until_settled(&base, &resumed, &mut summed, 3, &last);
    drop(resumed);

    // Not an event id, or an epoch of this run still to come: 400. A bare epoch after the last
    // commit: 410, since another run may have sent other changes under it.
    let run = stats(&base, "")["run"].as_str().unwrap().to_string();
    for query in [
        "?since=abc",
        "?since=-1",
        "?since=1-",
        "?since=1-a/b",
        &format!("?since=99999999-{run}"),
    ] {
        let (status, body) = get(&base, &format!("/api/v1/stats/stream{query}"));
        assert_eq!(status, 400, "{query}: {body}");
    }
    let (status, body) = get(&base, "/api/v1/stats/stream?since=99999999");
    assert_eq!(status, 410, "{body}");
    watch.stop();

    // A restarted watch holds no history of the epochs before it: they come from the lake.
    std::fs::remove_file(dir.join("c.txt")).unwrap();
    let (watch, base) = serve(&dir, &lake, &[]);
    eventually("the restarted watch ready", || {
        let (status, body) = get(&base, "/readyz");
        (status == 200)
            .then_some(())
            .ok_or(format!("{status} {body}"))
    });
    let from_lake = subscribe_to(
        &base,
        &format!("/api/v1/stats/stream?since={at_first}"),
        None,
    );
    let mut summed = summed_at_first;
    sum_until_settled(
        &base,
        &from_lake,
        &mut summed,
        2,
        &format!("{at_first}-{run}"),
    );
    watch.stop();
}

#[test]
fn api_after_a_crash_an_uncommitted_event_id_is_gone_and_a_committed_epoch_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("dir"), tmp.path().join("lake"));
    std::fs::create_dir(&dir).unwrap();
    // A first run commits one file and stops cleanly: epoch `committed` is in the lake.
    let (watch, base) = serve(&dir, &lake, &[]);
    write(&dir, "a.rs", "// TODO one\n");
    let at_commit = eventually("one file committed", || {
        let now = stats(&base, "");
        (files_total(&now) == 1 && now["epoch"] == now["committed_epoch"])
            .then_some(now.clone())
            .ok_or(now.to_string())
    });
    watch.stop();
    let first_run = at_commit["run"].as_str().unwrap().to_string();
    let committed = at_commit["committed_epoch"].as_u64().unwrap();
    let mut summed_at_commit = Summed::new();
    add(&mut summed_at_commit, &at_commit["rows"]);

    // A run that commits only once a minute: what it streams stays uncommitted.
    let slow = ["--commit-interval", "60s"];
    let (mut crashed, base) = serve(&dir, &lake, &slow);
    let stream = subscribe(&base);
    let (event, id, snapshot) = stream.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(event, "snapshot");
    let old_run = snapshot["run"].as_str().unwrap().to_string();
    assert_eq!(
        id.as_deref(),
        Some(&*format!("{}-{old_run}", snapshot["epoch"]))
    );
    let mut summed = Summed::new();
    add(&mut summed, &snapshot["rows"]);
    write(&dir, "b.py", "# TODO two\nprint(2)\n");
    write(&dir, "c.txt", "plain\n");
    let old_id = sum_until_settled(&base, &stream, &mut summed, 3, &id.unwrap());
    drop(stream);
    let now = stats(&base, "");
    assert_eq!(now["committed_epoch"].as_u64(), Some(committed), "{now}");
    assert!(epoch_of(&old_id) > committed, "{old_id} after {committed}");
    crashed.kill();

    // The next run on the same lake and port numbers its epochs from the commit again, with
    // other changes in them.
    let addr = base.strip_prefix("http://").unwrap();
    let (watch, base) = Watching::serving_on(&dir, &lake, addr, &slow);
    std::fs::remove_file(dir.join("b.py")).unwrap();
    write(&dir, "d.md", "# notes\nTODO three\n");
    let end = eventually("the next run's statistics", || {
        let now = stats(&base, "");
        let (status, _) = get(&base, "/readyz");
        (status == 200 && files_total(&now) == 3 && total(&now, "bytes") == 12 + 6 + 19)
            .then_some(now.clone())
            .ok_or(now.to_string())
    });
    let run = end["run"].as_str().unwrap().to_string();
    assert_ne!(run, old_run, "each run has its own id");
    assert_eq!(end["committed_epoch"].as_u64(), Some(committed), "{end}");

    // The crashed run's uncommitted id: 410, by header and by `since`, never a wrong resume.
    let resume = |id: &str| {
        let mut response = agent()
            .get(format!("{base}/api/v1/stats/stream"))
            .header("Last-Event-ID", id)
            .call()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    };
    let (status, body) = resume(&old_id);
    assert_eq!(status, 410, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("not committed"),
        "{body}"
    );
    let (status, body) = get(&base, &format!("/api/v1/stats/stream?since={old_id}"));
    assert_eq!(status, 410, "{body}");

    // The crashed run committed nothing: even its ids of the committed epoch are gone, as the
    // lake cannot tell what it sent.
    let (status, body) = resume(&format!("{committed}-{old_run}"));
    assert_eq!(status, 410, "{body}");

    // The committed epoch, as a bare number or as the id of the run that committed it: the
    // diffs after it, summed onto the committed statistics, end at /api/v1/stats.
    for id in [committed.to_string(), format!("{committed}-{first_run}")] {
        let resumed = subscribe_to(&base, "/api/v1/stats/stream", Some(&id));
        let mut summed = summed_at_commit.clone();
        sum_until_settled(
            &base,
            &resumed,
            &mut summed,
            3,
            &format!("{committed}-{run}"),
        );
        let got: Vec<String> = (summed.iter())
            .map(|([d, k, r, m], v)| format!("{d} {k} {r} {m} {v}"))
            .collect();
        assert_eq!(
            got,
            printed(&stats(&base, "")["rows"]),
            "resumed after {id}"
        );
    }

    // That run stops cleanly, committing past the crashed run's epochs: the crashed run's id
    // is still gone (the lake holds this run's changes under those epochs, not the ones it
    // sent), and the id of this run's last event resumes after a restart.
    let mut files = 3;
    while stats(&base, "")["epoch"].as_u64().unwrap() < epoch_of(&old_id) {
        write(&dir, &format!("more-{files}.txt"), "more\n");
        files += 1;
        eventually("the file in /api/v1/stats", || {
            let now = stats(&base, "");
            (files_total(&now) == files)
                .then_some(())
                .ok_or(now.to_string())
        });
    }
    let last = stats(&base, "");
    watch.stop();
    let last_id = format!("{}-{run}", last["epoch"]);
    let resume = |base: &str, id: &str| {
        let mut response = agent()
            .get(format!("{base}/api/v1/stats/stream"))
            .header("Last-Event-ID", id)
            .call()
            .unwrap();
        (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap(),
        )
    };
    let (watch, base) = serve(&dir, &lake, &slow);
    eventually("the third run ready", || {
        let (status, body) = get(&base, "/readyz");
        (status == 200)
            .then_some(())
            .ok_or(format!("{status} {body}"))
    });
    let now = stats(&base, "");
    assert!(
        now["committed_epoch"].as_u64().unwrap() >= epoch_of(&old_id),
        "{now} commits past {old_id}"
    );
    let (status, body) = resume(&base, &old_id);
    assert_eq!(status, 410, "{body}");
    let resumed = subscribe_to(&base, "/api/v1/stats/stream", Some(&last_id));
    let mut summed = Summed::new();
    add(&mut summed, &last["rows"]);
    write(&dir, "e.txt", "more\n");
    // Settled: the resumed sum equals /api/v1/stats.
    sum_until_settled(&base, &resumed, &mut summed, files + 1, &last_id);
    watch.stop();
}

#[test]
fn api_epochs_list_the_kept_commits_and_rules_their_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("dir"), tmp.path().join("lake"));
    std::fs::create_dir(&dir).unwrap();
    let (watch, base) = serve(&dir, &lake, &[]);
    write(&dir, "a.rs", "// TODO one\n// TODO two\n");
    write(&dir, "b.py", "# TODO three\n# FIXME\n");
    let now = eventually("two files committed", || {
        let now = stats(&base, "");
        (files_total(&now) == 2 && now["epoch"] == now["committed_epoch"])
            .then_some(now.clone())
            .ok_or(now.to_string())
    });

    let (status, body) = get(&base, "/api/v1/rules");
    assert_eq!(status, 200, "{body}");
    let rules: Value = serde_json::from_str(&body).unwrap();
    let rules = rules["rules"].as_array().unwrap();
    let rule = |id: &str| rules.iter().find(|r| r["id"] == id).unwrap().clone();
    let todo = rule("todo");
    assert_eq!(todo["pattern"], "TODO");
    assert_eq!(
        (todo["files"].as_i64(), todo["matches"].as_i64()),
        (Some(2), Some(3))
    );
    assert_eq!(rule("fixme")["files"].as_i64(), Some(1));
    let secret = rule("aws_access_key_id");
    assert_eq!(secret["secret"], true);
    assert!(secret["pattern"].is_null(), "{secret}");
    assert_eq!(secret["files"].as_i64(), Some(0));

    let (status, body) = get(&base, "/api/v1/epochs");
    assert_eq!(status, 200, "{body}");
    let epochs: Value = serde_json::from_str(&body).unwrap();
    let epochs = epochs["epochs"].as_array().unwrap();
    let newest = &epochs[0];
    assert_eq!(newest["epoch"], now["committed_epoch"], "{body}");
    assert!(
        newest["committed_at"].as_str().unwrap().ends_with('Z'),
        "{body}"
    );
    assert!(newest["committed_at_ms"].as_u64().unwrap() > 0);
    assert!(epochs.len() <= 8, "{body}");
    // Every change of the run is in some kept commit's rows (the lake is new, so the oldest
    // record kept is the first one).
    let rows: u64 = (epochs.iter())
        .filter_map(|e| e["stats_changes_rows"].as_u64())
        .sum();
    assert!(rows > 0, "{body}");
    watch.stop();
}

#[test]
fn api_the_audit_log_has_a_line_per_request_and_cors_answers_a_preflight() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("dir"), tmp.path().join("lake"));
    std::fs::create_dir(&dir).unwrap();
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, "ops:right-token\n").unwrap();
    let audit = tmp.path().join("audit.jsonl");
    let origin = "https://ops.example.com";
    let (watch, base) = serve(
        &dir,
        &lake,
        &[
            "--token-file",
            s(&tokens),
            "--audit-log",
            s(&audit),
            "--cors",
            origin,
        ],
    );
    let call = |path: &str, token: Option<&str>| {
        let mut request = agent().get(format!("{base}{path}"));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let mut response = request.call().unwrap();
        let status = response.status().as_u16();
        let origin = (response.headers().get("access-control-allow-origin"))
            .map(|v| v.to_str().unwrap().to_string());
        let body = response.body_mut().read_to_string().unwrap();
        (status, origin, body)
    };
    let (status, _, body) = call("/api/v1/stats?dimension=total", Some("right-token"));
    assert_eq!(status, 200);
    assert_eq!(call("/api/v1/stats", Some("wrong-token")).0, 401);
    assert_eq!(call("/api/v2/nothing", Some("right-token")).0, 404);

    // A preflight from the allowed origin is answered without a token; a GET from it carries
    // the header.
    let preflight = agent()
        .options(format!("{base}/api/v1/stats"))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .call()
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let allowed = |name: &str| {
        (preflight.headers().get(name)).map(|v| v.to_str().unwrap().to_ascii_lowercase())
    };
    assert_eq!(
        allowed("access-control-allow-origin").as_deref(),
        Some(origin)
    );
    assert!(
        allowed("access-control-allow-headers")
            .unwrap()
            .contains("authorization")
    );
    let get_from_origin = agent()
        .get(format!("{base}/api/v1/stats"))
        .header("Origin", origin)
        .header("Authorization", "Bearer right-token")
        .call()
        .unwrap();
    let header = get_from_origin.headers().get("access-control-allow-origin");
    assert_eq!(header.map(|v| v.to_str().unwrap()), Some(origin));

    let lines: Vec<Value> = eventually("the audit log holds the requests", || {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        assert!(!text.contains("right-token"), "never the token: {text}");
        let lines: Vec<Value> = (text.lines())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (lines.len() >= 5).then_some(lines).ok_or(text)
    });
    // The readiness check the test polled first, then this test's requests.
    assert_eq!(lines[0]["route"], "/readyz", "{}", lines[0]);
    let lines: Vec<&Value> = (lines.iter()).filter(|l| l["route"] != "/readyz").collect();
    let first = lines[0];
    assert!(first["time"].as_str().unwrap().ends_with('Z'), "{first}");
    assert!(
        first["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{first}"
    );
    assert_eq!(first["token"], "ops");
    assert_eq!(first["method"], "GET");
    assert_eq!(
        first["route"], "/api/v1/stats",
        "the route, not the path: {first}"
    );
    assert_eq!(first["status"], 200);
    assert!(first["duration_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(first["bytes"].as_u64(), Some(body.len() as u64), "{first}");
    assert_eq!(
        (lines[1]["status"].as_u64(), &lines[1]["token"]),
        (Some(401), &Value::Null)
    );
    assert_eq!(
        (lines[2]["status"].as_u64(), &lines[2]["route"]),
        (Some(404), &Value::Null)
    );
    watch.stop();

    // Without --cors, no CORS header.
    let (watch, base) = serve(&dir, &lake, &[]);
    let response = agent()
        .get(format!("{base}/api/v1/stats"))
        .header("Origin", origin)
        .call()
        .unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    watch.stop();
}
