//! The current file versions (a differential collection keyed by path) -> pattern statistics: each
//! function maps that collection to a collection of [`StatKey`]s whose accumulated difference is the
//! statistic's value. A modified file's old contribution is retracted by differential itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::trace::{Cursor, Navigable};
use differential_dataflow::{AsCollection, VecCollection};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Operator};

use super::time::{epoch_end, epoch_of};
use crate::version::{FileVersion, Language};

/// What the statistics need of a current file version; small, because the arrangement holds one
/// per tracked path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tracked {
    /// The version has a skip reason: it counts only as `total/skipped`.
    pub skipped: bool,
    pub size: u64,
    pub lines: u64,
    pub language: Option<Language>,
    pub hash: [u8; 16],
    /// The `rule_dir` key: the leading directories of the path, shared by the versions in one
    /// directory (see [`DirKeys`]), so that the arrangement copies a pointer, not a string.
    pub dir: Arc<str>,
    /// (rule, count) for rules with a non-zero count; shared like `dir`.
    pub rules: Arc<[(u32, u64)]>,
    /// The MinHash signature and the name it belongs to, for the near-duplicate stage.
    pub signed: Option<Arc<Signed>>,
}

/// A current version's MinHash signature, with what a `near_duplicates` row names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Signed {
    /// XXH3-64 of the values: files with equal signatures share it and are handled as one.
    pub group: u64,
    pub source: String,
    pub path: Vec<u8>,
    pub values: Arc<[u32]>,
}

impl Signed {
    pub fn new(source: &str, path: &[u8], values: Arc<[u32]>) -> Signed {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Signed {
            group: xxhash_rust::xxh3::xxh3_64(&bytes),
            source: source.to_string(),
            path: path.to_vec(),
            values,
        }
    }
}

impl Tracked {
    /// The statistics' view of an upsert; None for a delete.
    pub fn of(version: &FileVersion, dirs: &mut DirKeys) -> Option<Tracked> {
        if version.deleted {
            return None;
        }
        Some(match &version.features {
            Some(f) => Tracked {
                skipped: false,
                size: version.size.unwrap_or(0),
                lines: f.lines,
                language: f.language,
                hash: f.hash,
                dir: dirs.key(&version.path),
                rules: Arc::from(version.rule_counts.as_slice()),
                signed: version
                    .signature
                    .clone()
                    .map(|values| Arc::new(Signed::new(&version.source, &version.path, values))),
            },
            None => Tracked {
                skipped: true,
                size: 0,
                lines: 0,
                language: None,
                hash: [0; 16],
                dir: dirs.empty.clone(),
                rules: Arc::from([]),
                signed: None,
            },
        })
    }
}

/// One shared `Arc<str>` per directory key, per worker.
pub struct DirKeys {
    depth: usize,
    keys: FxHashMap<Box<[u8]>, Arc<str>>,
    top: Arc<str>,
    empty: Arc<str>,
}

impl DirKeys {
    /// Keys of the first `depth` directory components.
    pub fn new(depth: usize) -> DirKeys {
        DirKeys {
            depth,
            keys: FxHashMap::default(),
            top: Arc::from("."),
            empty: Arc::from(""),
        }
    }

    /// The directory key of `path`.
    pub fn key(&mut self, path: &[u8]) -> Arc<str> {
        let Some(prefix) = directory_prefix(path, self.depth) else {
            return self.top.clone();
        };
        if let Some(shared) = self.keys.get(prefix) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(String::from_utf8_lossy(prefix));
        self.keys.insert(prefix.into(), shared.clone());
        shared
    }
}

/// The bytes of the first `depth` components of `path`'s directory; None for a file at the top.
fn directory_prefix(path: &[u8], depth: usize) -> Option<&[u8]> {
    let directory = &path[..memchr::memrchr(b'/', path)?];
    if depth == 0 {
        return None;
    }
    let end = memchr::memchr_iter(b'/', directory)
        .nth(depth - 1)
        .unwrap_or(directory.len());
    Some(&directory[..end])
}

