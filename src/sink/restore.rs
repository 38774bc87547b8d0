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
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use super::commit::{LOG_DIR, Lake, LakeError, checkpoint_dir, part_epochs, sync_dir};
use super::parquet::replace_file;
use super::{SinkError, schema, tables};
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
/// state; as a `peer`, a cluster's process other than the first (see [`Lake::open_peer`]), with
/// no state.
pub fn open_for_run(
    root: &Path,
    pipeline: &Pipeline,
    peer: bool,
) -> Result<(Arc<Lake>, LakeState), LakeError> {
    if peer {
        // The first process of the cluster restores the state and sends it to its owners.
        return Ok((
            Arc::new(Lake::open_peer(root, pipeline)?),
            LakeState::default(),
        ));
    }
    let started = std::time::Instant::now();
    let lake = Lake::open(root, Some(pipeline))?;
    let range = StateRange {
        checkpoint: lake.head().and_then(|h| h.checkpoint),
        through: lake.committed(),
    };
    let state = load(root, range, &pipeline.rules.ids())?;
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
///
/// Every row is keyed by its exact name: `path_bytes` where it is set, else `path`. The lossy
/// `path` alone is not a key: `c\xfe.txt`, `c\xff.txt` and a real `c\u{fffd}.txt` all share it.
/// `rule_ids` names the pipeline's rules by index.
pub fn load(root: &Path, range: StateRange, rule_ids: &[String]) -> Result<LakeState, SinkError> {
    if range.through == 0 {
        return Ok(LakeState::default());
    }
    let after = range.checkpoint.unwrap_or(0);
    let checkpoint = |name: &str| {
        range
            .checkpoint
            .map(|c| (checkpoint_dir(root, c).join(name), CHECKPOINT_FILE))
    };
    // Parts in epoch order (names sort as text, epochs as numbers).
    let tail = |table: &str| -> Result<Vec<(PathBuf, &'static str)>, SinkError> {
        let mut tail: Vec<((u64, u64), PathBuf)> = committed_parts(root, table)?
            .into_iter()
            .filter_map(|p| {
                let epochs = part_epochs(&p.file_name()?.to_string_lossy())?;
                (epochs.1 > after && epochs.1 <= range.through).then_some((epochs, p))
            })
            .collect();
        tail.sort();
        Ok(tail.into_iter().map(|(_, p)| (p, PART_FILE)).collect())
    };
    let mut sources: Vec<(PathBuf, &'static str)> = Vec::new();
    sources.extend(checkpoint("files.parquet"));
    sources.extend(tail("files")?);
    let mut current: HashMap<u128, FileVersion> = HashMap::new();
    let mut rows_read = 0u64;
    for (path, what) in &sources {
        let from_checkpoint = *what == CHECKPOINT_FILE;
        for batch in read(path, "files", what)? {
            rows_read += batch.num_rows() as u64;
            for version in versions_of(&batch, path, what)? {
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
    // Rule counts: the rows of each current version's epoch.
    let mut rule_sources: Vec<(PathBuf, &'static str)> = Vec::new();
    rule_sources.extend(checkpoint("file_rules.parquet"));
    rule_sources.extend(tail("file_rules")?);
    let ids: HashMap<&str, u32> = (rule_ids.iter().enumerate())
        .map(|(i, id)| (id.as_str(), i as u32))
        .collect();
    for (path, what) in &rule_sources {
        for batch in read(path, "file_rules", what)? {
            let rule = column(&batch, "rule", path, what)?.as_string::<i32>();
            let count = column(&batch, "count", path, what)?.as_primitive::<UInt64Type>();
            for (row, key) in version_keys(&batch, path, what)?.into_iter().enumerate() {
                let Some(version) = current_version(&mut current, key) else {
                    continue;
                };
                let Some(&index) = ids.get(rule.value(row)) else {
                    return Err(corrupt(
                        path,
                        what,
                        format!("unknown rule {:?}", rule.value(row)),
                    ));
                };
                version.rule_counts.push((index, count.value(row)));
            }
        }
    }
    // Signatures: the row of each current version's epoch. A checkpoint written before the table
    // existed has no file for it.
    let mut signature_sources: Vec<(PathBuf, &'static str)> = Vec::new();
    signature_sources.extend(checkpoint("signatures.parquet").filter(|(p, _)| p.exists()));
    signature_sources.extend(tail("signatures")?);
    for (path, what) in &signature_sources {
        for batch in read(path, "signatures", what)? {
            let signature = column(&batch, "signature", path, what)?.as_binary::<i32>();
            for (row, key) in version_keys(&batch, path, what)?.into_iter().enumerate() {
                let Some(version) = current_version(&mut current, key) else {
                    continue;
                };
                let bytes = signature.value(row);
                if bytes.is_empty() || bytes.len() % 4 != 0 {
                    return Err(corrupt(
                        path,
                        what,
                        format!("a signature of {} bytes, not 4 per value", bytes.len()),
                    ));
                }
                let values = bytes
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                version.signature = Some(values);
            }
        }
    }
    let mut versions: Vec<FileVersion> = current.into_values().collect();
    for v in &mut versions {
        v.rule_counts.sort_unstable();
        v.rule_counts.dedup();
        // Two counts of one rule for one version: rows that no run of exoflow writes.
        if let Some(w) = v.rule_counts.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(SinkError::Read {
                path: root.join("file_rules"),
                reason: format!(
                    "two counts of rule {:?} for {:?} at epoch {}",
                    rule_ids[w[0].0 as usize],
                    v.path_lossy(),
                    v.epoch
                ),
            });
        }
    }
    versions.sort_by(|a, b| (&a.source, &a.path).cmp(&(&b.source, &b.path)));
    let parts_read = sources.len() as u64 - u64::from(range.checkpoint.is_some());
    Ok(LakeState {
        versions,
        rows_read,
        parts_read,
    })
}

/// The (path id, epoch) of every row of a batch of a per-version table (`file_rules`,
/// `signatures`): the version the row belongs to.
fn version_keys(
    batch: &RecordBatch,
    path: &Path,
    what: &str,
) -> Result<Vec<(u128, u64)>, SinkError> {
    let source = column(batch, "source", path, what)?.as_string::<i32>();
    let file = column(batch, "path", path, what)?.as_string::<i32>();
    let file_bytes = column(batch, "path_bytes", path, what)?.as_binary::<i32>();
    let epoch = column(batch, "epoch", path, what)?.as_primitive::<UInt64Type>();
    Ok((0..batch.num_rows())
        .map(|row| {
            let name = if file_bytes.is_valid(row) {
                file_bytes.value(row)
            } else {
                file.value(row).as_bytes()
            };
            (path_id(source.value(row), name), epoch.value(row))
        })
        .collect())
}

/// The current version a row with this (path id, epoch) belongs to, if it is current.
fn current_version(
    current: &mut HashMap<u128, FileVersion>,
    (id, epoch): (u128, u64),
) -> Option<&mut FileVersion> {
    current.get_mut(&id).filter(|v| v.epoch == epoch)
}

/// What the files a restart reads are called in its errors.
const PART_FILE: &str = "part file";
const CHECKPOINT_FILE: &str = "checkpoint file";

/// The committed part files of `table`, by name. Unlike [`super::commit::parts`], a table
/// directory that exists but cannot be listed is an error: taken as empty, it would make a
/// restart forget every path it holds.
fn committed_parts(root: &Path, table: &str) -> Result<Vec<PathBuf>, SinkError> {
    let dir = root.join(table);
    let read_error = |source| SinkError::ReadIo {
        what: "table directory",
        path: dir.clone(),
        source,
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_error(e)),
    };
    let mut parts = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read_error)?;
        if part_epochs(&entry.file_name().to_string_lossy()).is_some() {
            parts.push(entry.path());
        }
    }
    parts.sort();
    Ok(parts)
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
    replace_file(
        &staging.join("signatures.parquet"),
        "signatures",
        &batches.signatures,
    )?;
    let _ = std::fs::remove_dir_all(&target);
    std::fs::rename(&staging, &target).map_err(|source| SinkError::Io {
        path: target.clone(),
        source,
    })?;
    sync_dir(&root.join(LOG_DIR))
}

fn corrupt(path: &Path, what: &str, reason: String) -> SinkError {
    SinkError::Read {
        path: path.to_path_buf(),
        reason: format!("{what} holds {reason}"),
    }
}

/// Opens the Parquet file `path` (a `what` of table `table`) for reading, after checking that its
/// columns are the table's: the readers below may then take every column as its schema type.
pub fn open_table_file(
    path: &Path,
    table: &str,
    what: &'static str,
    batch_rows: usize,
) -> Result<ParquetRecordBatchReader, SinkError> {
    let file = File::open(path).map_err(|source| SinkError::ReadIo {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let parquet_error = |source| SinkError::ReadParquet {
        what,
        path: path.to_path_buf(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_error)?;
    if let Some(detail) = schema::table(table).difference(builder.schema()) {
        return Err(SinkError::ReadSchema {
            what,
            path: path.to_path_buf(),
            table: table.to_string(),
            detail,
        });
    }
    builder
        .with_batch_size(batch_rows)
        .build()
        .map_err(parquet_error)
}

fn read(path: &Path, table: &str, what: &'static str) -> Result<Vec<RecordBatch>, SinkError> {
    open_table_file(path, table, what, 16 * 1024)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| SinkError::ReadArrow {
            what,
            path: path.to_path_buf(),
            source,
        })
}

fn column<'a>(
    batch: &'a RecordBatch,
    name: &str,
    path: &Path,
    what: &str,
) -> Result<&'a dyn Array, SinkError> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| corrupt(path, what, format!("no column {name}")))
}

/// The versions in a batch of the `files` table, read from `path`. The batch's columns are the
/// table's (see [`open_table_file`]); what their values say is checked here, so that a damaged
/// row is an error naming the file rather than a wrong version.
fn versions_of(
    batch: &RecordBatch,
    path: &Path,
    what: &str,
) -> Result<Vec<FileVersion>, SinkError> {
    let col = |name: &str| column(batch, name, path, what);
    let source = col("source")?.as_string::<i32>();
    let name = col("path")?.as_string::<i32>();
    let name_bytes = col("path_bytes")?.as_binary::<i32>();
    let op = col("op")?.as_string::<i32>();
    let epoch = col("epoch")?.as_primitive::<UInt64Type>();
    let size = col("size")?.as_primitive::<UInt64Type>();
    let hash = col("hash")?.as_fixed_size_binary();
    let lines = col("lines")?.as_primitive::<UInt64Type>();
    let entropy = col("entropy")?.as_primitive::<Float64Type>();
    let is_binary = col("is_binary")?.as_boolean();
    let language = col("language")?.as_string::<i32>();
    let skip_reason = col("skip_reason")?.as_string::<i32>();
    let bad = |row: usize, reason: String| {
        corrupt(
            path,
            what,
            format!("a row for {:?} with {reason}", name.value(row)),
        )
    };
    let mut versions = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let exact = if name_bytes.is_valid(row) {
            name_bytes.value(row).to_vec()
        } else {
            name.value(row).as_bytes().to_vec()
        };
        let deleted = match op.value(row) {
            "upsert" => false,
            "delete" => true,
            other => return Err(bad(row, format!("the op {other:?}"))),
        };
        let features = if hash.is_valid(row) {
            if !(lines.is_valid(row) && entropy.is_valid(row) && is_binary.is_valid(row)) {
                return Err(bad(row, "a hash but not every other feature".into()));
            }
            let language = if language.is_valid(row) {
                let name = language.value(row);
                let interned = crate::kernels::language::intern(name)
                    .ok_or_else(|| bad(row, format!("the unknown language {name:?}")))?;
                Some(Language(interned))
            } else {
                None
            };
            Some(Features {
                hash: hash
                    .value(row)
                    .try_into()
                    .map_err(|_| bad(row, "a hash that is not 16 bytes".into()))?,
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
                    .ok_or_else(|| bad(row, format!("the unknown skip_reason {reason:?}")))?,
            )
        } else {
            None
        };
        versions.push(FileVersion {
            source: source.value(row).to_string(),
            path: exact,
            deleted,
            epoch: epoch.value(row),
            size: size.is_valid(row).then(|| size.value(row)),
            features,
            skip_reason: skip,
            rule_counts: Vec::new(),
            matches: Vec::new(),
            signature: None,
        });
    }
    Ok(versions)
}
