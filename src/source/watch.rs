//! Live directories -> FileEvents: an initial scan, then notify (inotify, or polling) events turned into
//! debounced upserts and deletes, with a full rescan whenever the kernel's queue overflows.
//!
//! The watcher keeps the set of paths it has reported per root, so that a removed or renamed
//! directory, and a rescan, can say exactly which paths are gone. It never reads file contents.
//! Events are filtered by the same ignore rules as the walk, at every level of the tree; the lake
//! is never an input; a watched directory that disappears is watched again when it reappears.

mod known;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use ignore::IncrementalIgnore;
use notify::event::{
    AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RemoveKind, RenameMode,
};
use notify::{Event, RecursiveMode, Watcher};

use self::known::KnownPaths;
use super::walk::{Excluded, entry_type, resolve, walk_builder};
use crate::epochs::EpochClock;
use crate::progress::ErrorKind;

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
    /// The run's counters, which `/metrics` shows.
    pub progress: Arc<crate::progress::Progress>,
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
    /// The walk's ignore rules, every level, loaded as paths are asked about; none with
    /// `no_ignore`.
    ignore: Option<IncrementalIgnore>,
    /// Paths reported as existing, relative to `dir`, with their metadata when reported.
    known: KnownPaths<Stamp>,
    /// The directory being watched at `dir`; none while there is no directory there (removed,
    /// renamed away, replaced by a file), until one reappears.
    identity: Option<Excluded>,
    /// An event said the directory itself was removed or moved away: it is lost even if a new
    /// directory there has the old one's device and inode (file systems reuse inode numbers).
    went_away: bool,
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

/// notify events waiting for the watcher: twice the kernel's default queue
/// (`fs.inotify.max_queued_events`, 16,384). Beyond it events are dropped and a rescan owed.
pub const NOTIFY_QUEUE: usize = 32_768;

/// How often each watched directory is checked to be the one being watched: one `stat` per
/// root. A removed, renamed or replaced root sends no reliable event of its own.
const ROOT_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Names whose appearance, change or removal changes which paths the ignore rules take.
const RULE_FILES: [&str; 4] = [".ignore", ".gitignore", ".git", ".jj"];

/// notify's event handler: forwards without ever blocking, since blocking it is what makes the
/// kernel queue overflow. When the watcher is so far behind that the channel is full, the event
/// is dropped and `overflowed` set: the watcher answers with a rescan, which makes up for every
/// event dropped before it.
fn forward(
    sender: Sender<notify::Result<Event>>,
    overflowed: Arc<AtomicBool>,
) -> impl FnMut(notify::Result<Event>) + Send + 'static {
    move |event| {
        if let Err(TrySendError::Full(_)) = sender.try_send(event) {
            overflowed.store(true, Ordering::Release);
        }
    }
}

