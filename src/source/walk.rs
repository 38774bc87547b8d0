//! Directory tree -> one upsert [`FileEvent`] per entry that is not a directory, walked in parallel,
//! honouring `.ignore` and, inside a git work tree, `.gitignore`, and skipping `.git/`, unless told to
//! take everything.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::Sender;
use ignore::{WalkBuilder, WalkState};

use crate::epochs::EpochClock;

use super::{EntryType, EventKind, FileEvent, Origin, SourceError, now_us};

/// How to walk a tree.
#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// Take every entry: no ignore files, `.git/` included.
    pub no_ignore: bool,
    /// Walker threads.
    pub threads: usize,
    /// The lake the run writes: never entered, wherever it lies in the tree.
    pub lake: Option<PathBuf>,
}

/// What a walk saw.
#[derive(Debug, Default, Clone)]
pub struct WalkReport {
    pub entries: u64,
    pub errors: u64,
}

/// Walks `root` and sends an upsert event for every non-directory entry, stamped by `clock`.
/// Returns when the walk is complete or the receiver hung up.
///
/// A directory below `root` that cannot be listed (whole or in part) is sent as an `unreadable`
/// entry whose path ends with `/`: the graph then deletes nothing under it when the snapshot ends
/// (see `dataflow::reconcile`). A root that cannot be listed is an error: nothing of it is known.
pub fn walk(
    root: &Path,
    source: &str,
    clock: &EpochClock,
    options: &WalkOptions,
    events: &Sender<FileEvent>,
) -> Result<WalkReport, SourceError> {
    let meta = std::fs::metadata(root).map_err(|source| SourceError::Open {
        path: root.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(SourceError::NotReplayable {
            path: root.to_path_buf(),
        });
    }
    // The walker reports an unlistable root as an error of an entry with an empty relative path,
    // which would make an empty snapshot that deletes everything.
    std::fs::read_dir(root).map_err(|source| SourceError::Unlistable {
        path: root.to_path_buf(),
        source,
    })?;
    let lake = options.lake.as_deref().and_then(Excluded::of);
    let mut builder = walk_builder(root, options.no_ignore, lake);
    builder.threads(options.threads.max(1));
    let entries = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let fatal: Mutex<Option<SourceError>> = Mutex::new(None);
    builder.build_parallel().run(|| {
        let entries = &entries;
        let errors = &errors;
        let fatal = &fatal;
        Box::new(move |result| {
            let event = match result {
                Ok(entry) => {
                    let Some(file_type) = entry.file_type() else {
                        return WalkState::Continue; // stdin; never produced for a directory walk
                    };
                    if file_type.is_dir() {
                        if let Some(err) = entry.error() {
                            // An ignore file that cannot be read: its rules are missing.
                            tracing::warn!(path = %entry.path().display(), error = %err, "cannot read ignore rules");
                        }
                        return WalkState::Continue;
                    }
                    event(root, source, entry.path(), entry_type(file_type), None)
                }
                Err(err) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    let unlisted = error_path(&err).and_then(|path| {
                        let relative = relative_bytes(root, &path)?;
                        (!relative.is_empty()).then_some(path)
                    });
                    let Some(path) = unlisted else {
                        // The root, or no path at all: what this snapshot lacks is unknown.
                        *fatal.lock().expect("walk error lock") = Some(SourceError::Unlistable {
                            path: root.to_path_buf(),
                            source: std::io::Error::other(err.to_string()),
                        });
                        return WalkState::Quit;
                    };
                    // The walker reports listing errors of directories; an entry it cannot even
                    // stat (its parent lacks search permission) may be one too, and what lies
                    // under it is unknown: it is taken as a directory, so nothing under it is
                    // deleted.
                    let is_dir = std::fs::symlink_metadata(&path).map_or(true, |m| m.is_dir());
                    if is_dir {
                        tracing::warn!(
                            path = %path.display(),
                            error = %err,
                            "cannot list directory: recorded as unreadable, nothing under it deleted"
                        );
                    } else {
                        tracing::warn!(path = %path.display(), error = %err, "cannot list entry");
                    }
                    event(
                        root,
                        source,
                        &path,
                        EntryType::NotRegular,
                        Some(Unlisted {
                            reason: err.to_string(),
                            is_dir,
                        }),
                    )
                }
            };
            let Some(event) = event else {
                return WalkState::Continue;
            };
            entries.fetch_add(1, Ordering::Relaxed);
            match clock.send(events, event) {
                Ok(()) => WalkState::Continue,
                Err(_) => WalkState::Quit,
            }
        })
    });
    if let Some(err) = fatal.into_inner().expect("walk error lock") {
        return Err(err);
    }
    Ok(WalkReport {
        entries: entries.into_inner(),
        errors: errors.into_inner(),
    })
}

