//! Shared helpers for the integration tests: corpora in temp dirs, running the binary, reading lakes.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use arrow_array::{
    Array, BinaryArray, BooleanArray, FixedSizeBinaryArray, Float64Array, RecordBatch, StringArray,
    UInt64Array,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// The exoflow binary built for these tests.
pub fn exoflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_exoflow"))
}

/// Runs exoflow with `args` and returns its output.
pub fn run(args: &[&str]) -> Output {
    exoflow()
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("exoflow runs")
}

/// Runs exoflow with `args` for at most `limit`; None when it was still running then (it is
/// killed), so that a flag that makes a run hang fails its test instead of hanging it.
pub fn run_within(args: &[&str], limit: Duration) -> Option<Output> {
    let mut child = exoflow()
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("exoflow starts");
    let started = Instant::now();
    while started.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    None
}

/// Runs exoflow and asserts success.
pub fn run_ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "exoflow {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// Writes `content` to `root/rel`, creating directories.
pub fn write(root: &Path, rel: &str, content: impl AsRef<[u8]>) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

/// Every part file of `table` in `lake`.
pub fn parts(lake: &Path, table: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(lake.join(table)) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out.sort();
    out
}

pub fn read_batches(path: &Path) -> Vec<RecordBatch> {
    try_read_batches(path).unwrap_or_else(|| panic!("{} is gone", path.display()))
}

/// The batches of a part file; None when it is gone (a running writer's compaction replaced it
/// after it was listed: the reader lists again, as the README says a reader of a live lake does).
fn try_read_batches(path: &Path) -> Option<Vec<RecordBatch>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot open {}: {e}", path.display()),
    };
    Some(
        ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect(),
    )
}

