//! Record batches -> Parquet part files (zstd, statistics on), written as hidden `*.parquet.tmp` files,
//! fsynced and renamed into place when complete, so that a reader never sees a half-written file.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::SinkError;
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

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(DEFAULT_ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(DEFAULT_ROW_GROUP_BYTES))
        .build()
}

/// Writes one table's part files for one worker.
pub struct PartWriter {
    table: &'static TableSchema,
    dir: PathBuf,
    worker: usize,
    epoch: u64,
    sequence: u32,
    open: Option<(ArrowWriter<File>, PathBuf, PathBuf)>,
    rows: u64,
    parts: Vec<PathBuf>,
}

impl PartWriter {
    pub fn new(lake: &Path, name: &str, worker: usize, epoch: u64) -> PartWriter {
        PartWriter {
            table: table(name),
            dir: lake.join(name),
            worker,
            epoch,
            sequence: 0,
            open: None,
            rows: 0,
            parts: Vec::new(),
        }
    }

    /// Appends a batch; refuses one whose schema is not the table's.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
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
            self.start()?;
        }
        let (writer, tmp, _) = self.open.as_mut().expect("started above");
        writer.write(batch).map_err(|source| SinkError::Parquet {
            path: tmp.clone(),
            source,
        })?;
        self.rows += batch.num_rows() as u64;
        if writer.bytes_written() + writer.in_progress_size() >= DEFAULT_PART_BYTES {
            self.close()?;
        }
        Ok(())
    }

    fn start(&mut self) -> Result<(), SinkError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| SinkError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let name = format!(
            "part-{:04}-{}-{}-{:04}.parquet",
            self.worker, self.epoch, self.epoch, self.sequence
        );
        self.sequence += 1;
        let target = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let file = File::create(&tmp).map_err(|source| SinkError::Io {
            path: tmp.clone(),
            source,
        })?;
        let writer =
            ArrowWriter::try_new(file, self.table.arrow.clone(), Some(writer_properties()))
                .map_err(|source| SinkError::Parquet {
                    path: tmp.clone(),
                    source,
                })?;
        self.open = Some((writer, tmp, target));
        Ok(())
    }

    /// Finishes the open part: footer, fsync, rename, fsync of the directory.
    fn close(&mut self) -> Result<(), SinkError> {
        let Some((writer, tmp, target)) = self.open.take() else {
            return Ok(());
        };
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SinkError::Io { path, source }
        };
        let file = writer.into_inner().map_err(|source| SinkError::Parquet {
            path: tmp.clone(),
            source,
        })?;
        file.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &target).map_err(io(&target))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
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
        if let Some((_, tmp, _)) = self.open.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// What one worker wrote, and what it saw, for the summary.
#[derive(Debug, Default, Clone)]
pub struct SinkReport {
    pub files: u64,
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

/// One worker's writers for the three tables.
pub struct LakeWriter {
    rules: RuleSet,
    files: PartWriter,
    file_rules: PartWriter,
    matches: PartWriter,
    report: SinkReport,
}

impl LakeWriter {
    pub fn new(lake: &Path, worker: usize, epoch: u64, rules: RuleSet) -> LakeWriter {
        LakeWriter {
            files: PartWriter::new(lake, "files", worker, epoch),
            file_rules: PartWriter::new(lake, "file_rules", worker, epoch),
            matches: PartWriter::new(lake, "matches", worker, epoch),
            report: SinkReport {
                rule_files: vec![0; rules.len()],
                rule_matches: vec![0; rules.len()],
                ..SinkReport::default()
            },
            rules,
        }
    }

    /// Writes the rows of `versions` to the three tables.
    pub fn write(&mut self, versions: &[FileVersion]) -> Result<(), SinkError> {
        if versions.is_empty() {
            return Ok(());
        }
        for v in versions {
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
        let batches = tables::build(versions, &self.rules).map_err(|source| SinkError::Arrow {
            table: "files".into(),
            source,
        })?;
        self.files.write(&batches.files)?;
        self.file_rules.write(&batches.file_rules)?;
        self.matches.write(&batches.matches)?;
        Ok(())
    }

    /// Closes every open part file.
    pub fn finish(self) -> Result<SinkReport, SinkError> {
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
        let mut writer = PartWriter::new(dir.path(), "files", 0, 1);
        let schema = Arc::new(Schema::new(vec![Field::new("path", DataType::Utf8, false)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["a"]))]).unwrap();
        let err = writer.write(&batch).unwrap_err();
        assert!(matches!(err, SinkError::SchemaMismatch { .. }), "{err}");
        let (rows, parts) = writer.finish().unwrap();
        assert_eq!((rows, parts.len()), (0, 0));
    }
}
