//! Record batches -> Parquet part files (zstd, statistics on), written as hidden `*.parquet.tmp` files
//! under `_exoflow/pending/<table>/`, renamed to their part name there when complete, and fsynced by
//! the commit that covers them (`Lake::sync_pending`). They move into the table directory only once
//! a commit record covers them (`Lake::publish`), so that a reader never sees a half-written file,
//! nor a row that a crash could take back.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::SinkError;
use super::commit::{pending_dir, sync_dir};
use super::schema::{TableSchema, table};
use super::tables;
use crate::pipeline::RuleSet;
use crate::version::{FileVersion, SkipReason};

/// A part file is closed and a new one started once it holds this many bytes.
pub const DEFAULT_PART_BYTES: usize = 256 << 20;
/// Rows per row group at most.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 128 * 1024;
/// The writer buffers a whole row group in memory; this bounds it.
pub const DEFAULT_ROW_GROUP_BYTES: usize = 32 << 20;
/// ... and this for `signatures`, whose rows are a kilobyte each and which every worker writes
/// beside its other tables.
pub const SIGNATURE_ROW_GROUP_BYTES: usize = 4 << 20;

/// How a table's part files are written: [`writer_properties`], with smaller row groups for
/// `signatures`.
fn table_properties(table: &str) -> WriterProperties {
    match table {
        "signatures" => writer_properties()
            .into_builder()
            .set_max_row_group_bytes(Some(SIGNATURE_ROW_GROUP_BYTES))
            .build(),
        _ => writer_properties(),
    }
}

/// How every Parquet file of the lake is written: zstd level 3, page statistics, bounded row
/// groups.
pub(crate) fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(DEFAULT_ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(DEFAULT_ROW_GROUP_BYTES))
        .set_column_dictionary_enabled(ColumnPath::from("path"), false)
        .set_column_dictionary_enabled(ColumnPath::from("path_bytes"), false)
        .set_column_dictionary_enabled(ColumnPath::from("hash"), false)
        .set_column_dictionary_enabled(ColumnPath::from("excerpt"), false)
        // MinHash values are uniformly random: compression costs time and saves nothing.
        .set_column_dictionary_enabled(ColumnPath::from("signature"), false)
        .set_column_compression(ColumnPath::from("signature"), Compression::UNCOMPRESSED)
        .build()
}

/// Writes one table's part files for one worker.
pub struct PartWriter {
    table: &'static TableSchema,
    dir: PathBuf,
    worker: usize,
    sequence: u32,
    open: Option<OpenPart>,
    rows: u64,
    parts: Vec<PathBuf>,
}

/// A part file being written: its writer, temporary path and the epochs of its rows.
struct OpenPart {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    first_epoch: u64,
    last_epoch: u64,
}

impl PartWriter {
    pub fn new(lake: &Path, name: &str, worker: usize) -> PartWriter {
        PartWriter {
            table: table(name),
            dir: pending_dir(lake, name),
            worker,
            sequence: 0,
            open: None,
            rows: 0,
            parts: Vec::new(),
        }
    }

    /// Appends a batch of rows of the epochs `first..=last`; refuses one whose schema is not the
    /// table's.
    pub fn write(&mut self, batch: &RecordBatch, first: u64, last: u64) -> Result<(), SinkError> {
        if batch.schema() != self.table.arrow {
            return Err(SinkError::SchemaMismatch {
                table: self.table.spec.table.clone(),
                detail: format!("got {:?}", batch.schema()),
            });
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.open.is_none() {
            self.start(first)?;
        }
        let part = self.open.as_mut().expect("started above");
        part.writer
            .write(batch)
            .map_err(|source| SinkError::Parquet {
                path: part.tmp.clone(),
                source,
            })?;
        part.first_epoch = part.first_epoch.min(first);
        part.last_epoch = part.last_epoch.max(last);
        self.rows += batch.num_rows() as u64;
        if part.writer.bytes_written() + part.writer.in_progress_size() >= DEFAULT_PART_BYTES {
            self.close()?;
        }
        Ok(())
    }

    fn start(&mut self, epoch: u64) -> Result<(), SinkError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| SinkError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let tmp = self.dir.join(format!(
            ".part-{:04}-{}-{:04}.parquet.tmp",
            self.worker,
            std::process::id(),
            self.sequence
        ));
        let file = File::create(&tmp).map_err(|source| SinkError::Io {
            path: tmp.clone(),
            source,
        })?;
        let writer = ArrowWriter::try_new(
            file,
            self.table.arrow.clone(),
            Some(table_properties(&self.table.spec.table)),
        )
        .map_err(|source| SinkError::Parquet {
            path: tmp.clone(),
            source,
        })?;
        self.open = Some(OpenPart {
            writer,
            tmp,
            first_epoch: epoch,
            last_epoch: epoch,
        });
        Ok(())
    }

