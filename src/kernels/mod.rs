//! Contents batch -> [`FileVersion`]s: the kernel stage. Content features come from a [`Backend`] over
//! the whole batch; language and rule matches are added per file.

pub mod cpu;
pub mod cuda;
pub mod device;
pub mod language;
pub mod matches;
pub mod minhash;

use std::sync::Arc;

use arrow_array::{Array, BinaryArray};

use crate::batch::ContentBatch;
use crate::pipeline::{Pipeline, RuleSet};
use crate::version::{Features, FileVersion, Language};

/// What the batch kernels compute for every row of a batch (rows without content, and rows
/// that get no signature, hold values the caller ignores).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BatchColumns {
    pub lines: Vec<u64>,
    pub entropy: Vec<f64>,
    pub is_binary: Vec<bool>,
    /// `k` values per row, row after row, when the launch asked for signatures; the rows that
    /// [`MinHashJob::wants`] refuses hold [`minhash::EMPTY`]s.
    pub signatures: Vec<u32>,
}

impl BatchColumns {
    pub fn with_capacity(rows: usize) -> BatchColumns {
        BatchColumns {
            lines: Vec::with_capacity(rows),
            entropy: Vec::with_capacity(rows),
            is_binary: Vec::with_capacity(rows),
            signatures: Vec::new(),
        }
    }
}

/// The signatures a launch computes: scheme `exoflow-oph-1` with these parameters, for the rows
/// that [`MinHashJob::wants`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinHashJob {
    /// Bytes per shingle (1..=8).
    pub shingle: usize,
    /// Values per signature.
    pub k: usize,
    /// Contents shorter than this get no signature.
    pub min_size: u64,
    /// Binary contents get no signature.
    pub skip_binary: bool,
}

impl MinHashJob {
    /// The job a pipeline asks for, if any.
    pub fn of(pipeline: &Pipeline) -> Option<MinHashJob> {
        pipeline.near_duplicates.map(|n| MinHashJob {
            shingle: n.shingle,
            k: n.signature,
            min_size: n.min_size,
            skip_binary: !pipeline.scan_binary,
        })
    }

    /// Whether a content of `len` bytes with this binary flag gets a signature.
    pub fn wants(&self, len: usize, is_binary: bool) -> bool {
        len as u64 >= self.min_size && !(self.skip_binary && is_binary)
    }
}

/// A place kernels run. The CPU backend is the reference; every other backend must produce
/// identical columns for the same batch.
pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    /// The name, with the device where there is one: `cpu`, `cuda (NVIDIA H200, sm_90)`.
    fn description(&self) -> String {
        self.name().to_string()
    }
    /// One worker's own kernels: on a device, its own stream and buffers.
    fn worker(&self) -> Box<dyn WorkerKernels>;
}

/// One worker's kernels. A launch may run asynchronously (on a device), while the worker hashes,
/// detects languages and matches rules on the CPU; `wait` returns its columns.
pub trait WorkerKernels: Send {
    /// Starts the batch kernels over `contents` (their values buffer and offsets as they are).
    fn launch(&mut self, contents: &BinaryArray, minhash: Option<MinHashJob>);
    /// The columns of the last launch, once they are complete.
    fn wait(&mut self) -> BatchColumns;
}

/// Runs the kernels of a pipeline over batches.
pub struct KernelStage {
    backend: Box<dyn Backend>,
    pipeline: Pipeline,
    minhash: Option<MinHashJob>,
}

impl KernelStage {
    pub fn new(backend: Box<dyn Backend>, pipeline: Pipeline) -> KernelStage {
        KernelStage {
            backend,
            minhash: MinHashJob::of(&pipeline),
            pipeline,
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.pipeline.rules
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// See [`Backend::description`].
    pub fn backend_description(&self) -> String {
        self.backend.description()
    }

    /// A worker's kernels, for [`KernelStage::run`].
    pub fn worker(&self) -> Box<dyn WorkerKernels> {
        self.backend.worker()
    }

    /// Featurizes a batch: one [`FileVersion`] per entry, in entry order. The batch kernels run
    /// on `kernels` while hash, language and rules run here. The batch's contents are handed
    /// back, so that their buffers can be reused for the next batch.
    pub fn run(
        &self,
        kernels: &mut dyn WorkerKernels,
        batch: ContentBatch,
    ) -> (Vec<FileVersion>, BinaryArray) {
        let ContentBatch { entries, contents } = batch;
        kernels.launch(&contents, self.minhash);
        let mut versions = Vec::with_capacity(entries.len());
        // Hash and language of each row with content, computed while the kernels run.
        let mut cpu_features = Vec::with_capacity(entries.len());
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
                signature: None,
            };
            let mut hash_language = ([0; 16], None);
            if contents.is_valid(row) {
                let content = contents.value(row);
                hash_language = (
                    cpu::hash128(content),
                    language::detect(&version.path, content).map(Language),
                );
                // The same definition as the kernels' flag, which is the one written.
                if !cpu::is_binary(content) || self.pipeline.scan_binary {
                    let found = matches::scan(content, &self.pipeline);
                    version.rule_counts = found.counts;
                    version.matches = found.rows;
                }
            }
            cpu_features.push(hash_language);
            versions.push(version);
        }
        let columns = kernels.wait();
        for (row, (version, (hash, language))) in versions.iter_mut().zip(cpu_features).enumerate()
        {
            if !contents.is_valid(row) {
                continue;
            }
            let content = contents.value(row);
            let is_binary = columns.is_binary[row];
            version.features = Some(Features {
                hash,
                lines: columns.lines[row],
                entropy: columns.entropy[row],
                is_binary,
                language,
            });
            if let Some(job) = self.minhash
                && job.wants(content.len(), is_binary)
            {
                let values = &columns.signatures[row * job.k..(row + 1) * job.k];
                version.signature = Some(Arc::from(values));
            }
        }
        (versions, contents)
    }
}
