//! Reading the lake back: a restart keys every row by its exact name, a file size limit fails
//! like any other write error, and no damage to a lake makes exoflow panic or blame a write.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{Field, Schema};

use crate::util::*;

/// Writes `content` at the exact name `name` (bytes) under `root`.
fn write_bytes_name(root: &Path, name: &[u8], content: &str) {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join(OsStr::from_bytes(name)), content).unwrap();
}

/// Three names whose lossy UTF-8 is the same `c\u{fffd}.txt` (two not UTF-8, one real), a pair
/// in a directory that is not UTF-8, each with other rule counts, and a plain file.
fn colliding_tree(root: &Path, todo_in_fe: usize) {
    write_bytes_name(root, b"c\xfe.txt", &"TODO\n".repeat(todo_in_fe));
    write_bytes_name(root, b"c\xff.txt", "TODO TODO FIXME\n");
    write_bytes_name(root, "c\u{fffd}.txt".as_bytes(), "HACK\nXXX\n");
    write_bytes_name(
        &root.join(OsStr::from_bytes(b"d\xfe")),
        b"x.rs",
        "// TODO\n",
    );
    write_bytes_name(
        &root.join(OsStr::from_bytes(b"d\xff")),
        b"x.rs",
        "// FIXME FIXME\n",
    );
    write(root, "plain.md", "TODO: plain\n");
}

/// The rule counts of the current versions: (source, path, path_bytes) -> "rule=count" rows,
/// joined on the exact name and the epoch.
fn current_rule_counts(lake: &Path) -> BTreeMap<String, Vec<String>> {
    let field = |row: &str, name: &str| {
        row.split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or("absent")
            .to_string()
    };
    let key = |row: &str| {
        format!(
            "{} {} {}",
            field(row, "source"),
            field(row, "path"),
            field(row, "path_bytes")
        )
    };
    let mut latest: BTreeMap<String, (u64, bool)> = BTreeMap::new();
    for row in rows(lake, "files", &[]) {
        let epoch: u64 = field(&row, "epoch").parse().unwrap();
        let upsert = field(&row, "op") == "\"upsert\"";
        let k = key(&row);
        if latest.get(&k).is_none_or(|(e, _)| *e < epoch) {
            latest.insert(k, (epoch, upsert));
        }
    }
    let mut counts: BTreeMap<String, Vec<String>> = latest
        .iter()
        .filter(|(_, (_, upsert))| *upsert)
        .map(|(k, _)| (k.clone(), Vec::new()))
        .collect();
    for row in rows(lake, "file_rules", &[]) {
        let k = key(&row);
        let epoch: u64 = field(&row, "epoch").parse().unwrap();
        if latest.get(&k) == Some(&(epoch, true)) {
            let count = format!("{}={}", field(&row, "rule"), field(&row, "count"));
            counts.get_mut(&k).unwrap().push(count);
        }
    }
    for v in counts.values_mut() {
        v.sort();
    }
    counts
}

