//! Live directories -> FileEvents: an initial scan, then notify (inotify, or polling) events turned into
//! debounced upserts and deletes, with a full rescan whenever the kernel's queue overflows.
//!
//! The watcher keeps the set of paths it has reported per root, so that a removed or renamed
//! directory, and a rescan, can say exactly which paths are gone. It never reads file contents.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RenameMode};
use notify::{Event, RecursiveMode, Watcher};

use super::walk::{entry_type, walk_builder};
use crate::epochs::EpochClock;

use super::{EntryType, EventKind as Op, FileEvent, Origin, SourceError, now_us};

/// A watched directory and the source name its paths belong to.
#[derive(Debug, Clone)]
pub struct WatchRoot {
    pub source: String,
    pub dir: PathBuf,
}

/// How to watch.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub no_ignore: bool,
    /// Poll at this interval instead of using inotify.
    pub poll: Option<Duration>,
    /// A file written without a close-write (or seen by polling) is taken once quiet this long.
    pub debounce: Duration,
    /// An epoch closes this long after it opened, if it has events.
    pub latency: Duration,
    /// The lake commits at least this often while there are changes.
    pub commit_interval: Duration,
}

/// Shared between the watcher, the graph and the caller.
#[derive(Debug)]
pub struct WatchControl {
    /// Set to stop watching; pending files are flushed first.
    pub stop: Arc<AtomicBool>,
    /// Stamps and seals the epochs; the first one is the initial scan, a snapshot of every root.
    pub clock: Arc<EpochClock>,
    /// Rescans after a queue overflow or a notify request.
    pub rescans: AtomicU64,
    /// When each epoch's events were received, for the latency histogram.
    pub latency: Arc<crate::latency::LatencyRecorder>,
}

/// What the watcher did.
#[derive(Debug, Default, Clone)]
pub struct WatchReport {
    pub upserts: u64,
    pub deletes: u64,
    pub rescans: u64,
}

struct Root {
    source: String,
    dir: PathBuf,
    ignore: Option<Gitignore>,
    /// Paths reported as existing, relative to `dir`, with their metadata when reported.
    known: HashMap<Vec<u8>, Stamp>,
}

/// What a rescan compares to tell whether a file changed since it was reported without reading
/// it: size, modification and change times, inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            ino: meta.ino(),
        }
    }
}

/// Overflows closer together than this are answered by one rescan.
const RESCAN_SETTLE: Duration = Duration::from_millis(100);

/// Watches `roots` until `control.stop` is set. The first epoch is a snapshot of every root: what
/// the graph tracks under a root's source and the scan does not find is deleted.
pub fn watch(
    roots: &[WatchRoot],
    options: &WatchOptions,
    control: &Arc<WatchControl>,
    events: &Sender<FileEvent>,
) -> Result<WatchReport, SourceError> {
    let (notify_tx, notify_rx) = crossbeam_channel::unbounded();
    // The handler only forwards: blocking in it is what makes the kernel queue overflow.
    let handler = move |event: notify::Result<Event>| {
        let _ = notify_tx.send(event);
    };
    let mut watcher: Box<dyn Watcher> = match options.poll {
        Some(interval) => Box::new(
            notify::PollWatcher::new(
                handler,
                notify::Config::default().with_poll_interval(interval),
            )
            .map_err(|e| watch_error(&roots[0].dir, e))?,
        ),
        None => Box::new(
            notify::recommended_watcher(handler).map_err(|e| watch_error(&roots[0].dir, e))?,
        ),
    };
    let mut state = Watching {
        roots: Vec::new(),
        options: options.clone(),
        epoch_opened: Instant::now(),
        epoch_events: 0,
        initial_scan: true,
        incomplete: HashSet::new(),
        last_commit: Instant::now(),
        uncommitted: false,
        dirty: HashMap::new(),
        pending: HashMap::new(),
        rescan_due: None,
        control: control.clone(),
        events: events.clone(),
        report: WatchReport::default(),
    };
    for root in roots {
        let dir = root
            .dir
            .canonicalize()
            .map_err(|source| SourceError::Open {
                path: root.dir.clone(),
                source,
            })?;
        if !dir.is_dir() {
            return Err(SourceError::NotReplayable { path: dir });
        }
        watcher
            .watch(&dir, RecursiveMode::Recursive)
            .map_err(|e| watch_error(&dir, e))?;
        state.roots.push(Root {
            source: root.source.clone(),
            ignore: ignore_matcher(&dir, options.no_ignore),
            dir,
            known: HashMap::new(),
        });
    }
    // Scan after the watches exist, so that nothing created in between is missed.
    state.rescan()?;
    state.rescan_due = None;
    state.run(&notify_rx)?;
    drop(watcher);
    Ok(state.report)
}

