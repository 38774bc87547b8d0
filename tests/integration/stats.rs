//! Incremental statistics against a from-scratch computation: random snapshot sequences are replayed,
//! and after every epoch the running sum of `stats_changes` equals the statistics computed here,
//! independently, over that snapshot; `stats_current` equals the last one.

use std::collections::BTreeMap;
use std::path::Path;

use arrow_array::{Array, Int64Array, StringArray, UInt64Array};
use proptest::prelude::*;

use crate::util::*;

/// Rules whose counts the oracle computes with a plain substring scan.
const PIPELINE: &str = r#"{
  "rules": [
    { "id": "todo", "pattern": "TODO" },
    { "id": "fixme", "pattern": "FIXME" },
    { "id": "aa", "pattern": "aa" }
  ]
}"#;

/// (dimension, key, rule, metric) -> value.
type StatMap = BTreeMap<(String, String, Option<String>, String), i64>;

/// A snapshot: path -> content; `None` content is a symlink (a skipped entry).
type Snapshot = BTreeMap<String, Option<Vec<u8>>>;

fn language(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("rs") => "Rust",
        Some("py") => "Python",
        Some("md") => "Markdown",
        _ => "",
    }
}

fn count(hay: &[u8], needle: &[u8]) -> i64 {
    let (mut n, mut at) = (0, 0);
    while at + needle.len() <= hay.len() {
        if &hay[at..at + needle.len()] == needle {
            n += 1;
            at += needle.len();
        } else {
            at += 1;
        }
    }
    n
}

/// The statistics of one snapshot, from scratch.
fn expected(snapshot: &Snapshot) -> StatMap {
    let mut stats = StatMap::new();
    let mut add = |dim: &str, key: &str, rule: Option<&str>, metric: &str, v: i64| {
        *stats
            .entry((
                dim.into(),
                key.into(),
                rule.map(String::from),
                metric.into(),
            ))
            .or_default() += v;
    };
    let mut by_hash: BTreeMap<String, i64> = BTreeMap::new();
    for (path, content) in snapshot {
        let Some(content) = content else {
            add("total", "", None, "skipped", 1);
            continue;
        };
        let size = content.len() as i64;
        let lines =
            count(content, b"\n") + i64::from(!content.is_empty() && !content.ends_with(b"\n"));
        let lang = language(path);
        let dir = path
            .rsplit_once('/')
            .map_or(".", |(d, _)| d.split('/').next().unwrap());
        add("language", lang, None, "files", 1);
        add("language", lang, None, "bytes", size);
        add("language", lang, None, "lines", lines);
        add("total", "", None, "files", 1);
        add("total", "", None, "bytes", size);
        add("total", "", None, "lines", lines);
        for (rule, needle) in [("todo", &b"TODO"[..]), ("fixme", b"FIXME"), ("aa", b"aa")] {
            let n = count(content, needle);
            if n == 0 {
                continue;
            }
            add("total", "", None, "matches", n);
            for (dim, key) in [("rule", ""), ("rule_language", lang), ("rule_dir", dir)] {
                add(dim, key, Some(rule), "files", 1);
                add(dim, key, Some(rule), "matches", n);
            }
        }
        if size > 0 {
            *by_hash
                .entry(hex(&xxhash_rust::xxh3::xxh3_128(content).to_be_bytes()))
                .or_default() += 1;
        }
    }
    for (hash, paths) in by_hash {
        if paths >= 2 {
            add("duplicates", &hash, None, "paths", paths);
        }
    }
    stats.retain(|_, v| *v != 0);
    stats
}

fn text(batch: &arrow_array::RecordBatch, name: &str) -> StringArray {
    batch
        .column_by_name(name)
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .clone()
}

fn stat_key(
    batch: &arrow_array::RecordBatch,
    row: usize,
) -> (String, String, Option<String>, String) {
    let rule = text(batch, "rule");
    (
        text(batch, "dimension").value(row).to_string(),
        text(batch, "key").value(row).to_string(),
        rule.is_valid(row).then(|| rule.value(row).to_string()),
        text(batch, "metric").value(row).to_string(),
    )
}

/// `stats_changes` as epoch -> statistic -> diff.
fn changes(lake: &Path) -> BTreeMap<u64, StatMap> {
    let mut out: BTreeMap<u64, StatMap> = BTreeMap::new();
    for part in parts(lake, "stats_changes") {
        for batch in read_batches(&part) {
            let epoch = batch.column_by_name("epoch").unwrap();
            let epoch = epoch.as_any().downcast_ref::<UInt64Array>().unwrap();
            let diff = batch.column_by_name("diff").unwrap();
            let diff = diff.as_any().downcast_ref::<Int64Array>().unwrap();
            for row in 0..batch.num_rows() {
                let per_epoch = out.entry(epoch.value(row)).or_default();
                let previous = per_epoch.insert(stat_key(&batch, row), diff.value(row));
                assert!(previous.is_none(), "a statistic appears twice in one epoch");
            }
        }
    }
    out
}

/// `stats_current.parquet` as statistic -> value.
fn current(lake: &Path) -> StatMap {
    let mut out = StatMap::new();
    for batch in read_batches(&lake.join("stats_current.parquet")) {
        let value = batch.column_by_name("value").unwrap();
        let value = value.as_any().downcast_ref::<Int64Array>().unwrap();
        for row in 0..batch.num_rows() {
            out.insert(stat_key(&batch, row), value.value(row));
        }
    }
    out
}