/// Watches `roots` until `control.stop` is set. The first epoch is a snapshot of every root: what
/// the graph tracks under a root's source and the scan does not find is deleted. Nothing under
/// `lake` is ever an input; a root that is the lake or inside it is refused.
pub fn watch(
    roots: &[WatchRoot],
    lake: &Path,
    options: &WatchOptions,
    control: &Arc<WatchControl>,
    events: &Sender<FileEvent>,
) -> Result<WatchReport, SourceError> {
    let (notify_tx, notify_rx) = crossbeam_channel::bounded(NOTIFY_QUEUE);
    let overflowed = Arc::new(AtomicBool::new(false));
    let handler = forward(notify_tx, overflowed.clone());
    // Like the walk, the watch does not follow symlinks: what lies behind one is not in the tree.
    let config = notify::Config::default().with_follow_symlinks(false);
    let watcher: Box<dyn Watcher> = match options.poll {
        Some(interval) => Box::new(
            notify::PollWatcher::new(handler, config.with_poll_interval(interval))
                .map_err(|e| watch_error(&roots[0].dir, e))?,
        ),
        None => Box::new(
            notify::RecommendedWatcher::new(handler, config)
                .map_err(|e| watch_error(&roots[0].dir, e))?,
        ),
    };
    let mut state = Watching {
        roots: Vec::new(),
        watcher,
        lake: resolve(lake),
        lake_dir: Excluded::of(lake),
        overflowed,
        next_root_check: Instant::now() + ROOT_CHECK_INTERVAL,
        options: options.clone(),
        epoch_opened: Instant::now(),
        epoch_events: 0,
        initial_scan: true,
        incomplete: HashSet::new(),
        last_commit: Instant::now(),
        uncommitted: false,
        dirty: BTreeMap::new(),
        pending: HashMap::new(),
        rescan_due: None,
        control: control.clone(),
        events: events.clone(),
        report: WatchReport::default(),
    };
    for root in roots {
        super::walk::check_outside_lake(&root.dir, lake)?;
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
        state
            .watcher
            .watch(&dir, RecursiveMode::Recursive)
            .map_err(|e| watch_error(&dir, e))?;
        state.roots.push(Root {
            source: root.source.clone(),
            ignore: ignore_rules(&dir, options.no_ignore),
            identity: Excluded::of(&dir),
            dir,
            known: KnownPaths::default(),
            went_away: false,
        });
    }
    // The lake's own writes would flood the queue with events that are dropped anyway: stop
    // watching it where a root contains it (best effort; the events are filtered regardless).
    if let Some(lake) = &state.lake
        && state.roots.iter().any(|r| lake.starts_with(&r.dir))
    {
        let _ = state.watcher.unwatch(lake);
    }
    // Scan after the watches exist, so that nothing created in between is missed.
    state.rescan()?;
    state.rescan_due = None;
    state.run(&notify_rx)?;
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

/// The walk's ignore rules for `dir` (`.ignore` everywhere, `.gitignore` in a git work tree, at
/// every level, child over parent), to ask about single paths; none with `no_ignore`.
fn ignore_rules(dir: &Path, no_ignore: bool) -> Option<IncrementalIgnore> {
    if no_ignore {
        return None;
    }
    walk_builder(dir, false, None).build_matchers().pop()
}

/// Whether an event path names a file that decides what the ignore rules take (`.git/` itself
/// included, not what is inside it).
fn is_rule_file(relative: &[u8]) -> bool {
    let mut components = relative.split(|&b| b == b'/');
    let name = components.next_back().unwrap_or_default();
    RULE_FILES.iter().any(|r| r.as_bytes() == name) && !components.any(|c| c == b".git")
}

struct Watching {
    roots: Vec<Root>,
    watcher: Box<dyn Watcher>,
    /// The lake, canonical, and its directory: never an input.
    lake: Option<PathBuf>,
    lake_dir: Option<Excluded>,
    /// Set by the event handler when it had to drop an event.
    overflowed: Arc<AtomicBool>,
    /// When the roots are next checked to still be the directories being watched.
    next_root_check: Instant,
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
    /// Files written but not yet complete: when they were last touched. Ordered, so that the
    /// paths below a removed directory are one range.
    dirty: BTreeMap<PathBuf, Instant>,
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
            self.answer_dropped_events()?;
            if Instant::now() >= self.next_root_check {
                self.check_roots()?;
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
        self.answer_dropped_events()?;
        self.check_roots()?;
        if self.rescan_due.take().is_some() {
            self.rescan()?;
        }
        self.flush_quiet(true)?;
        self.maybe_close_epoch(true)
    }

    /// Events the handler had to drop are made up for by a rescan.
    fn answer_dropped_events(&mut self) -> Result<(), SourceError> {
        if self.overflowed.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                capacity = NOTIFY_QUEUE,
                "the watcher fell behind and dropped events; rescanning"
            );
            self.rescan_counted()?;
        }
        Ok(())
    }

    fn handle(&mut self, event: notify::Result<Event>) -> Result<(), SourceError> {
        let event = match event {
            Ok(event) => event,
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                return Err(watch_error(&self.roots[0].dir, e));
            }
            Err(e) => {
                tracing::warn!(error = %e, "watch error; rescanning");
                self.control.progress.error(ErrorKind::Watch);
                return self.rescan_counted();
            }
        };
        if event.need_rescan() {
            tracing::warn!("the kernel event queue overflowed; rescanning");
            return self.rescan_counted();
        }
        // Reads (the pipeline's own among them) and metadata changes say nothing of the rules.
        let quiet = matches!(
            event.kind,
            EventKind::Access(_) | EventKind::Other | EventKind::Modify(ModifyKind::Metadata(_))
        ) && !matches!(
            event.kind,
            EventKind::Access(AccessKind::Close(AccessMode::Write))
        );
        if !quiet {
            self.rules_touched(&event);
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
                        self.gone(path, now)?;
                    }
                }
                RenameMode::Both if event.paths.len() == 2 => {
                    self.gone(&event.paths[0], now)?;
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
                    self.gone(path, now)?;
                }
            }
        }
        Ok(())
    }

    /// Keeps the ignore rules true to the disk. They are loaded per directory as paths are asked
    /// about, so a directory that comes or goes drops what was loaded (a new directory of the
    /// same name may hold other ignore files); an ignore file (or `.git`) that changes changes
    /// what is ignored under its directory, and a rescan is the simple exact answer. A root
    /// whose own directory is removed or moved is checked at once.
    fn rules_touched(&mut self, event: &Event) {
        let structural = matches!(
            event.kind,
            EventKind::Create(CreateKind::Folder)
                | EventKind::Remove(RemoveKind::Folder | RemoveKind::Any | RemoveKind::Other)
        );
        let renamed = matches!(event.kind, EventKind::Modify(ModifyKind::Name(_)));
        let away = matches!(
            event.kind,
            EventKind::Remove(_)
                | EventKind::Modify(ModifyKind::Name(RenameMode::From | RenameMode::Any))
        );
        for path in &event.paths {
            if let Some(root) = self.roots.iter_mut().find(|r| r.dir == *path) {
                root.went_away |= away;
                self.next_root_check = Instant::now();
                continue;
            }
            let Some((root, relative)) = self.locate(path) else {
                continue;
            };
            if is_rule_file(&relative) {
                tracing::info!(path = %path.display(), "an ignore file changed; rescanning");
                self.reload_rules(root);
                if self.rescan_due.is_none() {
                    self.rescan_due = Some(Instant::now() + RESCAN_SETTLE);
                }
            } else if structural || (renamed && !self.is_file(root, path, &relative)) {
                // Editors save by renaming a file into place: only a directory that moves
                // drops the loaded rules.
                self.reload_rules(root);
            }
        }
    }

    /// Whether `path` is a file now, or was one when last reported.
    fn is_file(&self, root: usize, path: &Path, relative: &[u8]) -> bool {
        std::fs::symlink_metadata(path).map_or_else(
            |_| self.roots[root].known.contains(relative),
            |meta| !meta.is_dir(),
        )
    }

    fn reload_rules(&mut self, root: usize) {
        let root = &mut self.roots[root];
        root.ignore = ignore_rules(&root.dir, self.options.no_ignore);
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

    /// A path was removed or moved away. Events are hints, not facts: one can arrive late (from
    /// a watch on a directory that was renamed away), so what the disk now holds decides.
    fn gone(&mut self, path: &Path, now: Instant) -> Result<(), SourceError> {
        if std::fs::symlink_metadata(path).is_ok() {
            return self.appeared(path, now);
        }
        self.delete_path(path)
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

    /// The root a path belongs to and the path relative to it; none for a path of no root, of
    /// a root whose directory is gone, or under the lake.
    fn locate(&self, path: &Path) -> Option<(usize, Vec<u8>)> {
        if self
            .lake
            .as_ref()
            .is_some_and(|lake| path.starts_with(lake))
        {
            return None;
        }
        self.roots.iter().enumerate().find_map(|(i, root)| {
            root.identity?;
            let relative = path.strip_prefix(&root.dir).ok()?;
            let bytes = relative.as_os_str().as_bytes();
            (!bytes.is_empty()).then(|| (i, bytes.to_vec()))
        })
    }

    /// Whether the walk would leave this path out: inside `.git/`, or ignored by an ignore file
    /// at any level above it (a directory's rules over its parent's, whitelists included, and
    /// nothing under an ignored directory).
    fn ignored(&mut self, root: usize, relative: &[u8], is_dir: bool) -> bool {
        let Some(rules) = self.roots[root].ignore.as_mut() else {
            return false;
        };
        if relative.split(|&b| b == b'/').any(|c| c == b".git") {
            return true;
        }
        let path = Path::new(std::ffi::OsStr::from_bytes(relative));
        rules.matched(path, is_dir).is_ignore()
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
        if meta.is_dir() {
            return Ok(());
        }
        if self.ignored(root, &relative, false) {
            // Ignored now (an ignore file changed since it was reported): it is gone.
            return self.delete_path(path);
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

    /// Deletes `path` and every known path below it, at the cost of that subtree.
    fn delete_path(&mut self, path: &Path) -> Result<(), SourceError> {
        let below: Vec<PathBuf> = self
            .dirty
            .range(path.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(path))
            .map(|(p, _)| p.clone())
            .collect();
        for p in below {
            self.dirty.remove(&p);
        }
        let Some((root, relative)) = self.locate(path) else {
            return Ok(());
        };
        self.delete_known(root, &relative)
    }

    /// Deletes the known paths at and below `relative` (all of them for an empty one).
    fn delete_known(&mut self, root: usize, relative: &[u8]) -> Result<(), SourceError> {
        for relative in self.roots[root].known.remove_subtree(relative) {
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
        // Its ignore files (and `.git`) may have been created before its watch existed.
        self.reload_rules(root);
        if self.ignored(root, &relative, true) {
            return Ok(());
        }
        for path in self.list(dir).0 {
            self.upsert_path(&path, false)?;
        }
        Ok(())
    }

    /// The entries under `dir` that are not directories, with the walk's rules (the lake left
    /// out); false with them when part of the tree could not be listed (each such error is
    /// logged with its path).
    fn list(&self, dir: &Path) -> (Vec<PathBuf>, bool) {
        let mut complete = true;
        let entries = walk_builder(dir, self.options.no_ignore, self.lake_dir)
            .build()
            .filter_map(|entry| match entry {
                Ok(entry) => Some(entry),
                Err(error) => {
                    tracing::warn!(error = %error, "cannot list part of a watched directory");
                    self.control.progress.error(ErrorKind::Watch);
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
            self.control.progress.rescan();
            self.report.rescans += 1;
        }
        self.rescan_due = Some(Instant::now() + RESCAN_SETTLE);
        Ok(())
    }

    /// Reconciles every root with the disk: everything present is upserted (the graph drops
    /// unchanged versions), every known path not present is deleted.
    fn rescan(&mut self) -> Result<(), SourceError> {
        for root in 0..self.roots.len() {
            self.rescan_root(root)?;
        }
        Ok(())
    }

    fn rescan_root(&mut self, root: usize) -> Result<(), SourceError> {
        if self.roots[root].identity.is_none() {
            return Ok(()); // gone: its paths were deleted, and it is rescanned when it is back
        }
        self.reload_rules(root);
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
            return Ok(());
        }
        let gone: Vec<Vec<u8>> = self.roots[root]
            .known
            .keys()
            .filter(|k| !found.contains(*k))
            .cloned()
            .collect();
        for relative in gone {
            self.delete_known(root, &relative)?;
        }
        Ok(())
    }

    /// Checks that every root is still the directory being watched. One that was removed,
    /// renamed away or replaced by something else loses its paths (they are deleted, as they
    /// are gone from where it was watched) and its watch; once a directory is there again it is
    /// watched again and scanned whole. Each step is logged: a watch never runs blind.
    fn check_roots(&mut self) -> Result<(), SourceError> {
        self.next_root_check = Instant::now() + ROOT_CHECK_INTERVAL;
        for root in 0..self.roots.len() {
            let dir = self.roots[root].dir.clone();
            let now = std::fs::symlink_metadata(&dir)
                .ok()
                .filter(|m| m.is_dir())
                .and_then(|_| Excluded::of(&dir));
            let was = self.roots[root].identity;
            let went_away = std::mem::take(&mut self.roots[root].went_away);
            if was == now && !went_away {
                continue;
            }
            if was.is_some() {
                tracing::warn!(
                    path = %dir.display(),
                    "the watched directory is gone (removed, renamed or replaced): its files \
                     are deleted, and it is watched again when a directory is there again"
                );
                // The old watch may still follow a directory renamed away; its events must not
                // count as this root's.
                let _ = self.watcher.unwatch(&dir);
                self.delete_path(&dir)?;
                self.delete_known(root, b"")?;
                self.roots[root].identity = None;
            }
            if now.is_some() {
                if let Err(e) = self.watcher.watch(&dir, RecursiveMode::Recursive) {
                    // Gone again already, say: the next check tries again.
                    tracing::warn!(path = %dir.display(), error = %e, "cannot watch the directory again yet");
                    self.control.progress.error(ErrorKind::Watch);
                    continue;
                }
                tracing::warn!(path = %dir.display(), "the watched directory is back: watching it again");
                self.roots[root].identity = now;
                self.rescan_root(root)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn created(path: &str) -> notify::Result<Event> {
        Ok(Event::new(EventKind::Create(CreateKind::File)).add_path(PathBuf::from(path)))
    }

    #[test]
    fn a_full_event_channel_drops_the_event_and_owes_a_rescan_without_blocking() {
        let (sender, receiver) = crossbeam_channel::bounded(2);
        let overflowed = Arc::new(AtomicBool::new(false));
        let mut handler = forward(sender, overflowed.clone());
        handler(created("/w/a"));
        handler(created("/w/b"));
        assert!(!overflowed.load(Ordering::Acquire), "room for both");
        // The channel is full and nobody reads it: the handler must return all the same.
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            for i in 0..1000 {
                handler(created(&format!("/w/c{i}")));
            }
            let _ = done_tx.send(());
        });
        assert!(
            done_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "the handler blocked on a full channel"
        );
        assert!(overflowed.load(Ordering::Acquire), "a rescan is owed");
        let kept: Vec<PathBuf> = receiver
            .try_iter()
            .map(|e| e.unwrap().paths[0].clone())
            .collect();
        assert_eq!(kept, [PathBuf::from("/w/a"), PathBuf::from("/w/b")]);
    }

    #[test]
    fn rule_files_are_the_ignore_files_and_repository_markers_not_what_is_inside_git() {
        for rule in [".gitignore", "a/.ignore", "a/b/.git", "vendor/.jj"] {
            assert!(is_rule_file(rule.as_bytes()), "{rule}");
        }
        for other in [
            "a.gitignore",
            ".gitignore.bak",
            ".git/info/exclude",
            "a/.git/.gitignore",
            "x",
        ] {
            assert!(!is_rule_file(other.as_bytes()), "{other}");
        }
    }
}