/// One cell as text: enough to compare rows between lakes.
fn cell(array: &dyn Array, row: usize) -> String {
    if array.is_null(row) {
        return "null".into();
    }
    let any = array.as_any();
    if let Some(a) = any.downcast_ref::<StringArray>() {
        return format!("{:?}", a.value(row));
    }
    if let Some(a) = any.downcast_ref::<UInt64Array>() {
        return a.value(row).to_string();
    }
    if let Some(a) = any.downcast_ref::<arrow_array::Int64Array>() {
        return a.value(row).to_string();
    }
    if let Some(a) = any.downcast_ref::<Float64Array>() {
        return format!("{:.12}", a.value(row));
    }
    if let Some(a) = any.downcast_ref::<BooleanArray>() {
        return a.value(row).to_string();
    }
    if let Some(a) = any.downcast_ref::<BinaryArray>() {
        return hex(a.value(row));
    }
    if let Some(a) = any.downcast_ref::<FixedSizeBinaryArray>() {
        return hex(a.value(row));
    }
    panic!("unexpected column type {:?}", array.data_type())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The rows of `table` as `column=value` strings, sorted, with the columns in `skip` left out.
pub fn rows(lake: &Path, table: &str, skip: &[&str]) -> Vec<String> {
    // A part listed and then replaced by a background compaction: list again.
    for _ in 0..100 {
        if let Some(rows) = try_rows(lake, table, skip) {
            return rows;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("the parts of {table} kept changing while they were read");
}

fn try_rows(lake: &Path, table: &str, skip: &[&str]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for part in parts(lake, table) {
        for batch in try_read_batches(&part)? {
            let schema = batch.schema();
            for row in 0..batch.num_rows() {
                let mut cells = Vec::new();
                for (i, field) in schema.fields().iter().enumerate() {
                    if skip.contains(&field.name().as_str()) {
                        continue;
                    }
                    cells.push(format!("{}={}", field.name(), cell(batch.column(i), row)));
                }
                out.push(cells.join(" "));
            }
        }
    }
    out.sort();
    Some(out)
}

/// Every part table's rows, epochs included: what two lakes that are the same must share.
pub fn table_rows(lake: &Path) -> Vec<(&'static str, Vec<String>)> {
    exoflow::sink::commit::PART_TABLES
        .into_iter()
        .map(|t| (t, rows(lake, t, &[])))
        .collect()
}

/// All three tables' rows without `epoch`.
pub fn lake_rows(lake: &Path) -> BTreeMap<&'static str, Vec<String>> {
    ["files", "file_rules", "matches"]
        .into_iter()
        .map(|t| (t, rows(lake, t, &["epoch"])))
        .collect()
}

/// A value of one column per row of `files`, keyed by path.
pub fn files_column(lake: &Path, column: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for part in parts(lake, "files") {
        for batch in read_batches(&part) {
            let paths = batch.column_by_name("path").unwrap();
            let values = batch.column_by_name(column).unwrap();
            for row in 0..batch.num_rows() {
                let path = paths.as_any().downcast_ref::<StringArray>().unwrap();
                out.insert(path.value(row).to_string(), cell(values.as_ref(), row));
            }
        }
    }
    out
}

/// Runs the independent Python oracle over a corpus and a lake; panics with its report on a
/// difference.
pub fn oracle(corpus: &Path, lake: &Path, pipeline: &Path, extra: &[&str]) {
    let args = [&[s(corpus), s(lake), "--pipeline", s(pipeline)][..], extra].concat();
    let (ok, report) = python("tests/oracle.py", &args);
    assert!(ok, "oracle found differences:\n{report}");
    println!("{report}");
}

/// Runs a Python script of the repository with `args`; returns whether it succeeded, and its
/// stdout and stderr.
pub fn python(script: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(script))
        .args(args)
        .output()
        .expect("python3 runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

/// `exoflow replay INPUT --out LAKE --pipeline PIPELINE EXTRA...`, asserting success.
pub fn replay_ok(input: &Path, lake: &Path, pipeline: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "replay",
        s(input),
        "--out",
        s(lake),
        "--pipeline",
        s(pipeline),
    ];
    args.extend_from_slice(extra);
    run_ok(&args)
}

/// A running `exoflow watch`.
pub struct Watching {
    child: Child,
    /// Reads stderr while the watch runs, when a test reads it before the end.
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Watching {
    pub fn start(dir: &Path, lake: &Path) -> Watching {
        Watching::start_with(dir, lake, &[])
    }

    /// Starts watching with extra arguments.
    pub fn start_with(dir: &Path, lake: &Path, extra: &[&str]) -> Watching {
        // A short commit interval unless the test gives one.
        let interval = match extra.contains(&"--commit-interval") {
            true => &[][..],
            false => &["--commit-interval", "300ms"][..],
        };
        let child = exoflow()
            .args(["watch", s(dir), "--out", s(lake)])
            .args(interval)
            .args(["--workers", "2"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("exoflow watch starts");
        // The initial scan runs after the watches exist, so nothing done from now on is missed;
        // a short pause only keeps the first actions out of the scan itself.
        std::thread::sleep(Duration::from_millis(300));
        Watching {
            child,
            stderr: None,
        }
    }

    /// Starts watching with `--http 127.0.0.1:0` (the system picks a free port) and extra
    /// arguments; returns it with the server's base URL, as its stderr reports it.
    pub fn serving(dir: &Path, lake: &Path, extra: &[&str]) -> (Watching, String) {
        Watching::serving_on(dir, lake, "127.0.0.1:0", extra)
    }

    /// Starts watching with `--http ADDR` and extra arguments; returns it with the server's base
    /// URL, as its stderr reports it.
    pub fn serving_on(dir: &Path, lake: &Path, addr: &str, extra: &[&str]) -> (Watching, String) {
        let args = [&["--http", addr], extra].concat();
        let mut watching = Watching::start_with(dir, lake, &args);
        let stderr = watching.child.stderr.take().unwrap();
        let (sender, addr) = std::sync::mpsc::channel();
        watching.stderr = Some(std::thread::spawn(move || {
            let mut text = String::new();
            for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
                let Ok(line) = line else { break };
                if let Some(base) = line.strip_prefix("serving on ") {
                    let _ = sender.send(base.to_string());
                }
                text.push_str(&line);
                text.push('\n');
            }
            text
        }));
        let base = addr.recv_timeout(Duration::from_secs(30));
        (watching, base.expect("the server reports its address"))
    }

    /// The watch's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no drain, no final commit.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the summary it printed.
    pub fn stop(mut self) -> String {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let out = self.child.wait_with_output().unwrap();
                let read = self.stderr.take().map(|h| h.join().unwrap());
                let text = format!(
                    "{}{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    read.unwrap_or_default()
                );
                assert!(status.success(), "watch exited with {status}: {text}");
                return text;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "watch did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The value of column `name` in a row as [`rows`] prints it (`name=value`, space-separated).
fn row_field(row: &str, name: &str) -> String {
    row.split(' ')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap()
        .to_string()
}

/// Current versions in a lake: path -> (size, hash, skip_reason), from the latest row per path.
pub fn current_versions(lake: &Path) -> BTreeMap<String, String> {
    current_versions_by(lake, |field| field("path"))
}

/// Current versions in a lake of several sources: "source path" -> (size, hash, skip_reason).
pub fn current_versions_by_source(lake: &Path) -> BTreeMap<String, String> {
    current_versions_by(lake, |field| {
        format!("{} {}", field("source"), field("path"))
    })
}

fn current_versions_by(
    lake: &Path,
    key: impl Fn(&dyn Fn(&str) -> String) -> String,
) -> BTreeMap<String, String> {
    let mut latest: BTreeMap<String, (u64, Option<String>)> = BTreeMap::new();
    for row in rows(lake, "files", &[]) {
        let field = |name: &str| row_field(&row, name);
        let path = key(&field);
        let epoch: u64 = field("epoch").parse().unwrap();
        let value = (field("op") == "\"upsert\"").then(|| {
            format!(
                "size={} hash={} skip={}",
                field("size"),
                field("hash"),
                field("skip_reason")
            )
        });
        if latest.get(&path).is_none_or(|(e, _)| *e < epoch) {
            latest.insert(path, (epoch, value));
        }
    }
    latest
        .into_iter()
        .filter_map(|(path, (_, value))| value.map(|v| (path, v)))
        .collect()
}

pub fn stats_current(lake: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    for batch in read_batches(&lake.join("stats_current.parquet")) {
        for row in 0..batch.num_rows() {
            rows.push(stat_cells(
                &batch,
                row,
                &["dimension", "key", "rule", "metric", "value"],
            ));
        }
    }
    rows.sort();
    rows
}

/// The named columns of a statistics row, space-separated, `null` for nulls.
fn stat_cells(batch: &RecordBatch, row: usize, columns: &[&str]) -> String {
    let cells: Vec<String> = columns
        .iter()
        .map(|c| {
            let col = batch.column_by_name(c).unwrap();
            if col.is_null(row) {
                "null".to_string()
            } else {
                arrow_cast_value(col.as_ref(), row)
            }
        })
        .collect();
    cells.join(" ")
}

fn arrow_cast_value(col: &dyn arrow_array::Array, row: usize) -> String {
    if let Some(a) = col.as_any().downcast_ref::<arrow_array::StringArray>() {
        return a.value(row).to_string();
    }
    if let Some(a) = col.as_any().downcast_ref::<arrow_array::Int64Array>() {
        return a.value(row).to_string();
    }
    panic!("unexpected column type")
}

/// Replays `dir` as source `source` and checks the watch lake against it.
pub fn assert_same_as_replay(dir: &Path, source: &str, watch_lake: &Path, tmp: &Path) {
    let replay_lake = tmp.join("replay-lake");
    run_ok(&[
        "replay",
        s(dir),
        "--out",
        s(&replay_lake),
        "--source",
        source,
    ]);
    let watched = current_versions(watch_lake);
    let replayed = current_versions(&replay_lake);
    let differences: Vec<String> = replayed
        .iter()
        .filter(|(path, v)| watched.get(*path) != Some(*v))
        .map(|(path, v)| format!("{path}: watched {:?}, replayed {v}", watched.get(path)))
        .chain(
            watched
                .keys()
                .filter(|path| !replayed.contains_key(*path))
                .map(|path| format!("{path}: watched only")),
        )
        .collect();
    assert!(
        differences.is_empty(),
        "{} current versions differ, the first: {:#?}",
        differences.len(),
        &differences[..differences.len().min(10)]
    );
    assert_eq!(
        stats_current(watch_lake),
        stats_current(&replay_lake),
        "stats_current differ"
    );
}

/// What breaks "exactly once" in a lake's `files` history: a path with two rows in one epoch, or
/// a row that repeats the path's previous one (the same version written twice, or a delete of a
/// deleted path).
pub fn history_problems(lake: &Path) -> Vec<String> {
    let mut by_path: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for row in rows(lake, "files", &[]) {
        let field = |name: &str| row_field(&row, name);
        let version = format!(
            "op={} size={} hash={} skip={}",
            field("op"),
            field("size"),
            field("hash"),
            field("skip_reason")
        );
        let key = format!("{} {}", field("source"), field("path"));
        by_path
            .entry(key)
            .or_default()
            .push((field("epoch").parse().unwrap(), version));
    }
    let mut problems = Vec::new();
    for (path, mut history) in by_path {
        history.sort();
        for pair in history.windows(2) {
            if pair[0].0 == pair[1].0 {
                problems.push(format!("{path}: two rows in epoch {}", pair[0].0));
            } else if pair[0].1 == pair[1].1 {
                problems.push(format!(
                    "{path}: epochs {} and {} repeat {}",
                    pair[0].0, pair[1].0, pair[0].1
                ));
            }
        }
        if history
            .first()
            .is_some_and(|(_, v)| v.starts_with("op=\"delete\""))
        {
            problems.push(format!("{path}: history starts with a delete"));
        }
    }
    problems
}

/// The running sum of `stats_changes`, as `stats_current` rows: what the statistics add up to
/// when no change was written twice or lost.
pub fn stats_changes_sum(lake: &Path) -> Vec<String> {
    let mut sums: BTreeMap<String, i64> = BTreeMap::new();
    for part in parts(lake, "stats_changes") {
        for batch in read_batches(&part) {
            let diff = batch.column_by_name("diff").unwrap();
            let diff = diff
                .as_any()
                .downcast_ref::<arrow_array::Int64Array>()
                .unwrap();
            for row in 0..batch.num_rows() {
                let key = stat_cells(&batch, row, &["dimension", "key", "rule", "metric"]);
                *sums.entry(key).or_default() += diff.value(row);
            }
        }
    }
    let mut rows: Vec<String> = sums
        .into_iter()
        .filter(|(_, v)| *v != 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    rows.sort();
    rows
}

/// The near-duplicate clusters of a lake as of its last epoch, from the running sum of the
/// `near_duplicates` diffs: each cluster as its sorted paths, with its representative first.
pub fn near_duplicate_clusters(lake: &Path) -> BTreeSet<Vec<String>> {
    let mut sums: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    for row in rows(lake, "near_duplicates", &["epoch", "similarity"]) {
        let field = |name: &str| row_field(&row, name);
        let key = (
            field("cluster"),
            field("representative_path"),
            field("path"),
        );
        *sums.entry(key).or_default() += field("diff").parse::<i64>().unwrap();
    }
    assert!(
        sums.values().all(|d| *d == 0 || *d == 1),
        "a membership summed to neither 0 nor 1: {sums:?}"
    );
    let mut clusters: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for ((cluster, representative, path), d) in sums {
        if d == 1 {
            clusters
                .entry((cluster, representative))
                .or_default()
                .push(path);
        }
    }
    clusters
        .into_iter()
        .map(|((_, representative), mut paths)| {
            paths.sort();
            assert!(
                paths.contains(&representative),
                "{representative} not in {paths:?}"
            );
            paths.retain(|p| *p != representative);
            paths.insert(0, representative);
            paths
        })
        .collect()
}

pub trait FileSizeLimit {
    fn with_file_size_limit(&mut self, bytes: u64) -> &mut Self;
}

impl FileSizeLimit for std::process::Command {
    /// RLIMIT_FSIZE for the child, with SIGXFSZ ignored so that a write past it fails with EFBIG
    /// instead of killing the process.
    fn with_file_size_limit(&mut self, bytes: u64) -> &mut Self {
        unsafe {
            self.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            })
        }
    }
}
