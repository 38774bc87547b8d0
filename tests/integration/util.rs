//! Shared helpers for the integration tests: corpora in temp dirs, running the binary, reading lakes.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
    ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
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
    let mut out = Vec::new();
    for part in parts(lake, table) {
        for batch in read_batches(&part) {
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
    out
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
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle.py");
    let out = Command::new("python3")
        .arg(script)
        .args([s(corpus), s(lake), "--pipeline", s(pipeline)])
        .args(extra)
        .output()
        .expect("python3 runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "oracle found differences:\n{report}");
    println!("{report}");
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