#[test]
fn non_utf8_names_that_collide_after_lossy_conversion_keep_their_rule_counts_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, second) = (tmp.path().join("a/tree"), tmp.path().join("b/tree"));
    colliding_tree(&first, 1);
    colliding_tree(&second, 3);
    let (restarted, fresh_first, fresh_second) = (
        tmp.path().join("restarted"),
        tmp.path().join("fresh-first"),
        tmp.path().join("fresh-second"),
    );
    run_ok(&["replay", s(&first), "--out", s(&fresh_first)]);
    run_ok(&["replay", s(&second), "--out", s(&fresh_second)]);

    // Restarted on an unchanged tree: the statistics are those of one run.
    run_ok(&["replay", s(&first), "--out", s(&restarted)]);
    let out = run_ok(&["replay", s(&first), "--out", s(&restarted)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0 upserts, 0 deletes, 6 unchanged"), "{text}");
    assert_eq!(stats_current(&restarted), stats_current(&fresh_first));

    // One of the colliding files changed between runs: its old counts are retracted, the
    // others' kept, as in one run of the new tree.
    let out = run_ok(&["replay", s(&second), "--out", s(&restarted)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 upserts, 0 deletes, 5 unchanged"), "{text}");
    assert_eq!(stats_current(&restarted), stats_current(&fresh_second));
    assert_eq!(stats_changes_sum(&restarted), stats_current(&restarted));

    // A watch started on the lake restores the same state and, with nothing changed, keeps it.
    Watching::start(&second, &restarted).stop();
    assert_eq!(stats_current(&restarted), stats_current(&fresh_second));

    // Each version's rule counts, joined to it by exact name, are its own.
    let counts = current_rule_counts(&fresh_second);
    assert_eq!(counts.len(), 6, "six current versions: {counts:?}");
    assert!(
        counts.values().all(|c| !c.is_empty()),
        "every file has a rule count: {counts:?}"
    );
    assert_eq!(current_rule_counts(&restarted), counts);
}

/// Many files with many matches, so that part files outgrow a small file size limit.
fn big_tree(root: &Path, files: usize) {
    for i in 0..files {
        let body: String = (0..40)
            .map(|j| format!("line {j} of {i}: TODO {:x} FIXME\n", i * 7919 + j * 104729))
            .collect();
        write(root, &format!("d{}/f{i}.txt", i % 17), body);
    }
}

#[test]
fn a_write_past_ulimit_f_exits_1_naming_the_file_and_a_later_run_completes_the_lake() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    big_tree(&tree, 400);
    let (lake, clean) = (tmp.path().join("lake"), tmp.path().join("clean"));
    // The shell's own limit, in KiB, inherited as a user would set it; exoflow itself must turn
    // the SIGXFSZ it then gets into an error.
    let script = format!(
        "ulimit -f 32; exec \"$0\" replay {} --out {}",
        s(&tree),
        s(&lake)
    );
    let out = Command::new("bash")
        .args(["-c", &script, env!("CARGO_BIN_EXE_exoflow")])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{} (a signal kills with no code): {err}",
        out.status
    );
    assert!(
        err.contains("cannot write") && err.contains(s(&lake)) && err.contains("File too large"),
        "the error names the file and the cause: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // Nothing of the failed run is visible, and a run without the limit makes the whole lake.
    assert!(parts(&lake, "files").is_empty());
    run_ok(&["replay", s(&tree), "--out", s(&lake)]);
    run_ok(&["replay", s(&tree), "--out", s(&clean)]);
    assert_eq!(table_rows(&lake), table_rows(&clean));
    assert_eq!(stats_current(&lake), stats_current(&clean));
    assert_eq!(history_problems(&lake), Vec::<String>::new());
}

// ------------------------------------------------------------------------------ damaged lakes

fn tree_one(root: &Path) {
    write(root, "README.md", "# Demo\nTODO: write\n");
    write(root, "src/main.rs", "fn main() {} // FIXME\n");
    write(
        root,
        "src/lib.rs",
        "// Copyright 2024 Demo\npub fn f() {}\n",
    );
    write(root, "LICENSE", "MIT License\nCopyright (c) Demo\n");
    write_bytes_name(root, b"odd\xfe.txt", "TODO TODO\n");
}

fn tree_two(root: &Path) {
    tree_one(root);
    write(
        root,
        "src/main.rs",
        "fn main() { println!(\"hi\"); } // FIXME TODO\n",
    );
    write(root, "src/new.go", "package main // HACK\n");
    std::fs::remove_file(root.join("LICENSE")).unwrap();
}

/// A good lake whose restart reads a checkpoint and part files after it: snapshots one, two,
/// one (checkpointed at epoch 3), then two again (epoch 4, after the checkpoint).
fn good_lake(tmp: &Path) -> (PathBuf, PathBuf) {
    let (one, two) = (tmp.join("one/tree"), tmp.join("two/tree"));
    tree_one(&one);
    tree_two(&two);
    let lake = tmp.join("good");
    // Without background compaction, so that every run's parts stay apart and the newest can be
    // damaged alone.
    let run = |tree: &Path, extra: &[&str]| {
        let args = ["replay", s(tree), "--out", s(&lake), "--no-auto-compact"];
        run_ok(&[&args[..], extra].concat());
    };
    for tree in [&one, &two, &one] {
        run(tree, &["--checkpoint-rows", "1"]);
    }
    run(&two, &[]);
    assert!(lake.join("_exoflow/checkpoint-3/files.parquet").is_file());
    for table in ["files", "file_rules", "matches", "stats_changes"] {
        newest_part(&lake, table);
    }
    (lake, two)
}

/// The part of `table` with the highest last epoch: one that a restart reads (it is after the
/// checkpoint).
fn newest_part(lake: &Path, table: &str) -> PathBuf {
    let part = parts(lake, table)
        .into_iter()
        .max_by_key(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let fields: Vec<&str> = name.split('-').collect();
            fields[3].parse::<u64>().unwrap()
        })
        .unwrap();
    let name = part.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.contains("-4-4-"), "{table}: {name} is not of epoch 4");
    part
}

