//! Small committed part files -> larger ones, each table directory replaced in one atomic swap.
//!
//! [`compact`] opens the lake for maintenance ([`Lake::open`]: the lock, so no replay or watch
//! writes meanwhile, and the removal of uncommitted files and crash leftovers). Per table, the
//! parts below the minimum size, in epoch order, are grouped until a group reaches the target size;
//! each group of two or more becomes one part `part-compact-<first>-<last>-<seq>.parquet`, with the
//! rows of its inputs in their order.
//!
//! The new table is built beside the old one, in `_exoflow/staging-compact-<table>/`: hard links
//! of every file that is not an input, and the merged parts, written hidden, fsynced and renamed.
//! Then `renameat2(RENAME_EXCHANGE)` swaps the two directories, which is the commit point:
//!
//! - **A reader that lists `LAKE/<table>/*.parquet` sees the old set or the new set**, never both,
//!   never neither. A query that listed the old set and opens one of its inputs after the swap
//!   fails with a missing file; it never returns a wrong answer, and running it again succeeds.
//! - **A crash before the swap leaves the table unchanged**, and one after it the new table; in
//!   both cases the other directory is left in `_exoflow/staging-*`, which the next
//!   [`Lake::open`] removes.
//!
//! The old directories are removed after the last swap and [`LISTING_GRACE`] later, so that a
//! reader that was listing one of them when it was swapped finishes its listing first. A commit
//! record with the action `compaction` then records the replacement; it changes no epoch, and a
//! crash before it leaves compacted tables without one, which is harmless.
//!
//! A restart reads merged parts like any other: their names carry the epochs of their rows. One
//! that spans the epoch of the checkpoint is read whole, its rows up to the checkpoint skipped.
//!
//! **A running writer compacts too** ([`compact_running`], started by the commit coordinator in
//! the background after a commit): the same swap, with the merged parts written first and the
//! links and the swap made under [`Lake::with_tables_locked`], so that no part published
//! meanwhile is left behind. Its policy is size-tiered ([`AutoCompact`]): parts below the
//! minimum size fall in tiers that grow by a factor of [`AutoCompact::fanout`], and a tier is
//! merged once it holds that many parts, so every row is rewritten about once per tier, and a
//! table holds at most `fanout - 1` small parts per tier however long the run.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;

use super::SinkError;
use super::commit::{LOG_DIR, Lake, LakeError, PART_TABLES, part_epochs, sync_dir};
use super::parquet::{finish_atomically, writer_properties};
use super::restore::open_table_file;
use super::schema::{TableSchema, table};

/// Parts of at least this many bytes are left as they are (64 MiB).
pub const DEFAULT_MIN_BYTES: u64 = 64 << 20;
/// A group of small parts is closed once it holds this many bytes (128 MiB).
pub const DEFAULT_TARGET_BYTES: u64 = 128 << 20;
/// How long the old table directories stay after the last swap, for readers listing them.
pub const LISTING_GRACE: Duration = Duration::from_millis(500);
/// Rows per batch read from an input part.
const READ_BATCH_ROWS: usize = 8192;
/// Parts of one size tier that a running writer merges at once, by default.
pub const DEFAULT_AUTO_FANOUT: usize = 8;

/// When a running writer compacts (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoCompact {
    /// A size tier is merged once it holds this many parts; tiers grow by this factor.
    pub fanout: usize,
    /// Parts at least this large are left as they are.
    pub min_bytes: u64,
    /// A merged part holds about this many bytes.
    pub target_bytes: u64,
}

impl Default for AutoCompact {
    fn default() -> Self {
        AutoCompact {
            fanout: DEFAULT_AUTO_FANOUT,
            min_bytes: DEFAULT_MIN_BYTES,
            target_bytes: DEFAULT_TARGET_BYTES,
        }
    }
}

impl AutoCompact {
    /// The size tier of a part of `bytes`: parts within a factor of `fanout` share one.
    fn tier(&self, bytes: u64) -> u32 {
        let factor = self.fanout.max(2) as u64;
        bytes.max(1).ilog(factor)
    }

    /// The groups to merge in a table holding `parts`: every tier below the minimum size that
    /// holds `fanout` parts or more, in epoch order, cut at the target size.
    fn plan(&self, parts: &[Part]) -> Vec<Vec<Part>> {
        let mut tiers: std::collections::BTreeMap<u32, Vec<Part>> = Default::default();
        for part in parts.iter().filter(|p| p.bytes < self.min_bytes) {
            tiers
                .entry(self.tier(part.bytes))
                .or_default()
                .push(part.clone());
        }
        tiers
            .into_values()
            .filter(|tier| tier.len() >= self.fanout.max(2))
            .flat_map(|tier| plan(&tier, self.min_bytes, self.target_bytes))
            .collect()
    }

