//! Several processes, one dataflow, on loopback: each process reads its own directory into one
//! lake, which must equal the lake of one process over the same directories; a lost process
//! stops the others, and a restart of all continues exactly; a process that runs something else
//! than its peers is refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{
    FileSizeLimit, current_versions_by_source, exoflow, history_problems, run_ok, s, stats_current,
    write,
};

const DEDUPE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/dedupe.json");

/// A small tree: code with rule matches, a text shared by every tree (exact duplicates across
/// processes), and long near-duplicate files.
fn corpus(dir: &Path, seed: usize, files: usize) {
    let long: String = (0..120)
        .map(|i| format!("line {i} of a long file\n"))
        .collect();
    for i in 0..files {
        let content = match i % 4 {
            0 => format!("// TODO({seed}) item {i}\nfn f{i}() -> u32 {{ {i} }}\n"),
            1 => format!("# FIXME {}\nprint({seed} * {i})\n", i % 3),
            2 => "Copyright 2024 The Authors\nSPDX-License-Identifier: MIT\n".to_string(),
            _ => long.replace(&format!("line {} ", i % 100), &format!("line {seed}x{i} ")),
        };
        let ext = ["rs", "py", "txt", "md"][i % 4];
        write(dir, &format!("sub{}/f{i}.{ext}", i % 3), content);
    }
}

/// `n` trees `DIR/{prefix}0` … of `files` files each.
fn corpora(dir: &Path, prefix: &str, n: usize, files: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let tree = dir.join(format!("{prefix}{i}"));
            corpus(&tree, i, files);
            tree
        })
        .collect()
}

/// Waits at most `limit` for process `i`, which must exit with `code` and say `says`.
fn expect_exit(i: usize, child: Child, limit: Duration, code: i32, says: &str) -> String {
    let out = wait_within(child, limit)
        .unwrap_or_else(|| panic!("process {i} still runs after {limit:?}"));
    let said = text(&out);
    assert_eq!(out.status.code(), Some(code), "process {i}: {said}");
    assert!(said.contains(says), "process {i}: {said}");
    said
}