fn newest_record(lake: &Path) -> PathBuf {
    let mut records: Vec<PathBuf> = std::fs::read_dir(lake.join("_exoflow/commits"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    records.sort();
    records.pop().unwrap()
}

fn truncate(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}

fn garbage(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len().max(64) as usize;
    let bytes: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
    std::fs::write(path, bytes).unwrap();
}

/// Garbage between a valid header and a valid footer: the footer parses, the pages do not.
fn damage_pages(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let n = bytes.len();
    for b in &mut bytes[8..n / 2] {
        *b ^= 0x5a;
    }
    std::fs::write(path, bytes).unwrap();
}

/// Rewrites the Parquet file at `path` with its batches changed by `change`.
fn rewrite(path: &Path, change: fn(&RecordBatch) -> RecordBatch) {
    let batches: Vec<RecordBatch> = read_batches(path).iter().map(change).collect();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batches[0].schema(), None).unwrap();
    for b in &batches {
        writer.write(b).unwrap();
    }
    writer.close().unwrap();
}

/// `batch` with column `name` replaced by `array` (or removed when None).
fn with_column(batch: &RecordBatch, name: &str, array: Option<(Field, ArrayRef)>) -> RecordBatch {
    let schema = batch.schema();
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if field.name() == name {
            if let Some((f, a)) = &array {
                fields.push(f.clone());
                columns.push(a.clone());
            }
        } else {
            fields.push((**field).clone());
            columns.push(column.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

fn size_as_text(batch: &RecordBatch) -> RecordBatch {
    let texts: StringArray = (0..batch.num_rows()).map(|i| Some(i.to_string())).collect();
    let field = Field::new("size", arrow_schema::DataType::Utf8, true);
    with_column(batch, "size", Some((field, Arc::new(texts))))
}

fn without_hash(batch: &RecordBatch) -> RecordBatch {
    with_column(batch, "hash", None)
}

fn without_path_bytes(batch: &RecordBatch) -> RecordBatch {
    with_column(batch, "path_bytes", None)
}

fn with_extra(batch: &RecordBatch) -> RecordBatch {
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| (**f).clone())
        .collect();
    fields.push(Field::new("extra", arrow_schema::DataType::Int64, true));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(Int64Array::from(vec![7; batch.num_rows()])));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

fn value_as_text(batch: &RecordBatch) -> RecordBatch {
    let texts: StringArray = (0..batch.num_rows()).map(|i| Some(i.to_string())).collect();
    let field = Field::new("value", arrow_schema::DataType::Utf8, false);
    with_column(batch, "value", Some((field, Arc::new(texts))))
}

fn replace_by_directory(path: &Path) {
    std::fs::remove_file(path).unwrap();
    std::fs::create_dir(path).unwrap();
}

fn replace_by_file(path: &Path) {
    std::fs::remove_dir_all(path).unwrap();
    std::fs::write(path, "not a directory").unwrap();
}

/// What a command on a damaged lake must do.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Exit 0: it does not read the damaged file, or it rewrites it.
    Ok,
    /// Exit 1 with an error that names the damaged file and says it was being read.
    ReadError,
    /// Exit 1 with an error that names the damaged file, which the run had to replace.
    WriteError,
    /// Exit 2, refused before anything is done, with an error that names the damaged file.
    Refused,
}

use Expect::{Ok as Fine, ReadError as Fails, Refused, WriteError as CannotReplace};

/// One kind of damage: what it does to a copy of the good lake (returning the damaged path), and
/// what replay (a restart; watch as well), `stats` and `compact` must do.
struct Damage {
    name: &'static str,
    apply: fn(&Path) -> PathBuf,
    restart: Expect,
    stats: Expect,
    compact: Expect,
}

// A table reads best as a table.
#[rustfmt::skip]
fn damages() -> Vec<Damage> {
    fn part(lake: &Path, table: &str, f: fn(&Path)) -> PathBuf {
        let p = newest_part(lake, table);
        f(&p);
        p
    }
    fn checkpoint(lake: &Path, name: &str, f: fn(&Path)) -> PathBuf {
        let p = lake.join("_exoflow/checkpoint-3").join(name);
        f(&p);
        p
    }
    fn record(lake: &Path, f: fn(&Path)) -> PathBuf {
        let p = newest_record(lake);
        f(&p);
        p
    }
    fn at(lake: &Path, name: &str, f: fn(&Path)) -> PathBuf {
        let p = lake.join(name);
        f(&p);
        p
    }
    fn empty(p: &Path) {
        std::fs::write(p, "").unwrap();
    }
    fn remove(p: &Path) {
        std::fs::remove_file(p).unwrap();
    }
    let damage = |name, apply, [restart, stats, compact]: [Expect; 3]| Damage {
        name,
        apply,
        restart,
        stats,
        compact,
    };
    //                                                                          restart  stats  compact
    vec![
        damage("files part truncated", |l| part(l, "files", truncate),                 [Fails, Fine, Fails]),
        damage("files part zero bytes", |l| part(l, "files", empty),                   [Fails, Fine, Fails]),
        damage("files part garbage", |l| part(l, "files", garbage),                    [Fails, Fine, Fails]),
        damage("files part damaged pages", |l| part(l, "files", damage_pages),         [Fails, Fine, Fails]),
        damage("files part with a text size", |l| part(l, "files", |p| rewrite(p, size_as_text)), [Fails, Fine, Fails]),
        damage("files part without hash", |l| part(l, "files", |p| rewrite(p, without_hash)),     [Fails, Fine, Fails]),
        damage("files part with an extra column", |l| part(l, "files", |p| rewrite(p, with_extra)), [Fails, Fine, Fails]),
        damage("files part is a directory", |l| part(l, "files", replace_by_directory), [Fails, Fine, Refused]),
        damage("file_rules part truncated", |l| part(l, "file_rules", truncate),       [Fails, Fine, Fails]),
        damage("file_rules part garbage", |l| part(l, "file_rules", garbage),          [Fails, Fine, Fails]),
        damage("file_rules part without path_bytes", |l| part(l, "file_rules", |p| rewrite(p, without_path_bytes)), [Fails, Fine, Fails]),
        damage("matches part garbage", |l| part(l, "matches", garbage),                [Fine, Fine, Fails]),
        damage("matches part with an extra column", |l| part(l, "matches", |p| rewrite(p, with_extra)), [Fine, Fine, Fails]),
        damage("stats_changes part truncated", |l| part(l, "stats_changes", truncate), [Fine, Fine, Fails]),
        damage("files table is a file", |l| at(l, "files", replace_by_file),           [Fails, Fine, Fails]),
        damage("commit record truncated", |l| record(l, truncate),                     [Fails, Fine, Fails]),
        damage("commit record garbage", |l| record(l, garbage),                        [Fails, Fine, Fails]),
        damage("commit record is a directory", |l| record(l, replace_by_directory),    [Fails, Fine, Fails]),
        damage("checkpoint files garbage", |l| checkpoint(l, "files.parquet", garbage), [Fails, Fine, Fine]),
        damage("checkpoint file_rules truncated", |l| checkpoint(l, "file_rules.parquet", truncate), [Fails, Fine, Fine]),
        damage("checkpoint files missing", |l| checkpoint(l, "files.parquet", remove), [Fails, Fine, Fine]),
        damage("stats_current garbage", |l| at(l, "stats_current.parquet", garbage),   [Fine, Fails, Fine]),
        damage("stats_current truncated", |l| at(l, "stats_current.parquet", truncate), [Fine, Fails, Fine]),
        damage("stats_current with a text value", |l| at(l, "stats_current.parquet", |p| rewrite(p, value_as_text)), [Fine, Fails, Fine]),
        damage("stats_current is a directory", |l| at(l, "stats_current.parquet", replace_by_directory), [CannotReplace, Fails, Fine]),
    ]
}

/// Runs `args`, killed at `deadline` (then its status is SIGKILL, which every check refuses): a
/// command that hangs, or a watch that runs on a lake it should have refused, fails the test.
fn run_with_deadline(args: &[&str], deadline: Duration) -> Output {
    let mut child = exoflow()
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > deadline {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// What is wrong with what a command did on the lake damaged by `damage` at `damaged`, if
/// anything.
fn check(damage: &Damage, what: &str, expect: Expect, damaged: &Path, out: &Output) -> Vec<String> {
    let err = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    let names = err.contains(s(damaged));
    let wrong: Vec<&str> = match expect {
        Expect::Ok => vec![(code != Some(0)).then_some("exit 0")],
        Expect::ReadError => vec![
            (code != Some(1)).then_some("exit 1"),
            (!names).then_some("the file named"),
            (!err.contains("cannot read") || err.contains("cannot write"))
                .then_some("\"cannot read\", not \"cannot write\""),
        ],
        Expect::Refused => vec![
            (code != Some(2)).then_some("exit 2"),
            (!names).then_some("the file named"),
        ],
        Expect::WriteError => vec![
            (code != Some(1)).then_some("exit 1"),
            (!names).then_some("the file named"),
            (!err.contains("cannot write")).then_some("\"cannot write\""),
        ],
    }
    .into_iter()
    .flatten()
    .chain(err.contains("panicked").then_some("no panic"))
    .collect();
    if wrong.is_empty() {
        return Vec::new();
    }
    let first_line = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    vec![format!(
        "{} / {what}: expected {}; got {}: {first_line}",
        damage.name,
        wrong.join(", "),
        out.status,
    )]
}

/// A copy of the good lake with `damage` applied, and the damaged path.
fn damaged_copy(good: &Path, tmp: &Path, damage: &Damage, what: &str) -> (PathBuf, PathBuf) {
    let lake = tmp.join(format!("{}-{what}", damage.name.replace(' ', "-")));
    let status = Command::new("cp")
        .arg("-a")
        .arg(good)
        .arg(&lake)
        .status()
        .unwrap();
    assert!(status.success());
    let damaged = (damage.apply)(&lake);
    (lake, damaged)
}

#[test]
fn a_damaged_lake_stops_a_restart_with_exit_1_naming_the_file_read() {
    let tmp = tempfile::tempdir().unwrap();
    let (good, tree) = good_lake(tmp.path());
    let mut read_errors = 0;
    let mut problems = Vec::new();
    for damage in damages() {
        let (lake, damaged) = damaged_copy(&good, tmp.path(), &damage, "replay");
        let out = run_with_deadline(
            &["replay", s(&tree), "--out", s(&lake)],
            Duration::from_secs(20),
        );
        problems.extend(check(&damage, "replay", damage.restart, &damaged, &out));
        if damage.restart != Expect::ReadError {
            // The damage was not in what a restart reads, or was rewritten: the statistics are
            // those of the good lake.
            if damage.restart == Expect::Ok
                && out.status.success()
                && damaged.ends_with("stats_current.parquet")
            {
                assert_eq!(
                    stats_current(&lake),
                    stats_current(&good),
                    "{}",
                    damage.name
                );
            }
            continue;
        }
        read_errors += 1;
        let (lake, damaged) = damaged_copy(&good, tmp.path(), &damage, "watch");
        let out = run_with_deadline(
            &[
                "watch",
                s(&tree),
                "--out",
                s(&lake),
                "--commit-interval",
                "100ms",
            ],
            Duration::from_secs(20),
        );
        problems.extend(check(&damage, "watch", damage.restart, &damaged, &out));
    }
    assert_eq!(problems, Vec::<String>::new(), "{}", problems.join("\n"));
    assert!(read_errors >= 15, "{read_errors}");
}

#[test]
fn a_damaged_lake_fails_stats_and_compact_naming_the_file_read() {
    let tmp = tempfile::tempdir().unwrap();
    let (good, _) = good_lake(tmp.path());
    let mut problems = Vec::new();
    for damage in damages() {
        let (lake, damaged) = damaged_copy(&good, tmp.path(), &damage, "stats");
        let out = run_with_deadline(&["stats", s(&lake)], Duration::from_secs(30));
        problems.extend(check(&damage, "stats", damage.stats, &damaged, &out));
        let (lake, damaged) = damaged_copy(&good, tmp.path(), &damage, "compact");
        let out = run_with_deadline(&["compact", s(&lake)], Duration::from_secs(30));
        problems.extend(check(&damage, "compact", damage.compact, &damaged, &out));
    }
    assert_eq!(problems, Vec::<String>::new(), "{}", problems.join("\n"));
}
