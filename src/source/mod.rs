//! Where file events come from: a directory walk or an archive stream -> [`FileEvent`]s on a bounded channel.
//!
//! Sources say *which* paths changed and never read file contents, with one exception forced by
//! the format: an archive can only be read as a stream, so an archive member's bytes travel inline
//! in its event.

pub mod archive;
pub mod walk;
pub mod watch;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The path exists with (possibly) new content.
    Upsert,
    /// The path no longer exists.
    Delete,
}

/// Where the reader finds the bytes of a file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Origin {
    /// A file on disk; the reader opens it (regular files only).
    Disk(PathBuf),
    /// An archive member whose bytes were taken from the archive stream.
    Member(Member),
    /// The source could not even list this entry (an unreadable directory, say).
    Unlistable(String),
}

/// An archive member as the archive stream describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Member {
    Regular(Vec<u8>),
    TooLarge(u64),
    Symlink,
    NotRegular,
}

/// The type of a directory entry as the walk saw it, so that the reader never opens a symlink,
/// FIFO, socket or device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryType {
    File,
    Symlink,
    NotRegular,
}

/// One change to one path of one source.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEvent {
    /// Logical source name.
    pub source: String,
    /// Path relative to the source root, '/'-separated, exact bytes.
    pub path: Vec<u8>,
    pub kind: EventKind,
    /// The epoch this event belongs to (a snapshot of a replay, or a commit interval of a watch).
    pub epoch: u64,
    /// Microseconds since the Unix epoch when the source saw the change.
    pub observed_at_us: u64,
    pub entry: EntryType,
    pub origin: Origin,
}

/// The hash that assigns a (source, path) to a worker: the low bits of its [`path_id`].
pub fn route(source: &str, path: &[u8]) -> u64 {
    path_id(source, path) as u64
}

/// A 128-bit identity of (source, path), the key of the current-versions collection.
pub fn path_id(source: &str, path: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128_with_seed(path, xxhash_rust::xxh3::xxh3_64(source.as_bytes()))
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The default source name for a replayed PATH: its base name without archive suffixes.
pub fn default_source_name(path: &std::path::Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string_lossy().into_owned());
    for suffix in [".tar.gz", ".tar.zst", ".tar.zstd", ".tgz", ".tzst", ".tar"] {
        if let Some(stem) = name.strip_suffix(suffix)
            && !stem.is_empty()
        {
            return stem.to_string();
        }
    }
    name
}

/// Errors that end a source. Each names the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is neither a directory nor a .tar, .tar.gz/.tgz or .tar.zst archive")]
    NotReplayable { path: PathBuf },
    #[error("{path} is the lake {lake} or lies inside it: a run never reads its own output")]
    InsideLake { path: PathBuf, lake: PathBuf },
    #[error("cannot watch {path}: {reason}")]
    Watch { path: PathBuf, reason: String },
    #[error("archive {archive}: member {member}: {reason}")]
    Archive {
        archive: PathBuf,
        member: String,
        reason: String,
    },
    /// Refused before any member: an empty file, or not tar data (after decompression).
    #[error("{path} does not look like a tar archive: {reason}")]
    NotAnArchive { path: PathBuf, reason: String },
    /// The members were read, but the archive does not end as a whole archive does.
    #[error("archive {archive} is damaged: {reason}")]
    Damaged { archive: PathBuf, reason: String },
    /// The root of a replayed tree cannot be listed: nothing of it is known.
    #[error("cannot list {path}")]
    Unlistable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn source_name_drops_archive_suffixes() {
        assert_eq!(
            default_source_name(Path::new("/x/linux-6.1.tar.gz")),
            "linux-6.1"
        );
        assert_eq!(default_source_name(Path::new("snap.tar.zst")), "snap");
        assert_eq!(default_source_name(Path::new("a.tgz")), "a");
        assert_eq!(default_source_name(Path::new("/data/tree/")), "tree");
        assert_eq!(default_source_name(Path::new("notes.txt")), "notes.txt");
    }
}