fn write_snapshot(dir: &Path, snapshot: &Snapshot) {
    std::fs::create_dir_all(dir).unwrap();
    for (path, content) in snapshot {
        match content {
            Some(bytes) => write(dir, path, bytes),
            None => {
                let link = dir.join(path);
                std::fs::create_dir_all(link.parent().unwrap()).unwrap();
                std::os::unix::fs::symlink("target", link).unwrap();
            }
        }
    }
}

/// Replays `snapshots` and checks every epoch against the from-scratch statistics.
fn check_sequence(snapshots: &[Snapshot], workers: &str) -> BTreeMap<u64, StatMap> {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = tmp.path().join("pipeline.json");
    std::fs::write(&pipeline, PIPELINE).unwrap();
    let mut args = vec!["replay".to_string()];
    for (i, snapshot) in snapshots.iter().enumerate() {
        let dir = tmp.path().join(format!("snap{i}"));
        write_snapshot(&dir, snapshot);
        args.push(s(&dir).to_string());
    }
    let lake = tmp.path().join("lake");
    args.extend(
        [
            "--out",
            s(&lake),
            "--pipeline",
            s(&pipeline),
            "--workers",
            workers,
            "--source",
            "tree",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_ok(&args);
    let changes = changes(&lake);
    let mut running = StatMap::new();
    for (i, snapshot) in snapshots.iter().enumerate() {
        let epoch = i as u64 + 1;
        for (key, diff) in changes.get(&epoch).into_iter().flatten() {
            *running.entry(key.clone()).or_default() += diff;
        }
        running.retain(|_, v| *v != 0);
        assert_eq!(
            running,
            expected(snapshot),
            "statistics after epoch {epoch}"
        );
    }
    assert_eq!(current(&lake), running, "stats_current");
    changes
}

fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
    let paths = prop::sample::select(vec![
        "a.rs",
        "b.py",
        "notes.md",
        "plain",
        "src/x.rs",
        "src/y.py",
        "src/deep/z.rs",
        "docs/readme.md",
        "docs/a.rs",
        "link",
    ]);
    let contents = prop::sample::select(vec![
        &b"TODO\n"[..],
        b"",
        b"aaaa TODO FIXME\n",
        b"no rules here",
        b"aaa\naa\n",
        b"TODO TODO\nFIXME",
        b"x\n",
        b"aaaa TODO FIXME\n",
    ]);
    prop::collection::btree_map(paths, contents, 0..8).prop_map(|m| {
        m.into_iter()
            .map(|(p, c)| {
                let content = (p != "link").then(|| c.to_vec());
                (p.to_string(), content)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn statistics_equal_a_from_scratch_computation_after_every_epoch(
        snapshots in prop::collection::vec(arb_snapshot(), 1..5)
    ) {
        check_sequence(&snapshots, "2");
    }
}

#[test]
fn one_and_four_workers_give_the_same_statistics_per_epoch() {
    let snap = |files: &[(&str, &str)]| -> Snapshot {
        files
            .iter()
            .map(|(p, c)| (p.to_string(), Some(c.as_bytes().to_vec())))
            .collect()
    };
    let snapshots = vec![
        snap(&[
            ("a.rs", "TODO\n"),
            ("b.py", "aa aa\n"),
            ("src/c.rs", "TODO\n"),
            ("docs/d.md", "x"),
        ]),
        snap(&[
            ("a.rs", "TODO TODO\n"),
            ("src/c.rs", "TODO\n"),
            ("src/e.py", "FIXME\n"),
        ]),
        snap(&[
            ("src/c.rs", "x\n"),
            ("src/e.py", "FIXME\n"),
            ("f.md", "TODO\n"),
        ]),
    ];
    let one = check_sequence(&snapshots, "1");
    let four = check_sequence(&snapshots, "4");
    assert_eq!(one.len(), 3);
    assert_eq!(one, four);
}

#[test]
fn stats_command_prints_a_table_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    write(&tree, "a.rs", "// TODO one\n");
    write(&tree, "b.py", "# TODO two\n");
    let lake = tmp.path().join("lake");
    run_ok(&["replay", s(&tree), "--out", s(&lake)]);
    let table: String = ["language", "rule"]
        .map(|d| String::from_utf8(run_ok(&["stats", s(&lake), "--dimension", d]).stdout).unwrap())
        .concat();
    let has_row = |row: &[&str]| {
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == row)
    };
    assert!(has_row(&["language", "Rust", "-", "files", "1"]), "{table}");
    assert!(has_row(&["rule", "''", "todo", "matches", "2"]), "{table}");
    assert!(table.contains("current at epoch 1"), "{table}");
    let json = run_ok(&["stats", s(&lake), "--json", "--dimension", "rule"]).stdout;
    let rows: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let rows = rows.as_array().unwrap();
    let todo_matches = rows
        .iter()
        .find(|r| r["rule"] == "todo" && r["metric"] == "matches")
        .unwrap();
    assert_eq!(todo_matches["value"], 2);
    assert!(rows.iter().all(|r| r["dimension"] == "rule"));
    let out = run(&["stats", s(&tmp.path().join("nothing"))]);
    assert_eq!(out.status.code(), Some(2));
}
