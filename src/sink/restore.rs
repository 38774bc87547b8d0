//! The committed lake -> the current version of every tracked path, for a restarted run; and
//! checkpoints, which keep what a restart reads bounded.
//!
//! The `files` table is the state log: the current version of a path is its row with the highest
//! epoch, unless that row is a delete; its rule counts are the `file_rules` rows of that epoch. A
//! checkpoint (`_exoflow/checkpoint-<E>/files.parquet` and `file_rules.parquet`, the same
//! schemas) holds exactly the current versions as of epoch E, so a restart reads the checkpoint
//! and only the rows after E.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::commit::{LOG_DIR, Lake, LakeError, checkpoint_dir, part_epochs, parts, sync_dir};
use super::parquet::replace_file;
use super::{SinkError, tables};
use crate::pipeline::{Pipeline, RuleSet};
use crate::source::path_id;
use crate::version::{Features, FileVersion, Language, SkipReason};

/// The current versions of a committed lake.
#[derive(Debug, Default)]
pub struct LakeState {
    /// Current (not deleted) versions, without matches.
    pub versions: Vec<FileVersion>,
    /// `files` rows and `files` part files read to build it: what a restart costs.
    pub rows_read: u64,
    pub parts_read: u64,
}

/// Where the committed state starts and ends.
#[derive(Debug, Clone, Copy)]
pub struct StateRange {
    /// The checkpoint to start from.
    pub checkpoint: Option<u64>,
    /// The committed epoch.
    pub through: u64,
}

/// Opens the lake at `root` for a run of `pipeline` (see [`Lake::open`]) and reads its committed
/// state.
pub fn open_for_run(root: &Path, pipeline: &Pipeline) -> Result<(Arc<Lake>, LakeState), LakeError> {
    let started = std::time::Instant::now();
    let lake = Lake::open(root, Some(pipeline))?;
    let range = StateRange {
        checkpoint: lake.head().and_then(|h| h.checkpoint),
        through: lake.committed(),
    };
    let state = load(root, range, &pipeline.rules)?;
    if range.through > 0 {
        tracing::info!(
            epoch = range.through,
            checkpoint = ?range.checkpoint,
            paths = state.versions.len(),
            rows = state.rows_read,
            parts = state.parts_read,
            seconds = started.elapsed().as_secs_f64(),
            "restored the committed state"
        );
    }
    Ok((Arc::new(lake), state))
}

/// Reads the current versions of the lake at `root` as of `range.through`.
pub fn load(root: &Path, range: StateRange, rules: &RuleSet) -> Result<LakeState, SinkError> {
    if range.through == 0 {
        return Ok(LakeState::default());
    }
    let after = range.checkpoint.unwrap_or(0);
    let mut sources: Vec<PathBuf> = Vec::new();
    if let Some(c) = range.checkpoint {
        sources.push(checkpoint_dir(root, c).join("files.parquet"));
    }
    // Parts in epoch order (names sort as text, epochs as numbers).
    let tail = |table: &str| {
        let mut tail: Vec<((u64, u64), PathBuf)> = parts(root, table)
            .into_iter()
            .filter_map(|p| {
                let epochs = part_epochs(&p.file_name()?.to_string_lossy())?;
                (epochs.1 > after && epochs.1 <= range.through).then_some((epochs, p))
            })
            .collect();
        tail.sort();
        tail.into_iter().map(|(_, p)| p)
    };
    sources.extend(tail("files"));
    let mut current: HashMap<u128, FileVersion> = HashMap::new();
    let mut rows_read = 0u64;
    for path in &sources {
        let from_checkpoint = path_is_checkpoint(path);
        for batch in read(path)? {
            rows_read += batch.num_rows() as u64;
            for version in versions_of(&batch, path)? {
                if version.epoch > range.through || (!from_checkpoint && version.epoch <= after) {
                    continue;
                }
                let id = path_id(&version.source, &version.path);
                match current.get(&id) {
                    Some(known) if known.epoch > version.epoch => {}
                    _ => {
                        current.insert(id, version);
                    }
                }
            }
        }
    }
    current.retain(|_, v| !v.deleted);
    // Rule counts: the rows of each current version's epoch. `file_rules` names paths in lossy
    // UTF-8, which is the exact name for every path but those that are not UTF-8.
    let mut rule_sources: Vec<PathBuf> = Vec::new();
    if let Some(c) = range.checkpoint {
        rule_sources.push(checkpoint_dir(root, c).join("file_rules.parquet"));
    }
    rule_sources.extend(tail("file_rules"));
    let lossy: HashMap<u128, u128> = current
        .iter()
        .filter(|(_, v)| std::str::from_utf8(&v.path).is_err())
        .map(|(id, v)| (path_id(&v.source, v.path_lossy().as_bytes()), *id))
        .collect();
    let ids: HashMap<&str, u32> = (0..rules.len() as u32).map(|i| (rules.id(i), i)).collect();
    for path in &rule_sources {
        for batch in read(path)? {
            let source = column(&batch, "source", path)?.as_string::<i32>();
            let file = column(&batch, "path", path)?.as_string::<i32>();
            let epoch = column(&batch, "epoch", path)?.as_primitive::<UInt64Type>();
            let rule = column(&batch, "rule", path)?.as_string::<i32>();
            let count = column(&batch, "count", path)?.as_primitive::<UInt64Type>();
            for row in 0..batch.num_rows() {
                let id = path_id(source.value(row), file.value(row).as_bytes());
                let id = lossy.get(&id).copied().unwrap_or(id);
                let Some(version) = current.get_mut(&id) else {
                    continue;
                };
                if version.epoch != epoch.value(row) {
                    continue;
                }
                let Some(&index) = ids.get(rule.value(row)) else {
                    return Err(corrupt(path, format!("unknown rule {:?}", rule.value(row))));
                };
                version.rule_counts.push((index, count.value(row)));
            }
        }
    }
    let mut versions: Vec<FileVersion> = current.into_values().collect();
    for v in &mut versions {
        v.rule_counts.sort_unstable();
        v.rule_counts.dedup();
    }
    versions.sort_by(|a, b| (&a.source, &a.path).cmp(&(&b.source, &b.path)));
    let parts_read = sources.len() as u64 - u64::from(range.checkpoint.is_some());
    Ok(LakeState {
        versions,
        rows_read,
        parts_read,
    })
}

