//! Ctrl-C or SIGTERM during a replay stops it like watch: what is complete is committed, the
//! summary is printed, the exit code is not 0, and running it again finishes the job.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::{current_versions, exoflow, run_ok, s, stats_current, write};

fn interrupted_replay_commits_what_it_read(signal: i32) {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, lake, clean) = (
        tmp.path().join("tree"),
        tmp.path().join("lake"),
        tmp.path().join("clean"),
    );
    for i in 0..20_000 {
        write(
            &tree,
            &format!("d{}/f{i}.txt", i % 50),
            format!("TODO {i}\n"),
        );
    }
    // A first snapshot of part of the tree, so that an interrupted second one has paths it
    // could wrongly delete.
    let first = tmp.path().join("first");
    for i in 0..100 {
        write(&first, &format!("d{}/f{i}.txt", i % 50), "old\n");
    }
    write(&first, "only-in-first.txt", "x\n");
    run_ok(&["replay", s(&first), "--out", s(&lake), "--source", "t"]);
    let child = exoflow()
        .args(["replay", s(&tree), "--out", s(&lake), "--source", "t"])
        .args(["--workers", "2", "--commit-interval", "100ms"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stop it once it holds the lake (its signal handlers are in place): the walk is starting.
    let started = Instant::now();
    let lock = lake.join("_exoflow/lock");
    let pid = child.id().to_string();
    let holds_lake = || std::fs::read_to_string(&lock).is_ok_and(|text| text == pid);
    while !holds_lake() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing committed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    unsafe { libc::kill(child.id() as i32, signal) };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stdout}{stderr}");
    assert!(
        stdout.contains("replayed 1 snapshot") && stdout.contains("interrupted"),
        "{stdout}"
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    let current = current_versions(&lake);
    assert!(
        current.len() < 30_001,
        "the run stopped part way: {}",
        current.len()
    );
    assert!(
        current.keys().any(|p| p.contains("only-in-first")),
        "an incomplete snapshot deletes nothing: {stdout}"
    );
    // Running it again finishes: the same current state as one uninterrupted pair of runs.
    run_ok(&["replay", s(&tree), "--out", s(&lake), "--source", "t"]);
    run_ok(&["replay", s(&first), "--out", s(&clean), "--source", "t"]);
    run_ok(&["replay", s(&tree), "--out", s(&clean), "--source", "t"]);
    assert_eq!(current_versions(&lake), current_versions(&clean));
    assert_eq!(stats_current(&lake), stats_current(&clean));
}

#[test]
fn ctrl_c_during_a_replay_commits_what_is_complete_and_exits_130() {
    interrupted_replay_commits_what_it_read(libc::SIGINT);
}