    /// Whether some table of the lake at `root` has a tier to merge.
    pub fn due(&self, root: &Path) -> Result<bool, CompactError> {
        for name in PART_TABLES {
            if !self.plan(&list(&root.join(name))?.parts).is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Compacts the tables of `lake` while a run writes it (see the module documentation); the
/// caller is the only compactor. Returns what it did per table that changed.
pub fn compact_running(
    lake: &Lake,
    policy: &AutoCompact,
) -> Result<Vec<TableCompaction>, CompactError> {
    let root = lake.root();
    // Names carry the sequence of the head record now, times a thousand: each compaction writes
    // a record, so no two compactions give one name.
    let mut sequence = lake.head().map_or(1, |h| h.sequence + 1) * 1000;
    let mut done = Vec::new();
    let mut old_dirs = Vec::new();
    for name in PART_TABLES {
        let dir = root.join(name);
        let listing = list(&dir)?;
        let groups = policy.plan(&listing.parts);
        if groups.is_empty() {
            continue;
        }
        let staging = root.join(LOG_DIR).join(format!("staging-auto-{name}"));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io_error(&staging))?;
        }
        std::fs::create_dir(&staging).map_err(io_error(&staging))?;
        let inputs: HashSet<&str> = groups.iter().flatten().map(|p| p.name.as_str()).collect();
        let swapped = merge_groups(&staging, table(name), &listing, &groups, &mut sequence)
            .and_then(|written| {
                // Only now the table's set is held still: what was published while the merged
                // parts were written is linked across too.
                lake.with_tables_locked(|| {
                    let now = list(&dir)?;
                    link_kept(&dir, &staging, &now, &inputs)?;
                    sync_dir(&staging)?;
                    exchange(&staging, &dir)?;
                    Ok((written, now))
                })
            });
        let (written, now) = match swapped {
            Ok(done) => done,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(error);
            }
        };
        sync_dir(root)?;
        sync_dir(&root.join(LOG_DIR))?;
        let bytes_before: u64 = now.parts.iter().map(|p| p.bytes).sum();
        let merged: u64 = now
            .parts
            .iter()
            .filter(|p| inputs.contains(p.name.as_str()))
            .map(|p| p.bytes)
            .sum();
        done.push(TableCompaction {
            table: name.to_string(),
            parts_before: now.parts.len(),
            bytes_before,
            parts_after: now.parts.len() - inputs.len() + written.len(),
            bytes_after: bytes_before - merged + written.iter().sum::<u64>(),
            inputs: inputs.len(),
            outputs: written.len(),
        });
        tracing::info!(
            table = name,
            inputs = inputs.len(),
            outputs = written.len(),
            "compacted a table of the running lake"
        );
        old_dirs.push(staging);
    }
    if !old_dirs.is_empty() {
        lake.record_compaction()?;
        std::thread::sleep(LISTING_GRACE);
        for dir in &old_dirs {
            std::fs::remove_dir_all(dir).map_err(io_error(dir))?;
        }
        sync_dir(&root.join(LOG_DIR))?;
    }
    Ok(done)
}

/// What to compact.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// The tables to compact, from [`PART_TABLES`]; all of them when empty.
    pub tables: Vec<String>,
    /// Parts smaller than this are merged.
    pub min_bytes: u64,
    /// A merged part holds about this many bytes (it may exceed it by less than one input).
    pub target_bytes: u64,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            tables: Vec::new(),
            min_bytes: DEFAULT_MIN_BYTES,
            target_bytes: DEFAULT_TARGET_BYTES,
        }
    }
}

