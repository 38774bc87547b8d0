//! A running writer compacts its own tables in the background: the part count stays bounded,
//! a reader querying all the while sees only committed rows, each once, and the lake ends
//! exactly as a replay of the final tree.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow_array::{Array, StringArray, UInt64Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::util::{Watching, assert_same_as_replay, history_problems, parts, write};

/// The epoch of the newest commit record, or None while it is being replaced.
fn head_epoch(lake: &Path) -> Option<u64> {
    let dir = lake.join("_exoflow/commits");
    let newest = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
        .max()?;
    let text = std::fs::read_to_string(dir.join(newest)).ok()?;
    let record: serde_json::Value = serde_json::from_str(&text).ok()?;
    record["epoch"].as_u64()
}

/// One query over `LAKE/files/*.parquet` as a reader that lists, then opens, makes it: the
/// (path, epoch) of every row, or None when a listed part was gone when opened (a compaction
/// swapped the table meanwhile; the reader asks again).
fn query(lake: &Path) -> Option<Vec<(String, u64)>> {
    let mut rows = Vec::new();
    for part in parts(lake, "files") {
        let file = match File::open(&part) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("{}: {e}", part.display()),
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap_or_else(|e| panic!("{}: {e}", part.display()))
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let path = batch.column_by_name("path").unwrap();
            let path = path.as_any().downcast_ref::<StringArray>().unwrap();
            let epoch = batch.column_by_name("epoch").unwrap();
            let epoch = epoch.as_any().downcast_ref::<UInt64Array>().unwrap();
            for row in 0..batch.num_rows() {
                rows.push((path.value(row).to_string(), epoch.value(row)));
            }
        }
    }
    Some(rows)
}

#[test]
fn a_running_watch_compacts_and_readers_see_committed_rows_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("w"), tmp.path().join("lake"));
    for i in 0..20 {
        write(&dir, &format!("f{i}.txt"), format!("TODO start {i}\n"));
    }
    let watch = Watching::start_with(&dir, &lake, &["--compact-fanout", "2"]);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = std::thread::spawn({
        let (lake, stop) = (lake.clone(), stop.clone());
        move || {
            let (mut answered, mut retried) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let Some(rows) = query(&lake) else {
                    retried += 1;
                    continue;
                };
                let committed = head_epoch(&lake).unwrap_or(0);
                let mut seen = HashSet::new();
                for (path, epoch) in rows {
                    assert!(
                        epoch <= committed,
                        "{path}: a row of epoch {epoch} is visible, the lake committed {committed}"
                    );
                    assert!(seen.insert((path.clone(), epoch)), "{path} {epoch} twice");
                }
                answered += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (answered, retried)
        }
    });
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(4) {
        round += 1;
        for i in 0..20 {
            if (i + round) % 3 == 0 {
                write(&dir, &format!("f{i}.txt"), format!("TODO {round} {i}\n"));
            }
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    std::thread::sleep(Duration::from_millis(500));
    watch.stop();
    stop.store(true, Ordering::Relaxed);
    let (answered, retried) = reader.join().unwrap();
    assert!(answered >= 10, "the reader answered {answered} times");
    println!("reader: {answered} answers, {retried} retries after a swap");
    let files = parts(&lake, "files");
    let merged = files
        .iter()
        .filter(|p| p.to_string_lossy().contains("part-compact-"))
        .count();
    assert!(merged > 0, "no merged part: {files:?}");
    // Fanout 2: at most one small part per size tier, and tiers double, so a few dozen at most
    // where the commits wrote hundreds.
    assert!(files.len() <= 24, "{} parts: {files:?}", files.len());
    assert!(
        history_problems(&lake).is_empty(),
        "{:?}",
        history_problems(&lake)
    );
    assert_same_as_replay(&dir, "w", &lake, tmp.path());
}

#[test]
fn no_auto_compact_leaves_the_parts_as_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("w"), tmp.path().join("lake"));
    write(&dir, "a.txt", "TODO\n");
    let watch = Watching::start_with(&dir, &lake, &["--compact-fanout", "2", "--no-auto-compact"]);
    for round in 0..12 {
        write(&dir, "a.txt", format!("TODO {round}\n"));
        std::thread::sleep(Duration::from_millis(350));
    }
    watch.stop();
    let files = parts(&lake, "files");
    // Fanout 2 would merge any two parts of one size tier: these stay as the commits wrote them.
    assert!(files.len() >= 4, "{files:?}");
    assert!(
        files
            .iter()
            .all(|p| !p.to_string_lossy().contains("compact"))
    );
}