/// Which statistic family a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Dimension {
    Rule,
    RuleLanguage,
    RuleDir,
    Language,
    Duplicates,
    NearDuplicates,
    Total,
}

impl Dimension {
    pub const ALL: [Dimension; 7] = [
        Dimension::Rule,
        Dimension::RuleLanguage,
        Dimension::RuleDir,
        Dimension::Language,
        Dimension::Duplicates,
        Dimension::NearDuplicates,
        Dimension::Total,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Rule => "rule",
            Dimension::RuleLanguage => "rule_language",
            Dimension::RuleDir => "rule_dir",
            Dimension::Language => "language",
            Dimension::Duplicates => "duplicates",
            Dimension::NearDuplicates => "near_duplicates",
            Dimension::Total => "total",
        }
    }
}

/// What a statistic measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Metric {
    Files,
    Matches,
    Bytes,
    Lines,
    Paths,
    Skipped,
    Clusters,
    OverflowBuckets,
}

impl Metric {
    pub const ALL: [Metric; 8] = [
        Metric::Files,
        Metric::Matches,
        Metric::Bytes,
        Metric::Lines,
        Metric::Paths,
        Metric::Skipped,
        Metric::Clusters,
        Metric::OverflowBuckets,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Files => "files",
            Metric::Matches => "matches",
            Metric::Bytes => "bytes",
            Metric::Lines => "lines",
            Metric::Paths => "paths",
            Metric::Skipped => "skipped",
            Metric::Clusters => "clusters",
            Metric::OverflowBuckets => "overflow_buckets",
        }
    }
}

/// One statistic: a row of `stats_current`, a key of `stats_changes`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StatKey {
    pub dimension: Dimension,
    pub key: KeyText,
    /// Rule index, for the rule dimensions.
    pub rule: Option<u32>,
    pub metric: Metric,
}

impl StatKey {
    pub fn new(
        dimension: Dimension,
        key: impl Into<KeyText>,
        rule: Option<u32>,
        metric: Metric,
    ) -> Self {
        StatKey {
            dimension,
            key: key.into(),
            rule,
            metric,
        }
    }
}

/// The text of a statistic's key: static (languages, `''`) or shared (directories, hashes), so
/// that a copy is a pointer copy. Equal keys are usually the same pointer, which equality checks
/// before it compares the text.
#[derive(Debug, Clone)]
pub enum KeyText {
    Static(&'static str),
    Shared(Arc<str>),
}

impl std::ops::Deref for KeyText {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            KeyText::Static(text) => text,
            KeyText::Shared(text) => text,
        }
    }
}

impl PartialEq for KeyText {
    fn eq(&self, other: &KeyText) -> bool {
        let (a, b): (&str, &str) = (self, other);
        std::ptr::eq(a, b) || a == b
    }
}

impl Eq for KeyText {}

impl PartialOrd for KeyText {
    fn partial_cmp(&self, other: &KeyText) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyText {
    fn cmp(&self, other: &KeyText) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

impl std::hash::Hash for KeyText {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl Serialize for KeyText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<KeyText, D::Error> {
        Arc::<str>::deserialize(deserializer).map(KeyText::Shared)
    }
}

impl From<&'static str> for KeyText {
    fn from(text: &'static str) -> KeyText {
        KeyText::Static(text)
    }
}

impl From<Arc<str>> for KeyText {
    fn from(text: Arc<str>) -> KeyText {
        KeyText::Shared(text)
    }
}

impl From<String> for KeyText {
    fn from(text: String) -> KeyText {
        KeyText::Shared(text.into())
    }
}

/// The current versions: an arrangement with one value per tracked path, keyed by its path id.
pub type Current<'scope> = Arranged<'scope, TraceAgent<ValSpine<u128, Tracked, u64, isize>>>;
/// Statistics: the accumulated difference of each key is its value.
pub type Stats<'scope> = VecCollection<'scope, u64, StatKey>;

/// Every statistic, as a collection of changes (see [`arrange_by_epoch`], which consolidates
/// them).
pub fn all_stats<'scope>(current: Current<'scope>) -> Stats<'scope> {
    content_stats(current.clone()).concat(duplicate_stats(current))
}