/// The walk every source uses: symlinks not followed, `.ignore` honoured, `.gitignore` inside a git
/// work tree, `.git/` skipped; `no_ignore` takes every entry. `lake` is never entered.
pub fn walk_builder(root: &Path, no_ignore: bool, lake: Option<Excluded>) -> WalkBuilder {
    let mut builder = WalkBuilder::new(root);
    builder
        .follow_links(false)
        // Results must not depend on files outside the tree or on the user's git setup. As in
        // ripgrep, `.gitignore` counts inside a git work tree (a tree with `.git`), where it means
        // something; `.ignore` counts everywhere.
        .parents(false)
        .git_global(false)
        .git_exclude(false)
        .require_git(true);
    if no_ignore {
        builder.standard_filters(false);
    } else {
        builder.hidden(false).ignore(true).git_ignore(true);
    }
    // One filter does both jobs: a builder keeps only the last one it was given.
    builder.filter_entry(move |entry| {
        (no_ignore || entry.file_name() != ".git") && !lake.is_some_and(|lake| lake.is(entry))
    });
    builder
}

/// A directory that no walk enters: the lake a run writes, which is never one of its inputs.
/// Known by device and inode, so that every spelling of it (`..`, a symlink, a bind mount) is the
/// same directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Excluded {
    dev: u64,
    ino: u64,
}

impl Excluded {
    /// The directory at `dir`; none when there is no directory there (yet).
    pub fn of(dir: &Path) -> Option<Excluded> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir).ok().filter(|m| m.is_dir())?;
        Some(Excluded {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Whether a walk entry is this directory. The inode comes with the directory listing; the
    /// device is looked up only when the inode matches.
    fn is(&self, entry: &ignore::DirEntry) -> bool {
        use std::os::unix::fs::MetadataExt;
        entry.file_type().is_some_and(|t| t.is_dir())
            && entry.ino() == Some(self.ino)
            && entry.metadata().is_ok_and(|m| m.dev() == self.dev)
    }
}

/// Refuses a directory input that is the lake or lies inside it: a run would read what it
/// writes. Compares canonical paths; a lake that does not exist yet is resolved through its
/// nearest existing ancestor.
pub fn check_outside_lake(dir: &Path, lake: &Path) -> Result<(), SourceError> {
    let (Ok(dir_canonical), Some(lake_canonical)) = (dir.canonicalize(), resolve(lake)) else {
        return Ok(()); // a missing input is reported by whoever opens it
    };
    if dir_canonical.starts_with(&lake_canonical) {
        return Err(SourceError::InsideLake {
            path: dir.to_path_buf(),
            lake: lake.to_path_buf(),
        });
    }
    Ok(())
}

/// `path` with symlinks, `.` and `..` resolved as far as it exists, the rest appended as written
/// (with `..` taken lexically: what does not exist yet will be created as plain directories).
pub fn resolve(path: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(path).ok()?;
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            let mut resolved = canonical;
            for component in rest.iter().rev() {
                match component {
                    std::path::Component::ParentDir => {
                        resolved.pop();
                    }
                    std::path::Component::CurDir => {}
                    other => resolved.push(other.as_os_str()),
                }
            }
            return Some(resolved);
        }
        rest.push(existing.components().next_back()?);
        existing = existing.parent()?;
    }
}

/// What the reader may do with an entry of this type.
pub fn entry_type(file_type: std::fs::FileType) -> EntryType {
    if file_type.is_symlink() {
        EntryType::Symlink
    } else if file_type.is_file() {
        EntryType::File
    } else {
        EntryType::NotRegular
    }
}

/// Why an entry could not be listed, and whether it is a directory (whose subtree is unknown).
struct Unlisted {
    reason: String,
    is_dir: bool,
}

fn event(
    root: &Path,
    source: &str,
    path: &Path,
    entry: EntryType,
    unlisted: Option<Unlisted>,
) -> Option<FileEvent> {
    let mut bytes = relative_bytes(root, path)?.to_vec();
    if bytes.is_empty() {
        return None;
    }
    let origin = match unlisted {
        Some(Unlisted { reason, is_dir }) => {
            // The trailing '/' marks a directory, which no file path can be: the graph keeps every
            // path under it (see `dataflow::reconcile::unlisted_dir`).
            if is_dir {
                bytes.push(b'/');
            }
            Origin::Unlistable(reason)
        }
        None => Origin::Disk(path.to_path_buf()),
    };
    Some(FileEvent {
        source: source.to_string(),
        path: bytes,
        kind: EventKind::Upsert,
        epoch: 0, // stamped when sent
        observed_at_us: now_us(),
        entry,
        origin,
    })
}

/// `path` relative to `root`, as bytes ('/'-separated; empty for the root itself).
fn relative_bytes<'a>(root: &Path, path: &'a Path) -> Option<&'a [u8]> {
    // The walk joins entry names onto `root`, so its bytes are a prefix of every path.
    match path
        .as_os_str()
        .as_bytes()
        .strip_prefix(root.as_os_str().as_bytes())
    {
        Some(rest) => Some(trim_leading_slashes(rest)),
        None => Some(path.strip_prefix(root).ok()?.as_os_str().as_bytes()),
    }
}

fn trim_leading_slashes(mut bytes: &[u8]) -> &[u8] {
    while let [b'/', rest @ ..] = bytes {
        bytes = rest;
    }
    bytes
}

fn error_path(err: &ignore::Error) -> Option<PathBuf> {
    match err {
        ignore::Error::WithPath { path, .. } => Some(path.clone()),
        ignore::Error::WithDepth { err, .. } => error_path(err),
        ignore::Error::WithLineNumber { err, .. } => error_path(err),
        _ => None,
    }
}