/// Why a lake was not compacted. The usage errors ([`CompactError::is_usage`]) are found before
/// anything is written.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("{path} is not a directory: nothing to compact")]
    NoLake { path: PathBuf },
    #[error("{path} is not an exoflow lake: it has no {LOG_DIR}/ commit log")]
    NotALake { path: PathBuf },
    #[error("unknown table {name:?}: the tables with part files are {}", PART_TABLES.join(", "))]
    UnknownTable { name: String },
    #[error("cannot compact with {reason}")]
    Options { reason: String },
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(
        "cannot compact {table}: it holds the directory {entry}, and compaction keeps only files across the swap; the table is unchanged"
    )]
    Directory { table: PathBuf, entry: String },
    #[error(
        "cannot swap {table} with its compacted copy: the filesystem does not support renameat2(RENAME_EXCHANGE), which compaction needs to replace a table atomically; the table is unchanged"
    )]
    NoExchange {
        table: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CompactError {
    /// Bad input rather than a failure: no lake, an unknown table, a lake in use.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            CompactError::NoLake { .. }
                | CompactError::NotALake { .. }
                | CompactError::UnknownTable { .. }
                | CompactError::Options { .. }
                | CompactError::Directory { .. }
        ) || matches!(self, CompactError::Lake(e) if e.is_usage())
    }
}

/// What compaction did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCompaction {
    pub table: String,
    pub parts_before: usize,
    pub bytes_before: u64,
    pub parts_after: usize,
    pub bytes_after: u64,
    /// Parts merged, and the parts they became.
    pub inputs: usize,
    pub outputs: usize,
}

/// What a compaction did, for the summary.
#[derive(Debug, Clone)]
pub struct CompactReport {
    pub lake: PathBuf,
    pub min_bytes: u64,
    pub tables: Vec<TableCompaction>,
    /// The sequence number of the `compaction` commit record; None when nothing was merged.
    pub record: Option<u64>,
    pub elapsed: Duration,
}

/// What a table directory holds.
#[derive(Debug, Default)]
struct Listing {
    /// Part files, by name.
    parts: Vec<Part>,
    /// The names of its other files, kept as they are.
    others: Vec<String>,
}

/// One part file of a table.
#[derive(Debug, Clone)]
struct Part {
    path: PathBuf,
    name: String,
    first: u64,
    last: u64,
    bytes: u64,
}