fn watch_error(dir: &Path, e: notify::Error) -> SourceError {
    let reason = match e.kind {
        notify::ErrorKind::MaxFilesWatch => format!(
            "too many directories to watch: raise the limit (sysctl fs.inotify.max_user_watches, \
             now {}) or use --poll INTERVAL",
            std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into())
        ),
        _ => e.to_string(),
    };
    SourceError::Watch {
        path: dir.to_path_buf(),
        reason,
    }
}

/// `.ignore` always, `.gitignore` in a git work tree: the root's own files, as the walk reads them.
fn ignore_matcher(dir: &Path, no_ignore: bool) -> Option<Gitignore> {
    if no_ignore {
        return None;
    }
    let mut builder = GitignoreBuilder::new(dir);
    builder.add(dir.join(".ignore"));
    if dir.join(".git").exists() {
        builder.add(dir.join(".gitignore"));
    }
    builder.build().ok()
}

struct Watching {
    roots: Vec<Root>,
    options: WatchOptions,
    epoch_opened: Instant,
    epoch_events: u64,
    /// The open epoch holds the initial scan: it closes even if empty, ending a snapshot.
    initial_scan: bool,
    /// Roots a listing could not list whole.
    incomplete: HashSet<usize>,
    /// When a commit was last requested, and whether epochs were sealed since.
    last_commit: Instant,
    uncommitted: bool,
    /// Files written but not yet complete: when they were last touched.
    dirty: HashMap<PathBuf, Instant>,
    /// The open epoch's changes, one per path (the last one wins), sent when the epoch closes:
    /// a path has at most one version per epoch, so no order between workers matters.
    pending: HashMap<(usize, Vec<u8>), (Op, EntryType, PathBuf)>,
    /// A rescan is owed: when the overflows have settled.
    rescan_due: Option<Instant>,
    control: Arc<WatchControl>,
    events: Sender<FileEvent>,
    report: WatchReport,
}

impl Watching {
    fn run(&mut self, notify_rx: &Receiver<notify::Result<Event>>) -> Result<(), SourceError> {
        let tick = self.options.latency.min(Duration::from_millis(5));
        while !self.control.stop.load(Ordering::Relaxed) {
            match notify_rx.recv_timeout(tick) {
                Ok(event) => {
                    self.handle(event)?;
                    // Drain what is queued before looking at timers.
                    while let Ok(event) = notify_rx.try_recv() {
                        self.handle(event)?;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.rescan_due.is_some_and(|due| Instant::now() >= due) {
                self.rescan_due = None;
                self.rescan()?;
            }
            self.flush_quiet(false)?;
            self.maybe_close_epoch(false)?;
        }
        // Stopping: take what is already queued, and answer an overflow not yet answered, so
        // that nothing done before the stop is lost to a backlog.
        while let Ok(event) = notify_rx.try_recv() {
            self.handle(event)?;
        }
        if self.rescan_due.take().is_some() {
            self.rescan()?;
        }
        self.flush_quiet(true)?;
        self.maybe_close_epoch(true)
    }

    fn handle(&mut self, event: notify::Result<Event>) -> Result<(), SourceError> {
        let event = match event {
            Ok(event) => event,
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                return Err(watch_error(&self.roots[0].dir, e));
            }
            Err(e) => {
                tracing::warn!(error = %e, "watch error; rescanning");
                return self.rescan_counted();
            }
        };
        if event.need_rescan() {
            tracing::warn!("the kernel event queue overflowed; rescanning");
            return self.rescan_counted();
        }
        let now = Instant::now();
        match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                for path in &event.paths {
                    self.dirty.remove(path);
                    self.upsert_path(path, false)?;
                }
            }
            EventKind::Access(_) | EventKind::Other => {}
            EventKind::Create(CreateKind::Folder) => {
                for path in &event.paths {
                    self.scan_dir(path)?;
                }
            }
            EventKind::Modify(ModifyKind::Name(mode)) => match mode {
                RenameMode::From => {
                    for path in &event.paths {
                        self.delete_path(path)?;
                    }
                }
                RenameMode::Both if event.paths.len() == 2 => {
                    self.delete_path(&event.paths[0])?;
                    self.appeared(&event.paths[1], now)?;
                }
                _ => {
                    for path in &event.paths {
                        self.appeared(path, now)?;
                    }
                }
            },
            EventKind::Modify(ModifyKind::Metadata(_)) => {}
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any => {
                for path in &event.paths {
                    self.appeared(path, now)?;
                }
            }
            EventKind::Remove(_) => {
                for path in &event.paths {
                    self.dirty.remove(path);
                    self.delete_path(path)?;
                }
            }
        }
        Ok(())
    }

