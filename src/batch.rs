//! FileEvents -> one Arrow batch of contents (a single values buffer + offsets, null where a file was not
//! read) with one [`BatchEntry`] per event. The values buffer is what a kernel, CPU or GPU, takes as is.

use arrow_array::{Array, BinaryArray};
use arrow_buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};

use crate::read::{Reader, Skip};
use crate::source::{EntryType, EventKind, FileEvent, Member, Origin};
use crate::version::SkipReason;

/// Bytes of content after which a batch is full.
pub const DEFAULT_BATCH_BYTES: usize = 16 << 20;
/// Files after which a batch is full.
pub const DEFAULT_BATCH_FILES: usize = 1024;

// A batch is full once it holds DEFAULT_BATCH_BYTES, so it holds at most that much before one
// more file of up to MAX_FILE_BYTES_LIMIT: together they must fit the 32-bit Arrow offsets.
const _: () =
    assert!(DEFAULT_BATCH_BYTES as u64 + crate::pipeline::MAX_FILE_BYTES_LIMIT < i32::MAX as u64);

/// Everything about one event except its content.
#[derive(Debug, Clone)]
pub struct BatchEntry {
    pub source: String,
    pub path: Vec<u8>,
    pub epoch: u64,
    pub deleted: bool,
    pub size: Option<u64>,
    pub skip: Option<SkipReason>,
}

/// A batch: entry `i` has its content at row `i` of `contents` (null when not read).
#[derive(Debug, Clone)]
pub struct ContentBatch {
    pub entries: Vec<BatchEntry>,
    pub contents: BinaryArray,
}

impl ContentBatch {
    /// The content of entry `index`, if it was read.
    pub fn content(&self, index: usize) -> Option<&[u8]> {
        self.contents
            .is_valid(index)
            .then(|| self.contents.value(index))
    }
}

/// Reads events' files into a growing batch.
#[derive(Debug)]
pub struct Batcher {
    reader: Reader,
    entries: Vec<BatchEntry>,
    values: Vec<u8>,
    offsets: Vec<i32>,
    valid: Vec<bool>,
}

impl Batcher {
    pub fn new(max_file_bytes: u64) -> Batcher {
        Batcher {
            reader: Reader::new(max_file_bytes),
            entries: Vec::new(),
            values: Vec::new(),
            offsets: vec![0],
            valid: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries of files that are there (read, or recorded with a skip reason): every entry
    /// but the deletes.
    pub fn files(&self) -> usize {
        self.entries.iter().filter(|e| !e.deleted).count()
    }

    /// Content bytes gathered so far.
    pub fn bytes(&self) -> usize {
        self.values.len()
    }

    /// Whether the batch reached its bounds.
    pub fn is_full(&self) -> bool {
        self.len() >= DEFAULT_BATCH_FILES || self.bytes() >= DEFAULT_BATCH_BYTES
    }

    /// Adds one event, reading its file. A file that cannot be read becomes an entry with a skip
    /// reason (and a log line with its path when that is an error), never an error of the batch.
    pub fn push(&mut self, event: FileEvent) {
        let FileEvent {
            source,
            path,
            kind,
            epoch,
            entry,
            origin,
            ..
        } = event;
        let outcome = if kind == EventKind::Delete {
            None
        } else {
            Some(self.read(entry, origin))
        };
        let (size, skip) = match outcome {
            None => (None, None),
            Some(Ok(len)) => (Some(len), None),
            Some(Err(skip)) => {
                if let Some(error) = &skip.error {
                    tracing::warn!(
                        path = %String::from_utf8_lossy(&path),
                        reason = skip.reason.as_str(),
                        error = %error,
                        "file not read"
                    );
                }
                (skip.size, Some(skip.reason))
            }
        };
        // Unreachable within the limits (checked below at compile time), but a batch must never
        // wrap an offset: content that would not fit is dropped and the file recorded as too
        // large, as if it had been over max_file_bytes.
        let (skip, end) = match i32::try_from(self.values.len()) {
            Ok(end) => (skip, end),
            Err(_) => {
                let start = self.offsets.last().copied().unwrap_or(0);
                self.values.truncate(start as usize);
                (Some(SkipReason::TooLarge), start)
            }
        };
        let read = kind == EventKind::Upsert && skip.is_none();
        self.valid.push(read);
        self.offsets.push(end);
        self.entries.push(BatchEntry {
            source,
            path,
            epoch,
            deleted: kind == EventKind::Delete,
            size,
            skip,
        });
    }

    fn read(&mut self, entry: EntryType, origin: Origin) -> Result<u64, Skip> {
        let skip = |reason, size| Skip {
            reason,
            size,
            error: None,
        };
        match (entry, origin) {
            (EntryType::Symlink, _) => Err(skip(SkipReason::Symlink, None)),
            (EntryType::NotRegular, Origin::Unlistable(reason)) => Err(Skip {
                error: Some(std::io::Error::other(reason)),
                ..skip(SkipReason::Unreadable, None)
            }),
            (EntryType::NotRegular, _) => Err(skip(SkipReason::NotRegular, None)),
            (EntryType::File, Origin::Disk(file)) => self.reader.read(&file, &mut self.values),
            (EntryType::File, Origin::Member(Member::Regular(content))) => {
                if content.len() as u64 > self.reader.max_file_bytes() {
                    return Err(skip(SkipReason::TooLarge, Some(content.len() as u64)));
                }
                self.values.extend_from_slice(&content);
                Ok(content.len() as u64)
            }
            (EntryType::File, Origin::Member(Member::TooLarge(size))) => {
                Err(skip(SkipReason::TooLarge, Some(size)))
            }
            (EntryType::File, Origin::Member(_)) => Err(skip(SkipReason::NotRegular, None)),
            (EntryType::File, Origin::Unlistable(reason)) => Err(Skip {
                error: Some(std::io::Error::other(reason)),
                ..skip(SkipReason::Unreadable, None)
            }),
        }
    }

    /// Takes the gathered batch, leaving the batcher empty.
    pub fn finish(&mut self) -> ContentBatch {
        self.reader.forget_directories();
        let values = std::mem::take(&mut self.values);
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        let valid = std::mem::take(&mut self.valid);
        let contents = BinaryArray::new(
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            Buffer::from_vec(values),
            Some(NullBuffer::from(valid)),
        );
        ContentBatch {
            entries: std::mem::take(&mut self.entries),
            contents,
        }
    }

    /// Takes back the buffers of a finished batch's contents, when nothing else holds them, so
    /// that the next batch is read into memory that is already allocated and mapped.
    pub fn recycle(&mut self, contents: BinaryArray) {
        let (offsets, values, _) = contents.into_parts();
        if self.values.capacity() == 0
            && let Ok(mut values) = values.into_vec::<u8>()
        {
            values.clear();
            self.values = values;
        }
        if self.offsets.capacity() <= 1
            && let Ok(mut offsets) = offsets.into_inner().into_inner().into_vec::<i32>()
        {
            offsets.clear();
            offsets.push(0);
            self.offsets = offsets;
        }
    }
}