/// Compacts the lake at `root`: see the module documentation. An error part way leaves the lake
/// as a crash at that moment would: every table whole, and leftovers the next open removes.
pub fn compact(root: &Path, options: &CompactOptions) -> Result<CompactReport, CompactError> {
    let started = Instant::now();
    // A target of 0 closes every group at its first part, so nothing would ever merge; a
    // minimum above the target would merge merged parts again on every run.
    if options.target_bytes == 0 {
        return Err(CompactError::Options {
            reason: "a target size of 0: merged parts would hold one part each".into(),
        });
    }
    if options.min_bytes > options.target_bytes {
        return Err(CompactError::Options {
            reason: format!(
                "a minimum size ({}) above the target size ({}): merged parts would be merged again by every compaction",
                size_text(options.min_bytes),
                size_text(options.target_bytes)
            ),
        });
    }
    if let Some(name) = options
        .tables
        .iter()
        .find(|t| !PART_TABLES.contains(&t.as_str()))
    {
        return Err(CompactError::UnknownTable { name: name.clone() });
    }
    let tables = PART_TABLES
        .into_iter()
        .filter(|t| options.tables.is_empty() || options.tables.iter().any(|name| name == t));
    if !root.is_dir() {
        return Err(CompactError::NoLake {
            path: root.to_path_buf(),
        });
    }
    if !root.join(LOG_DIR).is_dir() {
        return Err(CompactError::NotALake {
            path: root.to_path_buf(),
        });
    }
    let lake = Lake::open(root, None)?;
    // Output names carry the sequence of the record this compaction writes, so that they differ
    // from every name an earlier compaction gave, which a slow reader may still hold.
    let mut sequence = lake.head().map_or(1, |h| h.sequence + 1);
    let mut report = CompactReport {
        lake: root.to_path_buf(),
        min_bytes: options.min_bytes,
        tables: Vec::new(),
        record: None,
        elapsed: Duration::ZERO,
    };
    // Every table is listed before any is changed, so that a table compaction cannot handle
    // stops it before it has done anything.
    let listed = tables
        .map(|name| list(&root.join(name)).map(|listing| (name, listing)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut old_dirs = Vec::new();
    for (name, listing) in listed {
        let (summary, old) = compact_table(root, name, &listing, options, &mut sequence)?;
        report.tables.push(summary);
        old_dirs.extend(old);
    }
    if !old_dirs.is_empty() {
        let record = lake.commit(lake.committed(), "compaction", None, Vec::new())?;
        report.record = Some(record.sequence);
        std::thread::sleep(LISTING_GRACE);
        for dir in &old_dirs {
            std::fs::remove_dir_all(dir).map_err(io_error(dir))?;
        }
        sync_dir(&root.join(LOG_DIR))?;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Compacts one table; returns what it did and, when it swapped, the old directory to remove.
fn compact_table(
    root: &Path,
    name: &'static str,
    listing: &Listing,
    options: &CompactOptions,
    sequence: &mut u64,
) -> Result<(TableCompaction, Option<PathBuf>), CompactError> {
    let dir = root.join(name);
    let parts = &listing.parts;
    let mut summary = TableCompaction {
        table: name.to_string(),
        parts_before: parts.len(),
        bytes_before: parts.iter().map(|p| p.bytes).sum(),
        parts_after: parts.len(),
        bytes_after: parts.iter().map(|p| p.bytes).sum(),
        inputs: 0,
        outputs: 0,
    };
    let groups = plan(parts, options.min_bytes, options.target_bytes);
    if groups.is_empty() {
        return Ok((summary, None));
    }
    let staging = root.join(LOG_DIR).join(format!("staging-compact-{name}"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io_error(&staging))?;
    }
    std::fs::create_dir(&staging).map_err(io_error(&staging))?;
    let inputs: HashSet<&str> = groups.iter().flatten().map(|p| p.name.as_str()).collect();
    let built = build(
        &dir,
        &staging,
        table(name),
        listing,
        &inputs,
        &groups,
        sequence,
    )
    .and_then(|written| {
        sync_dir(&staging)?;
        exchange(&staging, &dir)?;
        Ok(written)
    });
    let written = match built {
        Ok(written) => written,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(error);
        }
    };
    // The swap is durable once both parents are; until then a crash may show the old table,
    // which is as correct as the new one.
    sync_dir(root)?;
    sync_dir(&root.join(LOG_DIR))?;
    let kept: u64 = parts
        .iter()
        .filter(|p| !inputs.contains(p.name.as_str()))
        .map(|p| p.bytes)
        .sum();
    summary.inputs = inputs.len();
    summary.outputs = written.len();
    summary.parts_after = parts.len() - inputs.len() + written.len();
    summary.bytes_after = kept + written.iter().sum::<u64>();
    tracing::info!(
        table = name,
        inputs = inputs.len(),
        outputs = written.len(),
        bytes_before = summary.bytes_before,
        bytes_after = summary.bytes_after,
        "swapped in the compacted table"
    );
    Ok((summary, Some(staging)))
}

/// The part files of the table directory `dir`, and the names of its other files. A missing
/// directory is an empty table; a directory inside it is refused, since links cannot carry it.
fn list(dir: &Path) -> Result<Listing, CompactError> {
    let list_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SinkError::ReadIo {
            what: "table directory",
            path,
            source,
        }
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Listing::default()),
        Err(e) => return Err(list_error(dir)(e).into()),
    };
    let mut parts = Vec::new();
    let mut others = Vec::new();
    for entry in entries {
        let entry = entry.map_err(list_error(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(list_error(&path))?;
        if meta.is_dir() {
            return Err(CompactError::Directory {
                table: dir.to_path_buf(),
                entry: path.display().to_string(),
            });
        }
        match part_epochs(&name) {
            Some((first, last)) if meta.is_file() => parts.push(Part {
                path,
                name,
                first,
                last,
                bytes: meta.len(),
            }),
            _ => others.push(name),
        }
    }
    parts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Listing { parts, others })
}

/// The groups to merge: the parts below `min_bytes` by (first epoch, last epoch, name), cut
/// greedily once a group holds `target_bytes`; groups of one part are left alone.
fn plan(parts: &[Part], min_bytes: u64, target_bytes: u64) -> Vec<Vec<Part>> {
    let mut small: Vec<&Part> = parts.iter().filter(|p| p.bytes < min_bytes).collect();
    small.sort_by(|a, b| (a.first, a.last, &a.name).cmp(&(b.first, b.last, &b.name)));
    let mut groups = Vec::new();
    let mut group: Vec<Part> = Vec::new();
    let mut bytes = 0u64;
    for part in small {
        group.push(part.clone());
        bytes += part.bytes;
        if bytes >= target_bytes {
            groups.push(std::mem::take(&mut group));
            bytes = 0;
        }
    }
    groups.push(group);
    groups.retain(|g| g.len() >= 2);
    groups
}

/// Fills `staging` with the new table: links of what `dir` keeps (all but the `inputs`) and the
/// merged `groups`. Returns the sizes of the merged parts.
fn build(
    dir: &Path,
    staging: &Path,
    schema: &TableSchema,
    listing: &Listing,
    inputs: &HashSet<&str>,
    groups: &[Vec<Part>],
    sequence: &mut u64,
) -> Result<Vec<u64>, CompactError> {
    link_kept(dir, staging, listing, inputs)?;
    merge_groups(staging, schema, listing, groups, sequence)
}

/// Links every file of `listing` (in `dir`) but the `inputs` into `staging`.
fn link_kept(
    dir: &Path,
    staging: &Path,
    listing: &Listing,
    inputs: &HashSet<&str>,
) -> Result<(), CompactError> {
    let kept = listing
        .parts
        .iter()
        .map(|p| p.name.as_str())
        .filter(|n| !inputs.contains(n))
        .chain(listing.others.iter().map(String::as_str));
    for name in kept {
        let link = staging.join(name);
        std::fs::hard_link(dir.join(name), &link).map_err(io_error(&link))?;
    }
    Ok(())
}

/// Writes each of `groups` merged into one part in `staging`; returns their sizes.
fn merge_groups(
    staging: &Path,
    schema: &TableSchema,
    listing: &Listing,
    groups: &[Vec<Part>],
    sequence: &mut u64,
) -> Result<Vec<u64>, CompactError> {
    // An output never takes a name the old directory has: a reader that listed the old set
    // must not open a merged part in place of an input.
    let mut taken: HashSet<String> = listing
        .parts
        .iter()
        .map(|p| p.name.clone())
        .chain(listing.others.iter().cloned())
        .collect();
    let mut written = Vec::new();
    for group in groups {
        let first = group.iter().map(|p| p.first).min().unwrap_or(0);
        let last = group.iter().map(|p| p.last).max().unwrap_or(0);
        let name = loop {
            let name = format!("part-compact-{first}-{last}-{:04}.parquet", *sequence);
            *sequence += 1;
            if taken.insert(name.clone()) {
                break name;
            }
        };
        written.push(merge(group, schema, &staging.join(name))?);
    }
    Ok(written)
}

/// Writes the rows of `inputs`, in order, as the part `target`; returns its size.
fn merge(inputs: &[Part], schema: &TableSchema, target: &Path) -> Result<u64, CompactError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let file_name = target.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{file_name}.tmp"));
    let file = File::create(&tmp).map_err(io_error(&tmp))?;
    let parquet_error = |source| SinkError::Parquet {
        path: tmp.clone(),
        source,
    };
    let mut writer = ArrowWriter::try_new(file, schema.arrow.clone(), Some(writer_properties()))
        .map_err(parquet_error)?;
    for input in inputs {
        // The columns are checked to be the table's, so the batches can take its schema below.
        let reader = open_table_file(
            &input.path,
            &schema.spec.table,
            "part file",
            READ_BATCH_ROWS,
        )?;
        for batch in reader {
            let batch = batch.map_err(|source| SinkError::ReadArrow {
                what: "part file",
                path: input.path.clone(),
                source,
            })?;
            // The table's own schema, so the file carries exactly what every other part does.
            let batch = RecordBatch::try_new(schema.arrow.clone(), batch.columns().to_vec())
                .map_err(|source| SinkError::Arrow {
                    table: schema.spec.table.clone(),
                    source,
                })?;
            writer.write(&batch).map_err(parquet_error)?;
        }
    }
    finish_atomically(writer, &tmp, target)?;
    let bytes = std::fs::metadata(target).map_err(io_error(target))?.len();
    Ok(bytes)
}

/// Swaps the directories `a` and `b` in one step.
fn exchange(a: &Path, b: &Path) -> Result<(), CompactError> {
    match rename_exchange(a, b) {
        Ok(()) => Ok(()),
        Err(source)
            if matches!(source.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS))
                || source.kind() == std::io::ErrorKind::Unsupported =>
        {
            Err(CompactError::NoExchange {
                table: b.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(io_error(b)(source).into()),
    }
}

#[cfg(target_os = "linux")]
fn rename_exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn rename_exchange(_a: &Path, _b: &Path) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "renameat2 is Linux-only",
    ))
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A size from the command line: bytes, or a number with a unit (KiB, MiB, GiB; kB, MB, GB).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = text
        .trim()
        .parse()
        .map_err(|e| format!("{text:?} is not a size (like 128MiB or 1048576): {e}"))?;
    Ok(size.as_u64())
}

