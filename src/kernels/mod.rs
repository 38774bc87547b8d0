//! Contents batch -> [`FileVersion`]s: the kernel stage. Content features come from a [`Backend`] over
//! the whole batch; language and rule matches are added per file.

pub mod cpu;
pub mod language;
pub mod matches;

use arrow_array::{Array, BinaryArray};

use crate::batch::ContentBatch;
use crate::pipeline::{Pipeline, RuleSet};
use crate::version::{Features, FileVersion, Language};

/// Per-file content features of a batch, one entry per row (rows without content hold the
/// features of empty content and are ignored by the caller).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ContentColumns {
    pub hash: Vec<[u8; 16]>,
    pub lines: Vec<u64>,
    pub entropy: Vec<f64>,
    pub is_binary: Vec<bool>,
}

impl ContentColumns {
    pub fn with_capacity(rows: usize) -> ContentColumns {
        ContentColumns {
            hash: Vec::with_capacity(rows),
            lines: Vec::with_capacity(rows),
            entropy: Vec::with_capacity(rows),
            is_binary: Vec::with_capacity(rows),
        }
    }

    pub fn push(&mut self, hash: [u8; 16], lines: u64, entropy: f64, is_binary: bool) {
        self.hash.push(hash);
        self.lines.push(lines);
        self.entropy.push(entropy);
        self.is_binary.push(is_binary);
    }
}

/// A place kernels run. The CPU backend is the reference; every other backend must produce
/// identical columns for the same batch.
pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    /// Hash, lines, entropy and binary flag for every row of `contents`.
    fn content_features(&self, contents: &BinaryArray) -> ContentColumns;
}

/// Runs the kernels of a pipeline over batches.
pub struct KernelStage {
    backend: Box<dyn Backend>,
    pipeline: Pipeline,
}

impl KernelStage {
    pub fn new(backend: Box<dyn Backend>, pipeline: Pipeline) -> KernelStage {
        KernelStage { backend, pipeline }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.pipeline.rules
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Featurizes a batch: one [`FileVersion`] per entry, in entry order. The batch's contents
    /// are handed back, so that their buffers can be reused for the next batch.
    pub fn run(&self, batch: ContentBatch) -> (Vec<FileVersion>, BinaryArray) {
        let ContentBatch { entries, contents } = batch;
        let columns = self.backend.content_features(&contents);
        let mut versions = Vec::with_capacity(entries.len());
        for (row, entry) in entries.into_iter().enumerate() {
            let mut version = FileVersion {
                source: entry.source,
                path: entry.path,
                deleted: entry.deleted,
                epoch: entry.epoch,
                size: entry.size,
                features: None,
                skip_reason: entry.skip,
                rule_counts: Vec::new(),
                matches: Vec::new(),
            };
            if contents.is_valid(row) {
                let content = contents.value(row);
                let is_binary = columns.is_binary[row];
                version.features = Some(Features {
                    hash: columns.hash[row],
                    lines: columns.lines[row],
                    entropy: columns.entropy[row],
                    is_binary,
                    language: language::detect(&version.path, content).map(Language),
                });
                if !is_binary || self.pipeline.scan_binary {
                    let found = matches::scan(content, &self.pipeline);
                    version.rule_counts = found.counts;
                    version.matches = found.rows;
                }
            }
            versions.push(version);
        }
        (versions, contents)
    }
}
