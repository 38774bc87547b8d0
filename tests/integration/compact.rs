//! `exoflow compact`: the merged parts hold exactly the rows they replace, a reader querying
//! during a compaction sees every row exactly once, and a compaction killed at any moment leaves
//! every table whole.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::util::{exoflow, parts, rows, run, run_ok, s, write};

const TABLES: [&str; 4] = ["files", "file_rules", "matches", "stats_changes"];

/// Writes `count` snapshots of a tree of `files` files under `root`, each file a few lines with
/// two rule matches each, up to `lines` of them. Each snapshot changes a third of the files,
/// deletes one in 17, and brings back those the previous one deleted; unchanged files are hard
/// links to the previous snapshot's, which is quicker to make.
fn snapshots(root: &Path, files: usize, count: usize, lines: usize) -> Vec<PathBuf> {
    let version = |i: usize, k: usize| (k + i % 3) / 3;
    let present = |i: usize, k: usize| k == 0 || i % 17 != k % 17;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for k in 0..count {
        let dir = root.join(format!("snapshot-{k}"));
        for i in (0..files).filter(|&i| present(i, k)) {
            let rel = format!("dir{}/file{i}.{}", i % 25, ["rs", "py", "md"][i % 3]);
            if k > 0 && present(i, k - 1) && version(i, k) == version(i, k - 1) {
                std::fs::create_dir_all(dir.join(&rel).parent().unwrap()).unwrap();
                std::fs::hard_link(dirs[k - 1].join(&rel), dir.join(&rel)).unwrap();
                continue;
            }
            let v = version(i, k);
            let line = format!("let x = {i}; // TODO: check {v}\npassword = \"p{v}\"\n");
            write(&dir, &rel, line.repeat(1 + i % lines));
        }
        dirs.push(dir);
    }
    dirs
}

/// A lake of many small parts: three replay runs (so also several `stats_changes` parts) of
/// `count` snapshots in all, two workers, each snapshot committed on its own, and no background
/// compaction. The second run
/// checkpoints and the third does not, so that merged parts span the checkpoint's epoch.
fn small_parts_lake(
    root: &Path,
    files: usize,
    count: usize,
    lines: usize,
) -> (PathBuf, Vec<PathBuf>) {
    let trees = snapshots(&root.join("trees"), files, count, lines);
    let lake = root.join("lake");
    let (first, rest) = trees.split_at(count / 2);
    let (second, third) = rest.split_at(rest.len() / 2);
    for (run, checkpoint_rows) in [(first, "100000"), (second, "1"), (third, "100000")] {
        let mut args = vec!["replay"];
        args.extend(run.iter().map(|p| s(p)));
        args.extend(["--out", s(&lake), "--source", "tree", "--workers", "2"]);
        args.extend(["--checkpoint-rows", checkpoint_rows, "--no-auto-compact"]);
        run_ok(&args);
    }
    (lake, trees)
}

/// Every table's rows, epochs included, sorted: the multiset compaction must keep.
fn table_rows(lake: &Path) -> BTreeMap<&'static str, Vec<String>> {
    TABLES
        .into_iter()
        .map(|t| (t, rows(lake, t, &[])))
        .collect()
}

fn part_names(lake: &Path) -> BTreeMap<&'static str, Vec<String>> {
    TABLES
        .into_iter()
        .map(|t| {
            let names = parts(lake, t)
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            (t, names)
        })
        .collect()
}

/// Per table, what DuckDB reads: the row count and the sum of the rows' hashes, a fingerprint of
/// the multiset of rows.
const FINGERPRINT_PY: &str = r#"
import sys, duckdb
lake = sys.argv[1]
con = duckdb.connect()
for table in sys.argv[2:]:
    n, h = con.sql(f"SELECT count(*), sum(hash(t)::HUGEINT) FROM read_parquet('{lake}/{table}/*.parquet') t").fetchall()[0]
    print(table, n, h)
"#;

fn duckdb_fingerprint(lake: &Path) -> String {
    let out = Command::new("python3")
        .args(["-c", FINGERPRINT_PY, s(lake)])
        .args(TABLES)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "duckdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn stats_json(lake: &Path) -> String {
    let out = run_ok(&["stats", s(lake), "--json"]);
    String::from_utf8(out.stdout).unwrap()
}