/// `rule`, `rule_language`, `rule_dir`, `language` and `total`: the statistics that are sums
/// over single versions, computed in one pass over the collection.
pub fn content_stats<'scope>(current: Current<'scope>) -> Stats<'scope> {
    contributions(current, "ContentStats", |tracked, emit| {
        rule_contributions(tracked, emit);
        language_contributions(tracked, emit);
        total_contributions(tracked, emit);
    })
}

/// Like `explode`: each current version contributes `(statistic, amount)` pairs, multiplied by
/// its difference. The versions are read in place from the arrangement's batches, and equal
/// statistics are summed per time until the input frontier passes it: a file contributes a few
/// dozen updates to a few hundred distinct statistics, so what leaves the operator is orders of
/// magnitude smaller than what the files contribute. This is a combiner, local to the worker
/// that owns the versions; the statistics' arrangement ([`arrange_by_epoch`]) consolidates
/// across workers and times. Without it (`flat_map_ref` and `explode` straight into the
/// arrangement) a replay of the Linux tree takes about a fifth longer.
fn contributions<'scope>(
    current: Current<'scope>,
    name: &str,
    logic: impl Fn(&Tracked, &mut dyn FnMut(StatKey, i64)) + 'static,
) -> Stats<'scope> {
    current
        .stream
        .unary_frontier::<CapacityContainerBuilder<Vec<(StatKey, u64, isize)>>, _, _, _>(
            Pipeline,
            name,
            move |_capability, _info| {
                // Held at the least time with pending sums.
                let mut capability: Option<Capability<u64>> = None;
                let mut sums: BTreeMap<u64, FxHashMap<StatKey, i64>> = BTreeMap::new();
                let mut times: Vec<(u64, isize)> = Vec::new();
                move |(input, frontier), output| {
                    input.for_each(|time, data| {
                        let Some(cap) = time.retain_least(0) else {
                            return;
                        };
                        if capability.as_ref().is_none_or(|c| cap.time() < c.time()) {
                            capability = Some(cap);
                        }
                        for span in data.iter() {
                            let Some(batch) = span.inner.as_ref() else {
                                continue;
                            };
                            let mut cursor = batch.cursor();
                            while cursor.key_valid(batch) {
                                while let Some(tracked) = cursor.get_val(batch) {
                                    times.clear();
                                    cursor.map_times(batch, |t, d| times.push((*t, *d)));
                                    logic(tracked, &mut |key, amount| {
                                        for &(t, d) in &times {
                                            let at = sums.entry(t).or_default();
                                            match at.get_mut(&key) {
                                                Some(sum) => *sum += amount * d as i64,
                                                None => {
                                                    at.insert(key.clone(), amount * d as i64);
                                                }
                                            }
                                        }
                                    });
                                    cursor.step_val(batch);
                                }
                                cursor.step_key(batch);
                            }
                        }
                    });
                    let Some(cap) = capability.as_mut() else {
                        return;
                    };
                    while let Some(entry) = sums.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (time, stats) = entry.remove_entry();
                        let at = cap.delayed(&time);
                        output.session(&at).give_iterator(
                            stats
                                .into_iter()
                                .filter(|(_, sum)| *sum != 0)
                                .map(|(key, sum)| (key, time, sum as isize)),
                        );
                    }
                    match sums.keys().next() {
                        Some(least) => cap.downgrade(least),
                        None => capability = None,
                    }
                }
            },
        )
        .as_collection()
}

/// Consolidated changes of `D`s, one per `D` and epoch, at the epoch's last time.
pub type Changes<'scope, D> = StreamVec<'scope, u64, (D, u64, isize)>;

