//! The commit protocol (DESIGN.md §4). Part files are written hidden under
//! `LAKE/_exoflow/pending/<table>/` and renamed there to
//! `part-<worker>-<first_epoch>-<last_epoch>-<seq>.parquet` when closed; once every part holding
//! rows of epochs up to E is closed, the commit fsyncs those parts and their directories
//! ([`Lake::sync_pending`]: off the workers, on the commit thread), then a commit record for E is
//! written atomically under
//! `LAKE/_exoflow/commits/`, and only then are the pending parts it covers renamed into their table
//! directories ([`Lake::publish`]): **a reader of `LAKE/<table>/*.parquet` sees committed rows
//! only**. The newest record is the lake's committed state: [`Lake::open`] finishes the renames
//! a crash interrupted (pending parts the record covers), and removes pending parts past it, which
//! a run that did not reach its commit wrote, with every temporary file, before a run writes
//! anything.
//!
//! `_exoflow/` stays small: the newest [`KEEP_RECORDS`] records, a lock file, and at most one
//! checkpoint (see `sink::restore`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::SinkError;
use crate::pipeline::Pipeline;

/// The lake's own directory; readers ignore names starting with `_`.
pub const LOG_DIR: &str = "_exoflow";
/// Commit records, named by sequence number.
const COMMITS_DIR: &str = "commits";
/// Closed part files not yet covered by a commit record, one directory per table.
const PENDING_DIR: &str = "pending";
/// Records kept; older ones are removed once a newer one is durable.
pub const KEEP_RECORDS: usize = 8;
/// The tables written as part files, one directory each.
pub const PART_TABLES: [&str; 6] = [
    "files",
    "file_rules",
    "matches",
    "stats_changes",
    "signatures",
    "near_duplicates",
];
/// The version of the commit record format.
const FORMAT: u32 = 1;

/// How far a replay of several snapshots got, so that running it again resumes after the last
/// snapshot it committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayProgress {
    pub source: String,
    /// The replayed paths, as given.
    pub inputs: Vec<String>,
    /// Snapshots committed, from the first.
    pub done: usize,
}

/// One commit: everything in the lake's part files up to `epoch` is committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub format: u32,
    /// Increases with every record.
    pub sequence: u64,
    pub epoch: u64,
    /// Milliseconds since the Unix epoch.
    pub committed_at_ms: u64,
    /// The pipeline the lake's rows were computed with.
    pub pipeline: String,
    pub rules: Vec<String>,
    /// The epoch of the checkpoint a restart reads (`_exoflow/checkpoint-<epoch>/`), if any.
    pub checkpoint: Option<u64>,
    #[serde(default)]
    pub replay: Option<ReplayProgress>,
    /// The replays of a cluster's other processes, one per source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_replays: Vec<ReplayProgress>,
    /// What the record commits: "epoch" or "compaction".
    pub action: String,
    /// The newest runs that wrote records, oldest first, each with the epoch of its last one:
    /// what a run published live through that epoch is what the lake holds, so a stream event id
    /// of that run (`EPOCH-RUN`) resumes from the lake after any epoch up to it, and no later one.
    #[serde(default)]
    pub runs: Vec<RunCommitted>,
}

/// A run (see [`crate::api::live::run_id`]) and the epoch of the last record it wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCommitted {
    pub run: String,
    pub through: u64,
}

/// Runs a commit record names (see [`CommitRecord::runs`]).
pub const KEEP_RUNS: usize = 32;

impl CommitRecord {
    /// Every replay's progress: this process's (or a cluster's first), then the cluster's others.
    pub fn replays(&self) -> impl Iterator<Item = &ReplayProgress> {
        self.replay.iter().chain(&self.cluster_replays)
    }

    /// The epoch of the last record `run` wrote, if it is among the runs this one names.
    pub fn committed_by(&self, run: &str) -> Option<u64> {
        (self.runs.iter().rev())
            .find(|r| r.run == run)
            .map(|r| r.through)
    }
}