/// A size as given on the command line, in binary units.
fn size_text(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

fn parts_text(n: usize, bytes: u64) -> String {
    let noun = if n == 1 { "part" } else { "parts" };
    format!("{n} {noun} ({})", crate::progress::human_bytes(bytes))
}

impl fmt::Display for CompactReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.record {
            Some(_) => writeln!(
                f,
                "compacted {} in {:.2} s",
                self.lake.display(),
                self.elapsed.as_secs_f64()
            )?,
            None => writeln!(
                f,
                "nothing to compact in {}: no table has two parts below {}",
                self.lake.display(),
                size_text(self.min_bytes)
            )?,
        }
        for t in &self.tables {
            let before = parts_text(t.parts_before, t.bytes_before);
            if t.inputs == 0 {
                writeln!(f, "  {}: {before}, unchanged", t.table)?;
            } else {
                let after = parts_text(t.parts_after, t.bytes_after);
                writeln!(
                    f,
                    "  {}: {before} -> {after} ({} merged into {})",
                    t.table, t.inputs, t.outputs
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &str, bytes: u64) -> Part {
        let (first, last) = part_epochs(name).unwrap();
        Part {
            path: PathBuf::from(name),
            name: name.to_string(),
            first,
            last,
            bytes,
        }
    }

    fn names(groups: &[Vec<Part>]) -> Vec<Vec<&str>> {
        groups
            .iter()
            .map(|g| g.iter().map(|p| p.name.as_str()).collect())
            .collect()
    }

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("128MiB"), Ok(128 << 20));
        assert_eq!(parse_size("64 mib"), Ok(64 << 20));
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("-1").is_err());
        assert_eq!(size_text(64 << 20), "64.0 MiB");
    }

    #[test]
    fn small_parts_are_grouped_in_epoch_order_until_the_target() {
        let parts = [
            part("part-0001-2-2-0001.parquet", 10),
            part("part-0000-1-1-0000.parquet", 10),
            part("part-0000-2-2-0001.parquet", 10),
            part("part-0000-3-3-0002.parquet", 100),
            part("part-0000-4-4-0003.parquet", 10),
            part("part-0000-5-5-0004.parquet", 10),
            part("part-0000-6-6-0005.parquet", 10),
        ];
        let groups = plan(&parts, 50, 30);
        assert_eq!(
            names(&groups),
            [
                vec![
                    "part-0000-1-1-0000.parquet",
                    "part-0000-2-2-0001.parquet",
                    "part-0001-2-2-0001.parquet"
                ],
                vec![
                    "part-0000-4-4-0003.parquet",
                    "part-0000-5-5-0004.parquet",
                    "part-0000-6-6-0005.parquet"
                ]
            ]
        );
        // A lone small part is left alone, and so is everything at or above the minimum size.
        assert!(plan(&parts[3..5], 50, 30).is_empty());
        assert!(plan(&parts, 10, 30).is_empty());
    }

    #[test]
    fn a_missing_lake_or_one_without_a_log_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let options = CompactOptions::default();
        let missing = compact(&dir.path().join("nope"), &options).unwrap_err();
        assert!(matches!(missing, CompactError::NoLake { .. }), "{missing}");
        let bare = compact(dir.path(), &options).unwrap_err();
        assert!(matches!(bare, CompactError::NotALake { .. }), "{bare}");
        assert!(bare.is_usage());
        assert!(!dir.path().join(LOG_DIR).exists(), "nothing was written");
        let unknown = compact(
            dir.path(),
            &CompactOptions {
                tables: vec!["stats_current".into()],
                ..CompactOptions::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(unknown, CompactError::UnknownTable { .. }),
            "{unknown}"
        );
    }

    #[test]
    fn a_table_holding_a_directory_is_refused_before_anything_changes() {
        let dir = tempfile::tempdir().unwrap();
        Lake::open(dir.path(), None).unwrap();
        let files = dir.path().join("files");
        std::fs::create_dir_all(files.join("date=2024-01-01")).unwrap();
        let err = compact(dir.path(), &CompactOptions::default()).unwrap_err();
        assert!(matches!(err, CompactError::Directory { .. }), "{err}");
        assert!(err.is_usage());
        assert!(files.join("date=2024-01-01").is_dir());
    }

    #[test]
    fn exchange_swaps_two_directories() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("from-a"), "").unwrap();
        exchange(&a, &b).unwrap();
        assert!(b.join("from-a").exists() && !a.join("from-a").exists());
        let missing = exchange(&a, &dir.path().join("missing")).unwrap_err();
        assert!(matches!(missing, CompactError::Sink(_)), "{missing}");
    }
}