    /// Finishes the open part: footer, rename to its part name (still pending: the commit that
    /// covers it makes it durable and then publishes it, see `Lake::sync_pending`).
    pub fn close(&mut self) -> Result<(), SinkError> {
        let Some(part) = self.open.take() else {
            return Ok(());
        };
        let target = self.dir.join(format!(
            "part-{:04}-{}-{}-{:04}.parquet",
            self.worker, part.first_epoch, part.last_epoch, self.sequence
        ));
        self.sequence += 1;
        let finished = (part.writer.into_inner())
            .map_err(|source| SinkError::Parquet {
                path: part.tmp.clone(),
                source,
            })
            .and_then(|_file| {
                std::fs::rename(&part.tmp, &target).map_err(|source| SinkError::Io {
                    path: target.clone(),
                    source,
                })
            });
        if let Err(error) = finished {
            let _ = std::fs::remove_file(&part.tmp);
            return Err(error);
        }
        self.parts.push(target);
        Ok(())
    }

    /// Closes the open part and returns the parts written.
    pub fn finish(mut self) -> Result<(u64, Vec<PathBuf>), SinkError> {
        self.close()?;
        Ok((self.rows, std::mem::take(&mut self.parts)))
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        // A writer dropped without finish (an error elsewhere) leaves no temporary file behind.
        if let Some(part) = self.open.take() {
            let _ = std::fs::remove_file(part.tmp);
        }
    }
}

/// Finishes a Parquet writer whose file is `tmp`: footer, fsync, rename to `target`, fsync of the
/// directory. A reader sees either no file or the whole file at `target`.
pub fn finish_atomically(
    writer: ArrowWriter<File>,
    tmp: &Path,
    target: &Path,
) -> Result<(), SinkError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SinkError::Io { path, source }
    };
    let file = writer.into_inner().map_err(|source| SinkError::Parquet {
        path: tmp.to_path_buf(),
        source,
    })?;
    file.sync_all().map_err(io(tmp))?;
    std::fs::rename(tmp, target).map_err(io(target))?;
    sync_dir(target.parent().unwrap_or(Path::new(".")))
}

/// Writes `batch` as the whole file `target` (of table `name`), replacing it atomically.
pub fn replace_file(target: &Path, name: &str, batch: &RecordBatch) -> Result<(), SinkError> {
    let schema = table(name);
    if batch.schema() != schema.arrow {
        return Err(SinkError::SchemaMismatch {
            table: name.to_string(),
            detail: format!("got {:?}", batch.schema()),
        });
    }
    let dir = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| SinkError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let file_name = target.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{file_name}.tmp"));
    let parquet_error = |source| SinkError::Parquet {
        path: tmp.clone(),
        source,
    };
    let file = File::create(&tmp).map_err(|source| SinkError::Io {
        path: tmp.clone(),
        source,
    })?;
    let mut writer = ArrowWriter::try_new(file, schema.arrow.clone(), Some(writer_properties()))
        .map_err(parquet_error)?;
    writer.write(batch).map_err(parquet_error)?;
    finish_atomically(writer, &tmp, target)
}

/// What one worker wrote, and what it saw, for the summary.
#[derive(Debug, Default, Clone)]
pub struct SinkReport {
    /// Upserts written (new or changed versions).
    pub files: u64,
    /// Deletes written.
    pub deleted: u64,
    pub bytes: u64,
    pub skipped: [u64; SkipReason::ALL.len()],
    /// Per rule: files with a match, and matches.
    pub rule_files: Vec<u64>,
    pub rule_matches: Vec<u64>,
    pub rows_files: u64,
    pub rows_file_rules: u64,
    pub rows_matches: u64,
    pub parts: Vec<PathBuf>,
}

impl SinkReport {
    /// Adds another worker's report to this one.
    pub fn merge(&mut self, other: SinkReport) {
        self.files += other.files;
        self.deleted += other.deleted;
        self.bytes += other.bytes;
        for (a, b) in self.skipped.iter_mut().zip(other.skipped) {
            *a += b;
        }
        merge_vec(&mut self.rule_files, &other.rule_files);
        merge_vec(&mut self.rule_matches, &other.rule_matches);
        self.rows_files += other.rows_files;
        self.rows_file_rules += other.rows_file_rules;
        self.rows_matches += other.rows_matches;
        self.parts.extend(other.parts);
    }
}