/// A hostfile of `processes` free loopback ports.
fn hostfile(dir: &Path, processes: usize) -> PathBuf {
    let listeners: Vec<std::net::TcpListener> = (0..processes)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let text: String = listeners
        .iter()
        .map(|l| format!("{}\n", l.local_addr().unwrap()))
        .collect();
    let path = dir.join(format!("hosts-{}.txt", rand_suffix()));
    std::fs::write(&path, text).unwrap();
    path
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Starts process `process` of the cluster of `hosts` with `args`.
fn start(hosts: &Path, processes: usize, process: usize, args: &[&str]) -> Child {
    exoflow()
        .args(args)
        .args(["--processes", &processes.to_string()])
        .args(["--process", &process.to_string(), "--hostfile", s(hosts)])
        .args(["--connect-timeout", "30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("exoflow starts")
}

/// Waits for `child` at most `limit`; None if it is still running (it is killed then).
fn wait_within(mut child: Child, limit: Duration) -> Option<Output> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs one process per entry of `runs` (its arguments) and waits for all; each must succeed.
fn run_cluster(tmp: &Path, runs: &[Vec<String>]) -> Vec<String> {
    let hosts = hostfile(tmp, runs.len());
    let children: Vec<Child> = runs
        .iter()
        .enumerate()
        .map(|(i, args)| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            start(&hosts, runs.len(), i, &args)
        })
        .collect();
    children
        .into_iter()
        .enumerate()
        .map(|(i, child)| expect_exit(i, child, Duration::from_secs(120), 0, ""))
        .collect()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

/// The two lakes hold the same current versions and the same statistics.
fn assert_same_lake(lake: &Path, reference: &Path) {
    let (ours, theirs) = (
        current_versions_by_source(lake),
        current_versions_by_source(reference),
    );
    assert!(!ours.is_empty());
    assert_eq!(ours, theirs, "current versions differ");
    assert_eq!(
        stats_current(lake),
        stats_current(reference),
        "stats_current differ"
    );
    assert_eq!(history_problems(lake), Vec::<String>::new());
}

/// `lake` equals one process's replays of `dirs` with the default pipeline, into a lake in `tmp`.
fn assert_same_as_replays(lake: &Path, dirs: &[PathBuf], tmp: &Path) {
    let reference = tmp.join("reference");
    replay_alone(dirs, &reference, None);
    assert_same_lake(lake, &reference);
}

/// One process replays each directory in turn into `lake`: the reference.
fn replay_alone(dirs: &[PathBuf], lake: &Path, pipeline: Option<&str>) {
    for dir in dirs {
        let mut list = vec!["replay", s(dir), "--out", s(lake), "--workers", "2"];
        if let Some(pipeline) = pipeline {
            list.extend(["--pipeline", pipeline]);
        }
        run_ok(&list);
    }
}

#[test]
fn replays_on_two_and_three_processes_equal_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = corpora(tmp.path(), "d", 3, 40);
    for (processes, workers) in [(2, "2"), (3, "1")] {
        let lake = tmp.path().join(format!("lake{processes}"));
        let reference = tmp.path().join(format!("reference{processes}"));
        replay_alone(&dirs[..processes], &reference, Some(DEDUPE));
        let runs: Vec<Vec<String>> = dirs[..processes]
            .iter()
            .map(|dir| {
                args(&[
                    "replay",
                    s(dir),
                    "--out",
                    s(&lake),
                    "--workers",
                    workers,
                    "--pipeline",
                    DEDUPE,
                ])
            })
            .collect();
        let summaries = run_cluster(tmp.path(), &runs);
        assert!(
            summaries[1].contains("process 1 of a cluster of"),
            "{}",
            summaries[1]
        );
        assert_same_lake(&lake, &reference);
        if processes == 3 {
            // Changes, and a restart: the cluster continues from the lake's state, which the
            // first process restores and sends to each path's owner.
            write(&dirs[1], "sub0/f0.rs", "// TODO changed\n");
            std::fs::remove_file(dirs[1].join("sub1/f1.py")).unwrap();
            write(&dirs[2], "new/added.py", "# HACK added\n");
            replay_alone(&dirs[1..], &reference, Some(DEDUPE));
            let restarted = run_cluster(tmp.path(), &runs);
            assert!(
                restarted[0].contains("continued from the lake's committed state"),
                "{}",
                restarted[0]
            );
            assert_same_lake(&lake, &reference);
        }
    }
}

/// Starts a watch of `dir` as process `process`.
fn watch(hosts: &Path, processes: usize, process: usize, dir: &Path, lake: &Path) -> Child {
    start(
        hosts,
        processes,
        process,
        &[
            "watch",
            s(dir),
            "--out",
            s(lake),
            "--workers",
            "1",
            "--commit-interval",
            "200ms",
        ],
    )
}

/// A cluster of watches, one per directory, past its initial scans.
fn watch_all(tmp: &Path, dirs: &[PathBuf], lake: &Path) -> Vec<Child> {
    let hosts = hostfile(tmp, dirs.len());
    let children = (dirs.iter().enumerate())
        .map(|(i, dir)| watch(&hosts, dirs.len(), i, dir, lake))
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    children
}

/// SIGTERM to each, and each must stop with success.
fn stop_all(children: Vec<Child>) -> Vec<String> {
    for child in &children {
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    children
        .into_iter()
        .enumerate()
        .map(|(i, child)| expect_exit(i, child, Duration::from_secs(60), 0, ""))
        .collect()
}

fn change(dir: &Path, round: usize) {
    write(dir, "sub0/f0.rs", format!("// TODO round {round}\n"));
    write(
        dir,
        &format!("added/r{round}.py"),
        format!("# XXX {round}\n"),
    );
    let _ = std::fs::remove_file(dir.join(format!("sub{}/f{}.py", 1, 1 + 4 * round)));
}

#[test]
fn watches_on_two_processes_end_like_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = corpora(tmp.path(), "w", 2, 24);
    let lake = tmp.path().join("lake");
    let children = watch_all(tmp.path(), &dirs, &lake);
    for round in 0..3 {
        // Only one process's directory changes in the first round: the other is quiet, and
        // its epochs must follow, or nothing would be committed until it had changes too.
        change(&dirs[0], round);
        if round == 0 {
            let started = Instant::now();
            let committed = |lake: &Path| {
                let current = current_versions_by_source(lake);
                current
                    .get("\"w0\" \"sub0/f0.rs\"")
                    .is_some_and(|v| v.starts_with("size=16 "))
            };
            while !committed(&lake) {
                assert!(
                    started.elapsed() < Duration::from_secs(15),
                    "a change of one process is not committed while the other is quiet: {:?}",
                    current_versions_by_source(&lake).get("\"w0\" \"sub0/f0.rs\"")
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        } else {
            change(&dirs[1], round);
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    std::thread::sleep(Duration::from_secs(1));
    stop_all(children);
    assert_same_as_replays(&lake, &dirs, tmp.path());
}

#[test]
fn a_killed_process_stops_the_others_and_a_restart_of_all_continues_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = corpora(tmp.path(), "k", 3, 24);
    let lake = tmp.path().join("lake");
    let mut children = watch_all(tmp.path(), &dirs, &lake);
    for dir in &dirs {
        change(dir, 0);
    }
    std::thread::sleep(Duration::from_millis(300));
    let victim = children.remove(1);
    unsafe { libc::kill(victim.id() as i32, libc::SIGKILL) };
    let killed = Instant::now();
    let _ = wait_within(victim, Duration::from_secs(10));
    for (i, child) in [0, 2].into_iter().zip(children) {
        expect_exit(i, child, Duration::from_secs(30), 1, "lost process 1 (");
        println!(
            "process {i} exited 1 after {:.2} s",
            killed.elapsed().as_secs_f64()
        );
    }
    // More changes while nothing runs, then all three again.
    for dir in &dirs {
        change(dir, 1);
    }
    let children = watch_all(tmp.path(), &dirs, &lake);
    stop_all(children);
    assert_same_as_replays(&lake, &dirs, tmp.path());
}

#[test]
fn a_process_unlike_its_peers_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    corpus(&a, 0, 4);
    corpus(&b, 1, 4);
    let same_name = tmp.path().join("other").join("a");
    corpus(&same_name, 2, 4);
    let lake = tmp.path().join("lake");
    let replay = |dir: &Path, workers: &str, extra: &[&str]| {
        let mut list = vec!["replay", s(dir), "--out", s(&lake), "--workers", workers];
        list.extend_from_slice(extra);
        args(&list)
    };
    let elsewhere = tmp.path().join("another-lake");
    let cases: [(Vec<String>, Vec<String>, &str); 4] = [
        (
            replay(&a, "1", &[]),
            args(&["replay", s(&b), "--out", s(&elsewhere), "--workers", "1"]),
            "does not see the lake this process sees",
        ),
        (
            replay(&a, "1", &[]),
            replay(&b, "1", &["--pipeline", DEDUPE]),
            "runs another pipeline",
        ),
        (
            replay(&a, "1", &[]),
            replay(&same_name, "1", &[]),
            "source name \"a\"",
        ),
        (
            replay(&a, "1", &[]),
            replay(&b, "2", &[]),
            "workers; this process runs",
        ),
    ];
    for (first, second, says) in cases {
        let hosts = hostfile(tmp.path(), 2);
        let children = [(0, &first), (1, &second)].map(|(i, run)| {
            let run: Vec<&str> = run.iter().map(String::as_str).collect();
            start(&hosts, 2, i, &run)
        });
        for (i, child) in children.into_iter().enumerate() {
            expect_exit(i, child, Duration::from_secs(30), 2, says);
        }
    }
    // A hostfile that names another cluster: both refuse at once.
    let hosts = hostfile(tmp.path(), 2);
    let other = tmp.path().join("other-hosts.txt");
    let mut lines = std::fs::read_to_string(&hosts).unwrap();
    lines.push_str("127.0.0.1:1\n");
    std::fs::write(&other, lines).unwrap();
    let run: Vec<&str> = first_args(&a, &lake);
    let p0 = start(&hosts, 2, 0, &run);
    let p1 = exoflow()
        .args(&run)
        .args([
            "--processes",
            "3",
            "--process",
            "1",
            "--hostfile",
            s(&other),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for (i, child) in [p0, p1].into_iter().enumerate() {
        expect_exit(i, child, Duration::from_secs(30), 2, "has another hostfile");
    }
    assert!(
        !lake.join("stats_current.parquet").exists(),
        "a refused cluster writes nothing"
    );
}

fn first_args<'a>(dir: &'a Path, lake: &'a Path) -> Vec<&'a str> {
    vec!["replay", s(dir), "--out", s(lake), "--workers", "1"]
}

#[test]
fn a_peers_replay_of_several_snapshots_resumes_after_what_was_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b1, b2) = (
        tmp.path().join("a"),
        tmp.path().join("b1"),
        tmp.path().join("b2"),
    );
    corpus(&a, 0, 12);
    corpus(&b1, 1, 12);
    corpus(&b2, 1, 12);
    write(&b2, "sub0/f0.rs", "// TODO second snapshot\n");
    std::fs::remove_file(b2.join("sub1/f1.py")).unwrap();
    let lake = tmp.path().join("lake");
    let runs = [
        args(&["replay", s(&a), "--out", s(&lake), "--workers", "1"]),
        args(&[
            "replay",
            s(&b1),
            s(&b2),
            "--source",
            "b",
            "--out",
            s(&lake),
            "--workers",
            "1",
        ]),
    ];
    let first = run_cluster(tmp.path(), &runs);
    assert!(first[1].contains("replayed 2 snapshots"), "{}", first[1]);
    // Run again: the commit records hold process 1's progress too.
    let again = run_cluster(tmp.path(), &runs);
    assert!(
        again[1].contains("resumed after snapshot 1"),
        "{}",
        again[1]
    );
    let reference = tmp.path().join("reference");
    run_ok(&["replay", s(&a), "--out", s(&reference)]);
    run_ok(&[
        "replay",
        s(&b1),
        s(&b2),
        "--source",
        "b",
        "--out",
        s(&reference),
    ]);
    assert_same_lake(&lake, &reference);
}

#[test]
fn a_write_failure_on_one_process_stops_every_process_and_a_restart_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = corpora(tmp.path(), "f", 2, 16);
    let lake = tmp.path().join("lake");
    let hosts = hostfile(tmp.path(), 2);
    let run = |i: usize| {
        let mut command = exoflow();
        command
            .args(["replay", s(&dirs[i]), "--out", s(&lake), "--workers", "1"])
            .args(["--processes", "2", "--process", &i.to_string()])
            .args(["--hostfile", s(&hosts)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    };
    let first = run(0).spawn().unwrap();
    // Process 1 cannot write a part file larger than 200 bytes.
    let second = run(1).with_file_size_limit(200).spawn().unwrap();
    let started = Instant::now();
    for (i, child, says) in [
        (1, second, "error: lake write failed"),
        (0, first, "lost process 1 ("),
    ] {
        expect_exit(i, child, Duration::from_secs(30), 1, says);
    }
    println!(
        "both exited within {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let runs: Vec<Vec<String>> = (0..2)
        .map(|i| args(&["replay", s(&dirs[i]), "--out", s(&lake), "--workers", "1"]))
        .collect();
    run_cluster(tmp.path(), &runs);
    assert_same_as_replays(&lake, &dirs, tmp.path());
}

#[test]
fn ctrl_c_while_waiting_for_the_peers_stops_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    corpus(&dir, 0, 2);
    let lake = tmp.path().join("lake");
    let hosts = hostfile(tmp.path(), 2);
    let child = start(
        &hosts,
        2,
        0,
        &["replay", s(&dir), "--out", s(&lake), "--workers", "1"],
    );
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let says = "interrupted while waiting for the cluster's other processes";
    expect_exit(0, child, Duration::from_secs(5), 130, says);
}