/// Changes to statistics (or near-duplicate memberships) -> their arrangement: exchanged by the
/// key's hash, each key's changes consolidated by differential into one per epoch (the times are
/// advanced to their epoch's end), which leave in the arrangement's batches, once the epoch is
/// complete, for the statistics writer. The trace itself is compacted as the frontier moves,
/// since nothing reads it at an older time: it holds one value per live key.
pub fn arrange_by_epoch<'scope, D>(
    changes: VecCollection<'scope, u64, D>,
    name: &str,
) -> Changes<'scope, D>
where
    D: differential_dataflow::ExchangeData + differential_dataflow::Hashable,
{
    changes
        .delay(|time| epoch_end(epoch_of(*time)))
        .arrange_by_self_named(name)
        .as_collection(|key: &D, _| key.clone())
        .inner
}

/// `rule`, `rule_language` and `rule_dir`: per rule, files with a match and matches, overall, by
/// language (`''` when unknown) and by the leading `dir_depth` directories (`'.'` at the top).
pub fn rule_contributions(tracked: &Tracked, emit: &mut dyn FnMut(StatKey, i64)) {
    if tracked.skipped {
        return;
    }
    let language = tracked.language.map_or("", |l| l.0);
    for &(rule, count) in tracked.rules.iter() {
        for (dimension, key) in [
            (Dimension::Rule, KeyText::Static("")),
            (Dimension::RuleLanguage, KeyText::Static(language)),
            (Dimension::RuleDir, KeyText::Shared(tracked.dir.clone())),
        ] {
            emit(
                StatKey::new(dimension, key.clone(), Some(rule), Metric::Files),
                1,
            );
            emit(
                StatKey::new(dimension, key, Some(rule), Metric::Matches),
                count as i64,
            );
        }
    }
}

/// `language`: files, bytes and lines per language (`''` when unknown).
pub fn language_contributions(tracked: &Tracked, emit: &mut dyn FnMut(StatKey, i64)) {
    if tracked.skipped {
        return;
    }
    let key = tracked.language.map_or("", |l| l.0);
    let stat = |metric| StatKey::new(Dimension::Language, key, None, metric);
    emit(stat(Metric::Files), 1);
    emit(stat(Metric::Bytes), tracked.size as i64);
    emit(stat(Metric::Lines), tracked.lines as i64);
}

/// `total`: files, bytes, lines and matches of the files with content features, and `skipped`.
pub fn total_contributions(tracked: &Tracked, emit: &mut dyn FnMut(StatKey, i64)) {
    let total = |metric| StatKey::new(Dimension::Total, "", None, metric);
    if tracked.skipped {
        emit(total(Metric::Skipped), 1);
        return;
    }
    let matches: u64 = tracked.rules.iter().map(|(_, n)| n).sum();
    emit(total(Metric::Files), 1);
    emit(total(Metric::Bytes), tracked.size as i64);
    emit(total(Metric::Lines), tracked.lines as i64);
    emit(total(Metric::Matches), matches as i64);
}

/// `duplicates`: per content hash held by two or more current non-empty paths, how many.
pub fn duplicate_stats<'scope>(current: Current<'scope>) -> Stats<'scope> {
    current
        .flat_map_ref(|_, tracked| (!tracked.skipped && tracked.size > 0).then_some(tracked.hash))
        .count()
        .filter(|(_, paths)| *paths >= 2)
        .explode(|(hash, paths)| {
            let key = hash.iter().map(|b| format!("{b:02x}")).collect::<String>();
            Some((
                StatKey::new(Dimension::Duplicates, key, None, Metric::Paths),
                paths,
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::DirKeys;

    #[test]
    fn directory_keys() {
        let key = |path: &[u8], depth| DirKeys::new(depth).key(path).to_string();
        assert_eq!(key(b"a.rs", 1), ".");
        assert_eq!(key(b"src/a.rs", 1), "src");
        assert_eq!(key(b"src/x/y/a.rs", 2), "src/x");
        assert_eq!(key(b"src/x/a.rs", 5), "src/x");
        assert_eq!(key(b"src/x/a.rs", 0), ".");
        let mut keys = DirKeys::new(1);
        assert_eq!(&*keys.key(b"src/x/a.rs"), "src");
        assert_eq!(&*keys.key(b"src/b.rs"), "src");
        assert_eq!(&*keys.key(b"b.rs"), ".");
    }
}