/// The fingerprint and rule ids a run of `pipeline` (None: whatever the lake has) writes with;
/// refused when the lake's last commit is of another pipeline.
fn check_pipeline(
    root: &Path,
    pipeline: Option<&Pipeline>,
    head: &Option<CommitRecord>,
) -> Result<(String, Vec<String>), LakeError> {
    let (fingerprint, rules) = match (pipeline, head) {
        (Some(p), _) => (
            p.fingerprint.clone(),
            (0..p.rules.len() as u32)
                .map(|i| p.rules.id(i).to_string())
                .collect(),
        ),
        (None, Some(h)) => (h.pipeline.clone(), h.rules.clone()),
        (None, None) => (String::new(), Vec::new()),
    };
    if let Some(h) = head
        && h.pipeline != fingerprint
    {
        return Err(LakeError::PipelineChanged {
            path: root.to_path_buf(),
            lake: h.pipeline.clone(),
            lake_rules: h.rules.clone(),
            ours: fingerprint,
        });
    }
    Ok((fingerprint, rules))
}

/// What a publication moved into the tables: whichever process wrote them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// Part files, of every table.
    pub parts: usize,
    /// `files` part files, and their rows.
    pub files_parts: u64,
    pub files_rows: u64,
}

/// The rows of the Parquet file at `path`, from its footer.
fn rows_of(path: &Path) -> Result<u64, SinkError> {
    let file = File::open(path).map_err(io_error(path))?;
    let reader =
        parquet::file::reader::SerializedFileReader::new(file).map_err(|e| SinkError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    use parquet::file::reader::FileReader;
    Ok(reader.metadata().file_metadata().num_rows().max(0) as u64)
}

/// Why a lake cannot be opened for writing.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake {path} is in use by another exoflow process{holder}")]
    Locked { path: PathBuf, holder: String },
    #[error(
        "{path} holds part files but no {LOG_DIR}/ commit log: it was not written by this version of exoflow; write to a new lake"
    )]
    Foreign { path: PathBuf },
    #[error(
        "lake {path} holds results of another pipeline (fingerprint {lake}, rules {lake_rules:?}); this pipeline is {ours}: write to a new lake"
    )]
    PipelineChanged {
        path: PathBuf,
        lake: String,
        lake_rules: Vec<String>,
        ours: String,
    },
    #[error("cannot read commit record {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(transparent)]
    Sink(#[from] SinkError),
}

impl LakeError {
    /// The wrong lake for this run (in use, foreign, another pipeline), as opposed to a lake
    /// that is damaged or cannot be read or written, which is a runtime failure.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            LakeError::Locked { .. }
                | LakeError::Foreign { .. }
                | LakeError::PipelineChanged { .. }
        )
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A lake opened for writing: locked against other writers, cleaned of uncommitted files.
#[derive(Debug)]
pub struct Lake {
    root: PathBuf,
    /// The lock, held by the process that writes the commit records (none on a cluster's other
    /// processes, which only add part files).
    _lock: Option<File>,
    pipeline: String,
    rules: Vec<String>,
    head: Mutex<Option<CommitRecord>>,
    /// Held while a table directory's set of parts changes (a publish, a compaction's swap), so
    /// that a compaction never swaps away a part published while it built its copy.
    tables: Mutex<()>,
}