fn staging_dirs(lake: &Path) -> Vec<String> {
    std::fs::read_dir(lake.join("_exoflow"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("staging"))
        .collect()
}

fn head_record(lake: &Path) -> serde_json::Value {
    let dir = lake.join("_exoflow/commits");
    let newest = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    serde_json::from_slice(&std::fs::read(newest).unwrap()).unwrap()
}

/// Copies the directory tree `from` to `to` (files and directories only, as a lake holds).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn compaction_keeps_every_row_and_merges_the_parts() {
    let tmp = tempfile::tempdir().unwrap();
    let (lake, trees) = small_parts_lake(tmp.path(), 300, 8, 4);
    let before_rows = table_rows(&lake);
    let before_duckdb = duckdb_fingerprint(&lake);
    let before_stats = stats_json(&lake);
    let before_parts = part_names(&lake);
    let epoch = head_record(&lake)["epoch"].clone();
    for t in TABLES {
        assert!(before_parts[t].len() >= 2, "{t}: {:?}", before_parts[t]);
    }
    assert!(before_parts["files"].len() >= 16, "{before_parts:?}");

    // One table, in several groups: the others are left alone.
    let out = run_ok(&[
        "compact",
        s(&lake),
        "--table",
        "files",
        "--target-size",
        "20KiB",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}");
    let after_files = part_names(&lake);
    let compacted: Vec<&String> = after_files["files"]
        .iter()
        .filter(|n| n.starts_with("part-compact-"))
        .collect();
    assert!(compacted.len() >= 2, "{after_files:?}");
    assert!(after_files["files"].len() < before_parts["files"].len());
    for t in ["file_rules", "matches", "stats_changes"] {
        assert_eq!(after_files[t], before_parts[t], "{t} was not to be touched");
    }
    assert_eq!(table_rows(&lake), before_rows);

    // Every table, with the default sizes: each becomes one part.
    let out = run_ok(&["compact", s(&lake)]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}");
    assert!(
        text.contains(&format!("files: {} parts", after_files["files"].len()))
            && text.contains("-> 1 part"),
        "{text}"
    );
    let after = part_names(&lake);
    for t in TABLES {
        assert_eq!(after[t].len(), 1, "{t}: {:?}", after[t]);
        assert!(after[t][0].starts_with("part-compact-"), "{:?}", after[t]);
    }
    assert_eq!(table_rows(&lake), before_rows, "rows changed");
    assert_eq!(
        duckdb_fingerprint(&lake),
        before_duckdb,
        "DuckDB reads other rows"
    );
    assert_eq!(stats_json(&lake), before_stats);
    assert!(staging_dirs(&lake).is_empty());
    let head = head_record(&lake);
    assert_eq!(head["action"], "compaction");
    assert_eq!(head["epoch"], epoch, "compaction commits no new epoch");

    // Again: nothing to do, nothing written, not even a commit record.
    let out = run_ok(&["compact", s(&lake)]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("nothing to compact"), "{text}");
    assert_eq!(part_names(&lake), after);
    assert_eq!(head_record(&lake), head);

    // A restart reads the compacted parts, which span the checkpoint's epoch, as its committed
    // state: replaying the last tree again adds nothing.
    let checkpoint = head["checkpoint"]
        .as_u64()
        .expect("the second run checkpointed");
    assert!(checkpoint < epoch.as_u64().unwrap(), "{head}");
    let last = trees.last().unwrap();
    run_ok(&["replay", s(last), "--out", s(&lake), "--source", "tree"]);
    assert_eq!(table_rows(&lake), before_rows);
    let values = |text: &str| {
        let mut rows: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
        for row in &mut rows {
            row.as_object_mut().unwrap().remove("epoch");
        }
        rows
    };
    assert!(
        values(&stats_json(&lake)) == values(&before_stats),
        "the statistics changed"
    );
}

#[test]
fn a_missing_lake_or_a_directory_without_a_log_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let out = run(&["compact", s(&missing)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a directory"));
    assert!(!missing.exists());
    write(tmp.path(), "files/part-0000-1-1-0000.parquet", "not a lake");
    let out = run(&["compact", s(tmp.path())]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no _exoflow/ commit log"));
    assert!(!tmp.path().join("_exoflow").exists(), "nothing was written");
    let out = run(&["compact", s(tmp.path()), "--target-size", "12 parsecs"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Queries two tables in a loop until the stop file appears and prints every answer as JSON.
/// A file that vanished between DuckDB's listing and its opening (an input removed by the swap)
/// counts as a retry; any other error is reported.
const READER_PY: &str = r#"
import json, os, sys, time, duckdb
lake, ready, stop, limit = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
keys = {"files": "source, path, epoch", "file_rules": "source, path, epoch, rule"}
answers, retries, errors = [], 0, []
started = time.time()
while not os.path.exists(stop) and time.time() - started < limit:
    for table, key in keys.items():
        t0 = time.time()
        try:
            # A fresh database per query: nothing cached from an earlier listing.
            con = duckdb.connect()
            n, d = con.sql(f"SELECT count(*), count(DISTINCT ({key})) FROM read_parquet('{lake}/{table}/*.parquet')").fetchall()[0]
            con.close()
            answers.append([table, n, d, t0, time.time()])
        except Exception as e:
            msg = str(e)
            vanished = "No such file or directory" in msg or (
                "No files found that match the pattern" in msg and "*" not in msg)
            if vanished:
                retries += 1
            else:
                errors.append(msg)
    if not os.path.exists(ready):
        open(ready, "w").close()
print(json.dumps({"answers": answers, "retries": retries, "errors": errors}))
"#;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn a_reader_during_compaction_sees_every_row_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (lake, _) = small_parts_lake(tmp.path(), 600, 10, 60);
    let expected: BTreeMap<&str, u64> = ["files", "file_rules"]
        .into_iter()
        .map(|t| (t, rows(&lake, t, &[]).len() as u64))
        .collect();
    let (ready, stop) = (tmp.path().join("ready"), tmp.path().join("stop"));
    let reader = Command::new("python3")
        .args(["-c", READER_PY, s(&lake), s(&ready), s(&stop), "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let waiting = Instant::now();
    while !ready.exists() {
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "the reader never answered"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = unix_now();
    let out = run_ok(&["compact", s(&lake)]);
    let ended = unix_now();
    println!("{}", String::from_utf8_lossy(&out.stdout));
    // A few more queries of the compacted lake, then stop.
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(&stop, "").unwrap();
    let out = reader.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = report["errors"].as_array().unwrap();
    assert!(
        errors.is_empty(),
        "{} queries failed, the first: {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    let answers = report["answers"].as_array().unwrap();
    let mut during = 0;
    for answer in answers {
        let table = answer[0].as_str().unwrap();
        let (n, distinct) = (answer[1].as_u64().unwrap(), answer[2].as_u64().unwrap());
        assert_eq!(
            (n, distinct),
            (expected[table], expected[table]),
            "{table}: a query saw duplicated or missing rows"
        );
        let (t0, t1) = (answer[3].as_f64().unwrap(), answer[4].as_f64().unwrap());
        if t0 < ended && t1 > started {
            during += 1;
        }
    }
    println!(
        "{} answers, {during} while compacting ({:.2} s), {} retries after a vanished file",
        answers.len(),
        ended - started,
        report["retries"]
    );
    assert!(during >= 1, "no query ran during the compaction");
    assert_eq!(part_names(&lake)["files"].len(), 1);
}

#[test]
fn a_compaction_killed_at_any_moment_leaves_every_table_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (pristine, _) = small_parts_lake(tmp.path(), 600, 10, 30);
    let original = table_rows(&pristine);
    let original_stats = stats_json(&pristine);

    // How long an uninterrupted compaction takes, and what it leaves.
    let measured = tmp.path().join("measured");
    copy_dir(&pristine, &measured);
    let started = Instant::now();
    run_ok(&["compact", s(&measured)]);
    let runtime = started.elapsed();
    let compacted = part_names(&measured);
    println!("an uninterrupted compaction takes {runtime:?}");

    // Four kills spread over the merging and the swaps, one in the pause before the old
    // directories are removed.
    let grace = exoflow::sink::compact::LISTING_GRACE;
    let work = runtime.saturating_sub(grace);
    let delays = [0.1, 0.35, 0.6, 0.85]
        .map(|f| work.mul_f64(f))
        .into_iter()
        .chain([work + grace / 2]);
    let mut lake = PathBuf::new();
    for (k, delay) in delays.enumerate() {
        lake = tmp.path().join(format!("killed-{k}"));
        copy_dir(&pristine, &lake);
        let mut child = exoflow()
            .args(["compact", s(&lake)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let swapped: Vec<&str> = TABLES
            .into_iter()
            .filter(|t| {
                parts(&lake, t)
                    .iter()
                    .any(|p| p.to_string_lossy().contains("part-compact-"))
            })
            .collect();
        println!(
            "killed after {delay:?} ({status}): swapped {swapped:?}, left {:?}",
            staging_dirs(&lake)
        );
        // What a reader sees right after the crash, before anything cleans up.
        assert_eq!(table_rows(&lake), original, "kill {k}: rows differ");
        // The next open removes what the crash left; a compaction of nothing writes nothing else.
        let out = run_ok(&["compact", s(&lake), "--min-size", "0"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to compact"));
        assert!(
            staging_dirs(&lake).is_empty(),
            "kill {k}: {:?}",
            staging_dirs(&lake)
        );
        assert_eq!(
            table_rows(&lake),
            original,
            "kill {k}: rows differ after open"
        );
    }

    // A clean compaction of the last killed lake ends where the uninterrupted one did.
    run_ok(&["compact", s(&lake)]);
    assert_eq!(table_rows(&lake), original);
    assert_eq!(stats_json(&lake), original_stats);
    assert!(staging_dirs(&lake).is_empty());
    for t in TABLES {
        assert_eq!(
            part_names(&lake)[t].len(),
            compacted[t].len(),
            "{t}: {:?}",
            part_names(&lake)[t]
        );
    }
}