fn merge_vec(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

/// Versions gathered before they are written as one batch per table.
pub const WRITE_BATCH_ROWS: usize = 4096;

/// One worker's writers for the three tables.
pub struct LakeWriter {
    rules: RuleSet,
    pending: Vec<FileVersion>,
    files: PartWriter,
    file_rules: PartWriter,
    matches: PartWriter,
    signatures: PartWriter,
    report: SinkReport,
    open_epochs: Option<(u64, u64)>,
}

impl LakeWriter {
    pub fn new(lake: &Path, worker: usize, rules: RuleSet) -> LakeWriter {
        LakeWriter {
            pending: Vec::new(),
            files: PartWriter::new(lake, "files", worker),
            file_rules: PartWriter::new(lake, "file_rules", worker),
            matches: PartWriter::new(lake, "matches", worker),
            signatures: PartWriter::new(lake, "signatures", worker),
            report: SinkReport {
                rule_files: vec![0; rules.len()],
                rule_matches: vec![0; rules.len()],
                ..SinkReport::default()
            },
            rules,
            open_epochs: None,
        }
    }

    /// Writes the rows of `versions` to the three tables.
    /// Takes a version for the tables; rows are written in batches of [`WRITE_BATCH_ROWS`],
    /// since every write into a Parquet writer has a fixed cost.
    pub fn push(&mut self, v: FileVersion) -> Result<(), SinkError> {
        self.open_epochs = Some(match self.open_epochs {
            Some((first, last)) => (first.min(v.epoch), last.max(v.epoch)),
            None => (v.epoch, v.epoch),
        });
        if v.deleted {
            self.report.deleted += 1;
        } else {
            self.report.files += 1;
            if v.features.is_some() {
                self.report.bytes += v.size.unwrap_or(0);
            }
            if let Some(reason) = v.skip_reason {
                self.report.skipped[reason as usize] += 1;
            }
            for &(rule, n) in &v.rule_counts {
                self.report.rule_files[rule as usize] += 1;
                self.report.rule_matches[rule as usize] += n;
            }
        }
        self.pending.push(v);
        if self.pending.len() >= WRITE_BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the pending versions to the three tables.
    fn flush(&mut self) -> Result<(), SinkError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let versions = std::mem::take(&mut self.pending);
        let first = versions.iter().map(|v| v.epoch).min().unwrap_or(0);
        let last = versions.iter().map(|v| v.epoch).max().unwrap_or(0);
        let batches = tables::build(&versions, &self.rules).map_err(|source| SinkError::Arrow {
            table: "files".into(),
            source,
        })?;
        self.files.write(&batches.files, first, last)?;
        self.file_rules.write(&batches.file_rules, first, last)?;
        self.matches.write(&batches.matches, first, last)?;
        self.signatures.write(&batches.signatures, first, last)?;
        Ok(())
    }

    /// The epochs of the rows written since the parts were last closed.
    pub fn open_epochs(&self) -> Option<(u64, u64)> {
        self.open_epochs
    }

    /// Writes what is pending and closes the open part files, for a commit.
    pub fn close_parts(&mut self) -> Result<(), SinkError> {
        self.flush()?;
        self.files.close()?;
        self.file_rules.close()?;
        self.matches.close()?;
        self.signatures.close()?;
        self.open_epochs = None;
        Ok(())
    }

    /// Writes what is pending and closes every open part file.
    pub fn finish(mut self) -> Result<SinkReport, SinkError> {
        self.flush()?;
        let mut report = self.report;
        let (rows, parts) = self.files.finish()?;
        report.rows_files = rows;
        report.parts.extend(parts);
        let (rows, parts) = self.file_rules.finish()?;
        report.rows_file_rules = rows;
        report.parts.extend(parts);
        let (rows, parts) = self.matches.finish()?;
        report.rows_matches = rows;
        report.parts.extend(parts);
        let (_, parts) = self.signatures.finish()?;
        report.parts.extend(parts);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn a_batch_with_another_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = PartWriter::new(dir.path(), "files", 0);
        let schema = Arc::new(Schema::new(vec![Field::new("path", DataType::Utf8, false)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["a"]))]).unwrap();
        let err = writer.write(&batch, 1, 1).unwrap_err();
        assert!(matches!(err, SinkError::SchemaMismatch { .. }), "{err}");
        let (rows, parts) = writer.finish().unwrap();
        assert_eq!((rows, parts.len()), (0, 0));
    }
}