impl Lake {
    /// Opens (or creates) the lake at `root` for a run of `pipeline` (None: any pipeline, for
    /// maintenance), takes its lock, and removes what no commit record covers.
    pub fn open(root: &Path, pipeline: Option<&Pipeline>) -> Result<Lake, LakeError> {
        let log = root.join(LOG_DIR);
        if !log.exists() && PART_TABLES.iter().any(|t| !parts(root, t).is_empty()) {
            return Err(LakeError::Foreign {
                path: root.to_path_buf(),
            });
        }
        let commits = log.join(COMMITS_DIR);
        std::fs::create_dir_all(&commits).map_err(io_error(&commits))?;
        let lock_path = log.join("lock");
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        if lock.try_lock().is_err() {
            let mut holder = String::new();
            let _ = lock.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(LakeError::Locked {
                path: root.to_path_buf(),
                holder: if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                },
            });
        }
        lock.set_len(0).map_err(io_error(&lock_path))?;
        write!(lock, "{}", std::process::id()).map_err(io_error(&lock_path))?;
        let head = newest_record(&commits)?;
        let (fingerprint, rules) = check_pipeline(root, pipeline, &head)?;
        let lake = Lake {
            root: root.to_path_buf(),
            _lock: Some(lock),
            pipeline: fingerprint,
            rules,
            head: Mutex::new(head),
            tables: Mutex::new(()),
        };
        lake.remove_uncommitted()?;
        Ok(lake)
    }

    /// Opens the lake at `root` for a process of a cluster other than the first, which adds
    /// part files to it and nothing else: it takes no lock and removes nothing (the first
    /// process does both), and it reads the last commit to check the pipeline and to continue
    /// from it. A lake that does not exist yet is created by the first process.
    pub fn open_peer(root: &Path, pipeline: &Pipeline) -> Result<Lake, LakeError> {
        let commits = root.join(LOG_DIR).join(COMMITS_DIR);
        let head = match commits.is_dir() {
            true => newest_record(&commits)?,
            false => None,
        };
        let (pipeline, rules) = check_pipeline(root, Some(pipeline), &head)?;
        Ok(Lake {
            root: root.to_path_buf(),
            _lock: None,
            pipeline,
            rules,
            head: Mutex::new(head),
            tables: Mutex::new(()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The newest commit record.
    pub fn head(&self) -> Option<CommitRecord> {
        self.head.lock().expect("head lock").clone()
    }

    /// The last committed epoch; 0 for a new lake.
    pub fn committed(&self) -> u64 {
        self.head().map_or(0, |h| h.epoch)
    }

    /// The directory of the checkpoint at `epoch`.
    pub fn checkpoint_dir(&self, epoch: u64) -> PathBuf {
        checkpoint_dir(&self.root, epoch)
    }

    /// Holds the table directories still while `f` changes one (see [`Lake::publish`]).
    pub fn with_tables_locked<T>(&self, f: impl FnOnce() -> T) -> T {
        let _guard = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        f()
    }

    /// Records a compaction of the running lake: a record at the committed epoch, written under
    /// the same lock as every commit, so that it never names an older epoch than the head.
    pub fn record_compaction(&self) -> Result<CommitRecord, SinkError> {
        self.write_record(None, "compaction", None, Vec::new())
    }

    /// The names of the pending parts of `table` whose epochs are all at most `epoch`, in its
    /// pending directory.
    fn pending_through(
        &self,
        table: &str,
        epoch: u64,
    ) -> Result<(PathBuf, Vec<String>), SinkError> {
        let pending = pending_dir(&self.root, table);
        let names = match std::fs::read_dir(&pending) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|name| part_epochs(name).is_some_and(|(_, last)| last <= epoch))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_error(&pending)(e)),
        };
        Ok((pending, names))
    }

    /// Makes the pending parts of epochs through `epoch` durable (the parts, then their
    /// directories, where their renames are), before a commit record names them. Their writers
    /// only renamed them: fsyncs on the workers would hold the dataflow up for the disk.
    pub fn sync_pending(&self, epoch: u64) -> Result<usize, SinkError> {
        let mut synced = 0;
        for table in PART_TABLES {
            let (pending, covered) = self.pending_through(table, epoch)?;
            for name in &covered {
                let part = pending.join(name);
                File::open(&part)
                    .and_then(|f| f.sync_all())
                    .map_err(io_error(&part))?;
            }
            if !covered.is_empty() {
                sync_dir(&pending)?;
            }
            synced += covered.len();
        }
        Ok(synced)
    }

    /// Moves the pending parts whose epochs are all at most `epoch` into their table directories,
    /// durably; `epoch` must be committed. Returns how many moved.
    pub fn publish(&self, epoch: u64) -> Result<Published, SinkError> {
        self.with_tables_locked(|| {
            let mut published = Published::default();
            for table in PART_TABLES {
                let (pending, ready) = self.pending_through(table, epoch)?;
                if ready.is_empty() {
                    continue;
                }
                let dir = self.root.join(table);
                std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
                for name in &ready {
                    let target = dir.join(name);
                    if table == "files" {
                        published.files_rows += rows_of(&pending.join(name))?;
                    }
                    std::fs::rename(pending.join(name), &target).map_err(io_error(&target))?;
                }
                sync_dir(&dir)?;
                sync_dir(&pending)?;
                published.parts += ready.len();
                if table == "files" {
                    published.files_parts += ready.len() as u64;
                }
            }
            Ok(published)
        })
    }

    /// Finishes the publication a crash interrupted, then removes temporary files, parts past the
    /// committed epoch, compaction leftovers and checkpoints the head does not name.
    fn remove_uncommitted(&self) -> Result<(), SinkError> {
        let committed = self.committed();
        self.publish(committed)?;
        let mut removed = 0usize;
        for table in PART_TABLES {
            let pending = pending_dir(&self.root, table);
            if let Ok(entries) = std::fs::read_dir(&pending) {
                for entry in entries.filter_map(|e| e.ok()) {
                    remove(&entry.path())?;
                    removed += 1;
                }
                sync_dir(&pending)?;
            }
            let dir = self.root.join(table);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(|e| e.ok()) {
                let name = entry.file_name().to_string_lossy().into_owned();
                let stale = is_temporary(&name)
                    || part_epochs(&name).is_some_and(|(_, last)| last > committed);
                if stale {
                    remove(&entry.path())?;
                    removed += 1;
                }
            }
            sync_dir(&dir)?;
        }
        let tmp = self.root.join(".stats_current.parquet.tmp");
        if tmp.exists() {
            remove(&tmp)?;
        }
        let keep = self.head().and_then(|h| h.checkpoint);
        let log = self.root.join(LOG_DIR);
        for entry in std::fs::read_dir(&log)
            .map_err(io_error(&log))?
            .filter_map(|e| e.ok())
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let wanted = keep.is_some_and(|k| entry.path() == self.checkpoint_dir(k));
            if (name.starts_with("checkpoint-") || name.starts_with("staging")) && !wanted {
                std::fs::remove_dir_all(entry.path()).map_err(io_error(&entry.path()))?;
            }
        }
        if removed > 0 {
            tracing::info!(
                removed,
                committed,
                "removed part files past the last commit"
            );
        }
        Ok(())
    }

    /// Writes a commit record for `epoch`, durably, and removes records older than the newest
    /// [`KEEP_RECORDS`]. `checkpoint` is kept from the previous record when None, and so are
    /// the replays' progress when `replays` is empty (the first is this process's).
    pub fn commit(
        &self,
        epoch: u64,
        action: &str,
        checkpoint: Option<u64>,
        replays: Vec<ReplayProgress>,
    ) -> Result<CommitRecord, SinkError> {
        self.write_record(Some(epoch), action, checkpoint, replays)
    }

    /// Writes the next record: at `epoch`, or at the head's epoch when None.
    fn write_record(
        &self,
        epoch: Option<u64>,
        action: &str,
        checkpoint: Option<u64>,
        mut replays: Vec<ReplayProgress>,
    ) -> Result<CommitRecord, SinkError> {
        let mut head = self.head.lock().expect("head lock");
        let (replay, cluster_replays) = match (replays.is_empty(), head.as_ref()) {
            (true, Some(h)) => (h.replay.clone(), h.cluster_replays.clone()),
            (true, None) => (None, Vec::new()),
            (false, _) => {
                let first = replays.remove(0);
                (Some(first), replays)
            }
        };
        let previous = head.as_ref();
        let epoch = epoch.unwrap_or_else(|| previous.map_or(0, |h| h.epoch));
        let run = crate::api::live::run_id();
        let mut runs: Vec<RunCommitted> = previous.map_or(Vec::new(), |h| h.runs.clone());
        runs.retain(|r| *r.run != *run);
        runs.push(RunCommitted {
            run: run.to_string(),
            through: epoch,
        });
        runs.drain(..runs.len().saturating_sub(KEEP_RUNS));
        let record = CommitRecord {
            format: FORMAT,
            sequence: previous.map_or(1, |h| h.sequence + 1),
            epoch,
            committed_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            pipeline: self.pipeline.clone(),
            rules: self.rules.clone(),
            checkpoint: checkpoint.or(previous.and_then(|h| h.checkpoint)),
            replay,
            cluster_replays,
            action: action.to_string(),
            runs,
        };
        let dir = self.root.join(LOG_DIR).join(COMMITS_DIR);
        let text = serde_json::to_vec_pretty(&record).expect("a record serializes");
        write_atomically(&dir.join(record_name(record.sequence)), &text)?;
        if record.sequence > KEEP_RECORDS as u64 {
            let old = dir.join(record_name(record.sequence - KEEP_RECORDS as u64));
            if old.exists() {
                remove(&old)?;
            }
        }
        if let Some(old) = previous.and_then(|h| h.checkpoint)
            && Some(old) != record.checkpoint
        {
            let stale = self.checkpoint_dir(old);
            std::fs::remove_dir_all(&stale).map_err(io_error(&stale))?;
        }
        *head = Some(record.clone());
        Ok(record)
    }
}