fn path_is_checkpoint(path: &Path) -> bool {
    path.parent()
        .and_then(|p| p.file_name())
        .is_some_and(|n| n.to_string_lossy().starts_with("checkpoint-"))
}

/// Writes the current versions as of `epoch` as the checkpoint `_exoflow/checkpoint-<epoch>/`:
/// built hidden, then renamed into place. It counts once a commit record names it.
pub fn write_checkpoint(
    root: &Path,
    epoch: u64,
    versions: &[FileVersion],
    rules: &RuleSet,
) -> Result<(), SinkError> {
    let target = checkpoint_dir(root, epoch);
    let staging = root
        .join(LOG_DIR)
        .join(format!("staging-checkpoint-{epoch}"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|source| SinkError::Io {
        path: staging.clone(),
        source,
    })?;
    let batches = tables::build(versions, rules).map_err(|source| SinkError::Arrow {
        table: "files".into(),
        source,
    })?;
    replace_file(&staging.join("files.parquet"), "files", &batches.files)?;
    replace_file(
        &staging.join("file_rules.parquet"),
        "file_rules",
        &batches.file_rules,
    )?;
    let _ = std::fs::remove_dir_all(&target);
    std::fs::rename(&staging, &target).map_err(|source| SinkError::Io {
        path: target.clone(),
        source,
    })?;
    sync_dir(&root.join(LOG_DIR))
}

fn corrupt(path: &Path, reason: String) -> SinkError {
    SinkError::Read {
        path: path.to_path_buf(),
        reason,
    }
}

fn read(path: &Path) -> Result<Vec<RecordBatch>, SinkError> {
    let file = File::open(path).map_err(|source| SinkError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let parquet_error = |source| SinkError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(parquet_error)?
        .with_batch_size(16 * 1024)
        .build()
        .map_err(parquet_error)?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| corrupt(path, e.to_string()))
}

fn column<'a>(batch: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a dyn Array, SinkError> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| corrupt(path, format!("no column {name}")))
}

/// The versions in a batch of the `files` table.
fn versions_of(batch: &RecordBatch, path: &Path) -> Result<Vec<FileVersion>, SinkError> {
    let source = column(batch, "source", path)?.as_string::<i32>();
    let name = column(batch, "path", path)?.as_string::<i32>();
    let name_bytes = column(batch, "path_bytes", path)?.as_binary::<i32>();
    let op = column(batch, "op", path)?.as_string::<i32>();
    let epoch = column(batch, "epoch", path)?.as_primitive::<UInt64Type>();
    let size = column(batch, "size", path)?.as_primitive::<UInt64Type>();
    let hash = column(batch, "hash", path)?.as_fixed_size_binary();
    let lines = column(batch, "lines", path)?.as_primitive::<UInt64Type>();
    let entropy = column(batch, "entropy", path)?.as_primitive::<Float64Type>();
    let is_binary = column(batch, "is_binary", path)?.as_boolean();
    let language = column(batch, "language", path)?.as_string::<i32>();
    let skip_reason = column(batch, "skip_reason", path)?.as_string::<i32>();
    let mut versions = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let exact = if name_bytes.is_valid(row) {
            name_bytes.value(row).to_vec()
        } else {
            name.value(row).as_bytes().to_vec()
        };
        let features = if hash.is_valid(row) {
            let language = if language.is_valid(row) {
                let name = language.value(row);
                let interned = crate::kernels::language::intern(name)
                    .ok_or_else(|| corrupt(path, format!("unknown language {name:?}")))?;
                Some(Language(interned))
            } else {
                None
            };
            Some(Features {
                hash: hash.value(row).try_into().expect("16 bytes"),
                lines: lines.value(row),
                entropy: entropy.value(row),
                is_binary: is_binary.value(row),
                language,
            })
        } else {
            None
        };
        let skip = if skip_reason.is_valid(row) {
            let reason = skip_reason.value(row);
            Some(
                SkipReason::parse(reason)
                    .ok_or_else(|| corrupt(path, format!("unknown skip_reason {reason:?}")))?,
            )
        } else {
            None
        };
        versions.push(FileVersion {
            source: source.value(row).to_string(),
            path: exact,
            deleted: op.value(row) == "delete",
            epoch: epoch.value(row),
            size: size.is_valid(row).then(|| size.value(row)),
            features,
            skip_reason: skip,
            rule_counts: Vec::new(),
            matches: Vec::new(),
        });
    }
    Ok(versions)
}