    /// A path was created, moved in or written: a directory is scanned now, a file waits until
    /// it is complete.
    fn appeared(&mut self, path: &Path, now: Instant) -> Result<(), SourceError> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => self.scan_dir(path),
            Ok(_) => {
                self.dirty.insert(path.to_path_buf(), now);
                Ok(())
            }
            Err(_) => self.delete_path(path),
        }
    }

    /// Upserts every file that has been quiet for the debounce interval (all when `all`).
    fn flush_quiet(&mut self, all: bool) -> Result<(), SourceError> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        let debounce = self.options.debounce;
        let ready: Vec<PathBuf> = self
            .dirty
            .iter()
            .filter(|(_, touched)| all || touched.elapsed() >= debounce)
            .map(|(p, _)| p.clone())
            .collect();
        for path in ready {
            self.dirty.remove(&path);
            self.upsert_path(&path, false)?;
        }
        Ok(())
    }

    /// The root a path belongs to and the path relative to it.
    fn locate(&self, path: &Path) -> Option<(usize, Vec<u8>)> {
        self.roots.iter().enumerate().find_map(|(i, root)| {
            let relative = path.strip_prefix(&root.dir).ok()?;
            let bytes = relative.as_os_str().as_bytes();
            (!bytes.is_empty()).then(|| (i, bytes.to_vec()))
        })
    }

    fn ignored(&self, root: usize, relative: &[u8], is_dir: bool) -> bool {
        let root = &self.roots[root];
        if root.ignore.is_none() {
            return false;
        }
        if relative.split(|&b| b == b'/').any(|c| c == b".git") {
            return true;
        }
        let path = Path::new(std::ffi::OsStr::from_bytes(relative));
        root.ignore
            .as_ref()
            .is_some_and(|m| m.matched_path_or_any_parents(path, is_dir).is_ignore())
    }

    /// Upserts `path`; with `only_if_changed`, only when its metadata differs from what was
    /// reported, so that a rescan re-reads only what changed.
    fn upsert_path(&mut self, path: &Path, only_if_changed: bool) -> Result<(), SourceError> {
        let Some((root, relative)) = self.locate(path) else {
            return Ok(());
        };
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(_) => return self.delete_path(path),
        };
        if meta.is_dir() || self.ignored(root, &relative, false) {
            return Ok(());
        }
        let stamp = Stamp::of(&meta);
        let previous = self.roots[root].known.insert(relative.clone(), stamp);
        if only_if_changed && previous == Some(stamp) {
            return Ok(());
        }
        self.send(
            root,
            relative,
            Op::Upsert,
            entry_type(meta.file_type()),
            path,
        )
    }

    /// Deletes `path` and every known path below it.
    fn delete_path(&mut self, path: &Path) -> Result<(), SourceError> {
        self.dirty.retain(|p, _| !p.starts_with(path));
        let Some((root, relative)) = self.locate(path) else {
            return Ok(());
        };
        let mut prefix = relative.clone();
        prefix.push(b'/');
        let gone: Vec<Vec<u8>> = self.roots[root]
            .known
            .keys()
            .filter(|k| **k == relative || k.starts_with(&prefix))
            .cloned()
            .collect();
        for relative in gone {
            self.roots[root].known.remove(&relative);
            let absolute = self.roots[root]
                .dir
                .join(std::ffi::OsStr::from_bytes(&relative));
            self.send(root, relative, Op::Delete, EntryType::File, &absolute)?;
        }
        Ok(())
    }

    /// Walks a directory that appeared and upserts everything in it: files created in it before
    /// its watch existed have sent no event.
    fn scan_dir(&mut self, dir: &Path) -> Result<(), SourceError> {
        let Some((root, relative)) = self.locate(dir) else {
            return Ok(());
        };
        if self.ignored(root, &relative, true) {
            return Ok(());
        }
        for path in self.list(dir).0 {
            self.upsert_path(&path, false)?;
        }
        Ok(())
    }

    /// Every non-directory entry under `dir`, with the walk's ignore rules.
    /// The entries under `dir` that are not directories; false with them when part of the tree
    /// could not be listed (each such error is logged with its path).
    fn list(&self, dir: &Path) -> (Vec<PathBuf>, bool) {
        let mut complete = true;
        let entries = walk_builder(dir, self.options.no_ignore)
            .build()
            .filter_map(|entry| match entry {
                Ok(entry) => Some(entry),
                Err(error) => {
                    tracing::warn!(error = %error, "cannot list part of a watched directory");
                    complete = false;
                    None
                }
            })
            .filter(|entry| entry.file_type().is_some_and(|t| !t.is_dir()))
            .map(|entry| entry.into_path())
            .collect();
        (entries, complete)
    }

    /// Schedules a rescan once the overflows settle: one rescan answers a storm of them.
    fn rescan_counted(&mut self) -> Result<(), SourceError> {
        if self.rescan_due.is_none() {
            self.control.rescans.fetch_add(1, Ordering::Relaxed);
            self.report.rescans += 1;
        }
        self.rescan_due = Some(Instant::now() + RESCAN_SETTLE);
        Ok(())
    }

    /// Reconciles every root with the disk: everything present is upserted (the graph drops
    /// unchanged versions), every known path not present is deleted.
    fn rescan(&mut self) -> Result<(), SourceError> {
        for root in 0..self.roots.len() {
            let dir = self.roots[root].dir.clone();
            let (present, complete) = self.list(&dir);
            let mut found = HashSet::new();
            for path in &present {
                if let Some((_, relative)) = self.locate(path) {
                    found.insert(relative);
                }
                self.dirty.remove(path);
                self.upsert_path(path, true)?;
            }
            if !complete {
                // What could not be listed is not gone: no deletes from this listing, and an
                // initial scan ends no snapshot of this root.
                self.incomplete.insert(root);
                continue;
            }
            let gone: Vec<Vec<u8>> = self.roots[root]
                .known
                .keys()
                .filter(|k| !found.contains(*k))
                .cloned()
                .collect();
            for relative in gone {
                let absolute = dir.join(std::ffi::OsStr::from_bytes(&relative));
                self.delete_path(&absolute)?;
            }
        }
        Ok(())
    }

    /// Records a change of the open epoch.
    fn send(
        &mut self,
        root: usize,
        relative: Vec<u8>,
        op: Op,
        entry: EntryType,
        absolute: &Path,
    ) -> Result<(), SourceError> {
        self.control.latency.received(self.control.clock.open());
        self.epoch_events += 1;
        self.pending
            .insert((root, relative), (op, entry, absolute.to_path_buf()));
        Ok(())
    }

    /// Closes the open epoch once it is `latency` old and has changes (or at the end): sends its
    /// changes and seals it, asking for a commit once the commit interval has passed (an idle
    /// watch seals an empty epoch to commit what is still uncommitted).
    fn maybe_close_epoch(&mut self, last: bool) -> Result<(), SourceError> {
        let commit_due = last || self.last_commit.elapsed() >= self.options.commit_interval;
        if self.epoch_events == 0 && !self.initial_scan {
            if self.uncommitted && commit_due {
                self.seal(true);
            } else if !last {
                self.epoch_opened = Instant::now();
            }
            return Ok(());
        }
        if !last && !self.initial_scan && self.epoch_opened.elapsed() < self.options.latency {
            return Ok(());
        }
        for ((root, relative), (op, entry, absolute)) in std::mem::take(&mut self.pending) {
            match op {
                Op::Upsert => self.report.upserts += 1,
                Op::Delete => self.report.deletes += 1,
            }
            let event = FileEvent {
                source: self.roots[root].source.clone(),
                path: relative,
                kind: op,
                epoch: 0, // stamped when sent
                observed_at_us: now_us(),
                entry,
                origin: Origin::Disk(absolute),
            };
            // A full channel is backpressure: the graph is behind, and the watcher waits for it.
            self.control
                .clock
                .send(&self.events, event)
                .map_err(|_| SourceError::Watch {
                    path: self.roots[root].dir.clone(),
                    reason: "the dataflow stopped".into(),
                })?;
        }
        self.seal(commit_due);
        Ok(())
    }

    /// Seals the open epoch; the first one ends the initial snapshot of every root.
    fn seal(&mut self, commit: bool) {
        let clock = &self.control.clock;
        let first = clock.open();
        let ended: Vec<(&str, u64)> = if self.initial_scan {
            (self.roots.iter().enumerate())
                .filter(|(i, _)| !self.incomplete.contains(i))
                .map(|(_, r)| (r.source.as_str(), first))
                .collect()
        } else {
            Vec::new()
        };
        clock.seal(commit, &ended);
        self.initial_scan = false;
        self.epoch_events = 0;
        self.epoch_opened = Instant::now();
        self.uncommitted = !commit;
        if commit {
            self.last_commit = Instant::now();
        }
    }
}