/// Where the closed, not yet committed part files of `table` wait (see [`Lake::publish`]).
pub fn pending_dir(root: &Path, table: &str) -> PathBuf {
    root.join(LOG_DIR).join(PENDING_DIR).join(table)
}

/// The directory of the checkpoint at `epoch` in the lake at `root` (see `sink::restore`).
pub fn checkpoint_dir(root: &Path, epoch: u64) -> PathBuf {
    root.join(LOG_DIR).join(format!("checkpoint-{epoch}"))
}

fn record_name(sequence: u64) -> String {
    format!("{sequence:020}.json")
}

/// The commit records the lake at `root` keeps (the newest [`KEEP_RECORDS`]), oldest first;
/// one that cannot be read is left out.
pub fn records(root: &Path) -> Vec<CommitRecord> {
    let Ok(entries) = std::fs::read_dir(root.join(LOG_DIR).join(COMMITS_DIR)) else {
        return Vec::new();
    };
    let mut records: Vec<CommitRecord> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|text| serde_json::from_slice::<CommitRecord>(&text).ok())
        .filter(|r| r.format == FORMAT)
        .collect();
    records.sort_by_key(|r| r.sequence);
    records
}

/// The newest readable record in `dir`. Records are written atomically, so an unreadable one is
/// damage from outside and an error, not something to skip.
fn newest_record(dir: &Path) -> Result<Option<CommitRecord>, LakeError> {
    let newest = std::fs::read_dir(dir)
        .map_err(|source| {
            LakeError::Sink(SinkError::ReadIo {
                what: "commit log",
                path: dir.to_path_buf(),
                source,
            })
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let sequence = name.strip_suffix(".json")?.parse::<u64>().ok()?;
            Some((sequence, e.path()))
        })
        .max();
    let Some((_, path)) = newest else {
        return Ok(None);
    };
    let text = std::fs::read(&path).map_err(|source| {
        LakeError::Sink(SinkError::ReadIo {
            what: "commit record",
            path: path.clone(),
            source,
        })
    })?;
    let record: CommitRecord = serde_json::from_slice(&text).map_err(|e| LakeError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if record.format != FORMAT {
        return Err(LakeError::Corrupt {
            path,
            reason: format!(
                "it is of format {}, and this exoflow reads format {FORMAT}",
                record.format
            ),
        });
    }
    Ok(Some(record))
}

/// A temporary file of ours: hidden, ending in `.tmp`.
fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// The epochs in a part file name `part-<writer>-<first>-<last>-<seq>.parquet`.
pub fn part_epochs(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let mut fields = rest.split('-');
    let _writer = fields.next()?;
    let first = fields.next()?.parse().ok()?;
    let last = fields.next()?.parse().ok()?;
    Some((first, last))
}

/// The part files of `table`, by name.
pub fn parts(root: &Path, table: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root.join(table)) else {
        return Vec::new();
    };
    let mut parts: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| part_epochs(&e.file_name().to_string_lossy()).is_some())
        .map(|e| e.path())
        .collect();
    parts.sort();
    parts
}

fn remove(path: &Path) -> Result<(), SinkError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(path)(e)),
        _ => Ok(()),
    }
}

/// Fsyncs a directory, so that renames and removals in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Writes `bytes` as `target`: a hidden temporary file, fsynced, renamed, and the directory
/// fsynced. A reader sees the old file or the new one, never part of one.
pub fn write_atomically(target: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, target).map_err(io_error(target))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_give_their_epochs() {
        assert_eq!(part_epochs("part-0001-3-7-0002.parquet"), Some((3, 7)));
        assert_eq!(part_epochs("part-c-1-9-0000.parquet"), Some((1, 9)));
        assert_eq!(part_epochs(".part-0001-3-0002.parquet.tmp"), None);
        assert_eq!(part_epochs("notes.txt"), None);
    }

    #[test]
    fn open_removes_what_no_record_covers_and_locks() {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = Pipeline::default_pack();
        let lake = Lake::open(dir.path(), Some(&pipeline)).unwrap();
        assert_eq!(lake.committed(), 0);
        let files = dir.path().join("files");
        std::fs::create_dir_all(&files).unwrap();
        for name in [
            "part-0000-1-2-0000.parquet",
            "part-0001-3-3-0001.parquet",
            ".part-0000-77-0002.parquet.tmp",
        ] {
            std::fs::write(files.join(name), b"x").unwrap();
        }
        lake.commit(2, "epoch", None, Vec::new()).unwrap();
        let second = Lake::open(dir.path(), Some(&pipeline));
        assert!(
            matches!(second, Err(LakeError::Locked { .. })),
            "{second:?}"
        );
        drop(lake);
        let lake = Lake::open(dir.path(), Some(&pipeline)).unwrap();
        assert_eq!(lake.committed(), 2);
        let left: Vec<String> = std::fs::read_dir(&files)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["part-0000-1-2-0000.parquet"]);
        for epoch in 3..3 + 2 * KEEP_RECORDS as u64 {
            lake.commit(epoch, "epoch", None, Vec::new()).unwrap();
        }
        let records = std::fs::read_dir(dir.path().join(LOG_DIR).join(COMMITS_DIR))
            .unwrap()
            .count();
        assert_eq!(records, KEEP_RECORDS);
    }

    #[test]
    fn open_publishes_pending_parts_a_record_covers_and_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = Pipeline::default_pack();
        let lake = Lake::open(dir.path(), Some(&pipeline)).unwrap();
        let pending = pending_dir(dir.path(), "matches");
        std::fs::create_dir_all(&pending).unwrap();
        for name in [
            "part-0000-1-2-0000.parquet",
            "part-0001-3-3-0001.parquet",
            ".part-0000-77-0002.parquet.tmp",
        ] {
            std::fs::write(pending.join(name), b"x").unwrap();
        }
        // A crash right after the record for epoch 2, before the publication.
        lake.commit(2, "epoch", None, Vec::new()).unwrap();
        assert!(parts(dir.path(), "matches").is_empty());
        drop(lake);
        Lake::open(dir.path(), Some(&pipeline)).unwrap();
        assert_eq!(
            parts(dir.path(), "matches"),
            [dir.path().join("matches/part-0000-1-2-0000.parquet")]
        );
        assert_eq!(std::fs::read_dir(&pending).unwrap().count(), 0);
    }

    #[test]
    fn another_pipeline_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path(), Some(&Pipeline::default_pack())).unwrap();
        lake.commit(1, "epoch", None, Vec::new()).unwrap();
        drop(lake);
        let other = Pipeline::from_json(r#"{"rules": []}"#, "t").unwrap();
        let err = Lake::open(dir.path(), Some(&other)).unwrap_err();
        assert!(matches!(err, LakeError::PipelineChanged { .. }), "{err}");
    }
}
