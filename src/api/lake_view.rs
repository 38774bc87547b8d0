//! The committed lake -> the model that the `files`, `file` and `duplicates` answers are read
//! from: every current version with its features, rule counts and match positions, the exact
//! duplicate groups and the near-duplicate clusters, all as of one committed epoch.
//!
//! It reads part files, so it is built on a blocking thread and cached by the server until the
//! committed epoch moves. It only reads: the writer's lock is never taken. Paths asked for are
//! looked up among the keys it holds; nothing a client sends names a file to open.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::sink::commit::{checkpoint_dir, part_epochs, parts, records};
use crate::sink::restore::{self, StateRange};
use crate::source::path_id;
use crate::version::{FileVersion, SkipReason};

/// Files a page holds unless `limit` says otherwise.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// The most files one page may hold.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Reads of a lake that changed under them (a compaction swapped parts away) are tried again
/// this many times.
const LOAD_TRIES: usize = 4;
/// The tables the view reads part files of.
const TABLES: [&str; 5] = [
    "files",
    "file_rules",
    "signatures",
    "matches",
    "near_duplicates",
];

/// One current file version with its features, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, async_graphql::SimpleObject)]
pub struct FileEntry {
    /// The logical source name.
    pub source: String,
    /// The path relative to the source, '/'-separated; lossy UTF-8 where the name is not.
    pub path: String,
    /// The exact bytes of the path in hex when it is not valid UTF-8; null otherwise.
    pub path_bytes: Option<String>,
    /// Size in bytes; null for entries that are not regular files.
    pub size: Option<u64>,
    /// XXH3-128 of the content, 32 lowercase hex digits (as `xxhsum -H2` prints it).
    pub hash: Option<String>,
    pub lines: Option<u64>,
    /// Shannon entropy of the bytes, bits per byte.
    pub entropy: Option<f64>,
    pub is_binary: Option<bool>,
    pub language: Option<String>,
    /// Why the content features are null: symlink, not_regular, too_large, vanished, unreadable.
    pub skip_reason: Option<String>,
    /// The epoch this version was observed in.
    pub epoch: u64,
    /// The exact match count of every rule that matched, by rule id.
    pub rule_counts: BTreeMap<String, u64>,
}

/// Where a rule matched in a file, as the lake's `matches` table holds it.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema, async_graphql::SimpleObject,
)]
pub struct MatchPosition {
    pub rule: String,
    /// 1-based line of the start of the match.
    pub line: u64,
    /// 1-based byte column of the start of the match within its line.
    pub column: u64,
    /// 0-based byte offset of the start of the match in the file.
    pub offset: u64,
    /// The matched line, at most 200 bytes; masked after its first 4 bytes for secret rules.
    pub excerpt: String,
}

/// A page of current files, ordered by (source, path).
#[derive(Debug, Clone, Serialize, ToSchema, async_graphql::SimpleObject)]
pub struct FilesPage {
    /// The committed epoch the answer is as of.
    pub committed_epoch: u64,
    pub files: Vec<FileEntry>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// One current file with its match positions (at most `max_matches_per_rule` per rule; the rule
/// counts are exact).
#[derive(Debug, Clone, Serialize, ToSchema, async_graphql::SimpleObject)]
pub struct FileDetail {
    /// The committed epoch the answer is as of.
    pub committed_epoch: u64,
    pub file: FileEntry,
    pub matches: Vec<MatchPosition>,
}

/// A file named by its key.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema, async_graphql::SimpleObject,
)]
pub struct FileRef {
    pub source: String,
    pub path: String,
}

/// Current non-empty files with the same content: two or more.
#[derive(Debug, Clone, Serialize, ToSchema, async_graphql::SimpleObject)]
pub struct DuplicateGroup {
    /// The content hash, 32 lowercase hex digits.
    pub hash: String,
    /// The size of each file, in bytes.
    pub size: u64,
    pub files: Vec<FileRef>,
}

/// A member of a near-duplicate cluster.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, async_graphql::SimpleObject)]
pub struct NearMember {
    pub source: String,
    pub path: String,
    /// Estimated Jaccard similarity to the representative (1.0 for the representative).
    pub similarity: f64,
}

/// A near-duplicate cluster: files joined by estimated similarity at least the pipeline's
/// threshold.
#[derive(Debug, Clone, Serialize, ToSchema, async_graphql::SimpleObject)]
pub struct NearCluster {
    /// The representative's path id, 32 lowercase hex digits.
    pub cluster: String,
    pub representative: FileRef,
    pub members: Vec<NearMember>,
}

/// The duplicates of the committed lake.
#[derive(Debug, Clone, Serialize, ToSchema, async_graphql::SimpleObject)]
pub struct Duplicates {
    /// The committed epoch the answer is as of.
    pub committed_epoch: u64,
    /// Exact groups, by hash.
    pub exact: Vec<DuplicateGroup>,
    /// Near-duplicate clusters, by cluster id; empty when the pipeline does not find them.
    pub near: Vec<NearCluster>,
}

/// The filters and position of a page of files.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FilesFilter {
    /// Only paths starting with this text.
    pub prefix: Option<String>,
    /// Only files of this language (as `language` shows it).
    pub language: Option<String>,
    /// Only files with at least one match of this rule id.
    pub rule: Option<String>,
    /// Only files skipped for this reason.
    #[param(inline)]
    pub skip_reason: Option<SkipReasonName>,
    /// Files per page, 1 to 1000; 100 unless given.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^([0-9a-f]{2})+$")]
    pub cursor: Option<String>,
}

/// The skip reasons a filter may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema, async_graphql::Enum)]
#[serde(rename_all = "snake_case")]
pub enum SkipReasonName {
    Symlink,
    NotRegular,
    TooLarge,
    Vanished,
    Unreadable,
}

impl SkipReasonName {
    fn reason(self) -> SkipReason {
        match self {
            SkipReasonName::Symlink => SkipReason::Symlink,
            SkipReasonName::NotRegular => SkipReason::NotRegular,
            SkipReasonName::TooLarge => SkipReason::TooLarge,
            SkipReasonName::Vanished => SkipReason::Vanished,
            SkipReasonName::Unreadable => SkipReason::Unreadable,
        }
    }
}

/// A filter the view cannot answer: a 400 for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

/// Why the view cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the committed lake {}: {reason}", root.display())]
pub struct LoadError {
    pub root: PathBuf,
    pub reason: String,
}

/// One current file: its key, what the API shows and where its rules matched.
#[derive(Debug, Clone)]
struct Entry {
    /// (source, exact path bytes): the order of every listing.
    key: (String, Vec<u8>),
    file: FileEntry,
    matches: Vec<MatchPosition>,
}

/// The committed lake as of one epoch.
#[derive(Debug, Clone, Default)]
pub struct LakeView {
    /// The committed epoch this view is as of.
    pub committed_epoch: u64,
    /// Sorted by key.
    entries: Vec<Entry>,
    rule_ids: HashSet<String>,
    exact: Vec<DuplicateGroup>,
    near: Vec<NearCluster>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            let pair = text.get(i..i + 2)?;
            // Lowercase hex digits only: `from_str_radix` alone also takes a sign.
            if !pair.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return None;
            }
            u8::from_str_radix(pair, 16).ok()
        })
        .collect()
}

/// A key as its place in the listing's order: the source, a NUL, the path (neither holds a
/// NUL), so that these bytes sort as the keys do.
fn place_of((source, path): &(String, Vec<u8>)) -> Vec<u8> {
    let mut bytes = source.as_bytes().to_vec();
    bytes.push(0);
    bytes.extend_from_slice(path);
    bytes
}

/// A key as a cursor: the hex of its place. Any such hex names a place to start after.
fn cursor_of(key: &(String, Vec<u8>)) -> String {
    hex(&place_of(key))
}

fn place_of_cursor(cursor: &str) -> Result<Vec<u8>, FilterError> {
    unhex(cursor).ok_or_else(|| {
        FilterError(format!(
            "'{cursor}' is not a cursor: a next_cursor of an earlier page is"
        ))
    })
}

fn entry_of(version: &FileVersion, rule_ids: &[String]) -> Entry {
    let path = version.path_lossy().into_owned();
    let exact = std::str::from_utf8(&version.path).is_ok();
    let features = version.features.as_ref();
    Entry {
        key: (version.source.clone(), version.path.clone()),
        file: FileEntry {
            source: version.source.clone(),
            path,
            path_bytes: (!exact).then(|| hex(&version.path)),
            size: version.size,
            hash: features.map(|f| hex(&f.hash)),
            lines: features.map(|f| f.lines),
            entropy: features.map(|f| f.entropy),
            is_binary: features.map(|f| f.is_binary),
            language: features.and_then(|f| f.language).map(|l| l.0.to_string()),
            skip_reason: version.skip_reason.map(|r| r.as_str().to_string()),
            epoch: version.epoch,
            rule_counts: (version.rule_counts.iter())
                .map(|&(rule, count)| (rule_ids[rule as usize].clone(), count))
                .collect(),
        },
        matches: Vec::new(),
    }
}

impl LakeView {
    /// The view of the lake at `root` as of the committed epoch `through` (0: an empty view).
    /// A compaction or checkpoint that changes the lake's files while they are read makes it
    /// read again.
    /// `rule_ids` names the pipeline's rules by index.
    pub fn load(root: &Path, through: u64, rule_ids: &[String]) -> Result<LakeView, LoadError> {
        let mut tries = 0;
        loop {
            let before = part_names(root);
            let read = read_view(root, through, rule_ids);
            let stable = lake_unchanged(&before, &part_names(root), through);
            let reason = match read {
                Ok(view) if stable => return Ok(view),
                Ok(_) => "its part files changed while they were read".to_string(),
                Err(reason) => reason,
            };
            tries += 1;
            if tries >= LOAD_TRIES {
                return Err(LoadError {
                    root: root.to_path_buf(),
                    reason,
                });
            }
        }
    }

    /// The number of current files.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `id` is one of the pipeline's rules.
    pub fn has_rule(&self, id: &str) -> bool {
        self.rule_ids.contains(id)
    }
}

/// The part files of every table the view reads, by table.
fn part_names(root: &Path) -> Vec<(&'static str, Vec<String>)> {
    TABLES
        .iter()
        .map(|&table| {
            let names = (parts(root, table).iter())
                .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
                .collect();
            (table, names)
        })
        .collect()
}

/// Whether what a read found through `through` is still the lake's: no part holding epochs at
/// most `through` went away, and none came (a compaction's merged part) in its place. Parts of
/// later commits come and do not matter.
fn lake_unchanged(
    before: &[(&'static str, Vec<String>)],
    after: &[(&'static str, Vec<String>)],
    through: u64,
) -> bool {
    let early = |name: &String| part_epochs(name).is_some_and(|(first, _)| first <= through);
    before.iter().zip(after).all(|((_, before), (_, after))| {
        let before: HashSet<&String> = before.iter().filter(|n| early(n)).collect();
        let after: HashSet<&String> = after.iter().filter(|n| early(n)).collect();
        before == after
    })
}

/// The checkpoint a read as of `through` may start from: the newest one a kept record names
/// that is at most `through` and still there (a newer record removes its predecessor's); None
/// reads every part.
fn checkpoint_for(root: &Path, through: u64) -> Option<u64> {
    records(root)
        .into_iter()
        .rev()
        .filter_map(|r| r.checkpoint)
        .find(|&c| c <= through && checkpoint_dir(root, c).is_dir())
}

fn read_view(root: &Path, through: u64, ids: &[String]) -> Result<LakeView, String> {
    let rule_ids: HashSet<String> = ids.iter().cloned().collect();
    if through == 0 {
        return Ok(LakeView {
            rule_ids,
            ..LakeView::default()
        });
    }
    let range = StateRange {
        checkpoint: checkpoint_for(root, through),
        through,
    };
    let state = restore::load(root, range, ids).map_err(|e| e.to_string())?;
    let mut entries: Vec<Entry> = state.versions.iter().map(|v| entry_of(v, ids)).collect();
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    let index: HashMap<(u128, u64), usize> = (state.versions.iter())
        .map(|v| {
            let at = entries
                .binary_search_by(|e| {
                    (e.key.0.as_str(), e.key.1.as_slice()).cmp(&(&v.source, &v.path))
                })
                .expect("every version has an entry");
            ((path_id(&v.source, &v.path), v.epoch), at)
        })
        .collect();
    read_matches(root, through, &index, &mut entries)?;
    let exact = exact_groups(&entries);
    let near = near_clusters(root, through)?;
    Ok(LakeView {
        committed_epoch: through,
        entries,
        rule_ids,
        exact,
        near,
    })
}

/// The batches of every committed part of `table` that may hold rows of epochs at most
/// `through`, checked against the table's schema.
fn table_batches(root: &Path, table: &str, through: u64) -> Result<Vec<RecordBatch>, String> {
    let mut batches = Vec::new();
    for path in parts(root, table) {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if part_epochs(&name).is_none_or(|(first, _)| first > through) {
            continue;
        }
        let reader = restore::open_table_file(&path, table, "part file", 16 * 1024)
            .map_err(|e| e.to_string())?;
        for batch in reader {
            batches.push(batch.map_err(|e| format!("cannot read {}: {e}", path.display()))?);
        }
    }
    Ok(batches)
}

/// The exact name of each row of a batch with `path` and `path_bytes` columns.
fn exact_path(batch: &RecordBatch, row: usize) -> Vec<u8> {
    let bytes = batch["path_bytes"].as_binary::<i32>();
    if bytes.is_valid(row) {
        bytes.value(row).to_vec()
    } else {
        batch["path"]
            .as_string::<i32>()
            .value(row)
            .as_bytes()
            .to_vec()
    }
}

/// Adds to each current version the `matches` rows of its epoch, in (line, column, rule) order.
fn read_matches(
    root: &Path,
    through: u64,
    index: &HashMap<(u128, u64), usize>,
    entries: &mut [Entry],
) -> Result<(), String> {
    for batch in table_batches(root, "matches", through)? {
        let source = batch["source"].as_string::<i32>();
        let epoch = batch["epoch"].as_primitive::<UInt64Type>();
        let rule = batch["rule"].as_string::<i32>();
        let line = batch["line"].as_primitive::<UInt64Type>();
        let column = batch["column"].as_primitive::<UInt64Type>();
        let offset = batch["offset"].as_primitive::<UInt64Type>();
        let excerpt = batch["excerpt"].as_string::<i32>();
        for row in 0..batch.num_rows() {
            let id = path_id(source.value(row), &exact_path(&batch, row));
            let Some(&at) = index.get(&(id, epoch.value(row))) else {
                continue;
            };
            entries[at].matches.push(MatchPosition {
                rule: rule.value(row).to_string(),
                line: line.value(row),
                column: column.value(row),
                offset: offset.value(row),
                excerpt: excerpt.value(row).to_string(),
            });
        }
    }
    for entry in entries {
        // A compaction's merged part and its originals may both have been read.
        entry
            .matches
            .sort_by(|a, b| (a.offset, &a.rule, a.line).cmp(&(b.offset, &b.rule, b.line)));
        entry.matches.dedup();
    }
    Ok(())
}

/// Current non-skipped, non-empty files sharing a hash, two or more, by hash: the files the
/// `duplicates` statistics count.
fn exact_groups(entries: &[Entry]) -> Vec<DuplicateGroup> {
    let mut by_hash: BTreeMap<&str, (u64, Vec<FileRef>)> = BTreeMap::new();
    for entry in entries {
        let file = &entry.file;
        let (Some(hash), Some(size), None) = (&file.hash, file.size, &file.skip_reason) else {
            continue;
        };
        if size == 0 {
            continue;
        }
        (by_hash.entry(hash).or_insert((size, Vec::new())).1).push(FileRef {
            source: file.source.clone(),
            path: file.path.clone(),
        });
    }
    by_hash
        .into_iter()
        .filter(|(_, (_, files))| files.len() >= 2)
        .map(|(hash, (size, files))| DuplicateGroup {
            hash: hash.to_string(),
            size,
            files,
        })
        .collect()
}

/// The near-duplicate clusters as of `through`: the `near_duplicates` memberships whose diffs
/// over the epochs up to it sum to more than zero.
fn near_clusters(root: &Path, through: u64) -> Result<Vec<NearCluster>, String> {
    type Membership = (String, String, Vec<u8>, String, String, u64);
    let mut sums: HashMap<Membership, (String, i64)> = HashMap::new();
    // A compaction's merged part and its originals may both have been read: each row counts
    // once (one epoch changes one membership at most once).
    let mut seen: HashSet<(u64, Membership, i64)> = HashSet::new();
    for batch in table_batches(root, "near_duplicates", through)? {
        let epoch = batch["epoch"].as_primitive::<UInt64Type>();
        let source = batch["source"].as_string::<i32>();
        let path = batch["path"].as_string::<i32>();
        let cluster = batch["cluster"].as_string::<i32>();
        let rep_source = batch["representative_source"].as_string::<i32>();
        let rep_path = batch["representative_path"].as_string::<i32>();
        let similarity = batch["similarity"].as_primitive::<Float64Type>();
        let diff = batch["diff"].as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            if epoch.value(row) > through {
                continue;
            }
            let membership: Membership = (
                cluster.value(row).to_string(),
                source.value(row).to_string(),
                exact_path(&batch, row),
                rep_source.value(row).to_string(),
                rep_path.value(row).to_string(),
                similarity.value(row).to_bits(),
            );
            if !seen.insert((epoch.value(row), membership.clone(), diff.value(row))) {
                continue;
            }
            let sum = sums
                .entry(membership)
                .or_insert_with(|| (path.value(row).to_string(), 0));
            sum.1 += diff.value(row);
        }
    }
    let mut clusters: BTreeMap<String, NearCluster> = BTreeMap::new();
    for ((cluster, source, _, rep_source, rep_path, similarity), (path, sum)) in sums {
        if sum <= 0 {
            continue;
        }
        let entry = clusters
            .entry(cluster.clone())
            .or_insert_with(|| NearCluster {
                cluster,
                representative: FileRef {
                    source: rep_source,
                    path: rep_path,
                },
                members: Vec::new(),
            });
        entry.members.push(NearMember {
            source,
            path,
            similarity: f64::from_bits(similarity),
        });
    }
    let mut clusters: Vec<NearCluster> = clusters.into_values().collect();
    for cluster in &mut clusters {
        cluster
            .members
            .sort_by(|a, b| (&a.source, &a.path).cmp(&(&b.source, &b.path)));
    }
    Ok(clusters)
}

/// A page of the current files that pass `filter`, after its cursor.
pub fn files(view: &LakeView, filter: &FilesFilter) -> Result<FilesPage, FilterError> {
    let limit = match filter.limit {
        None => DEFAULT_PAGE_SIZE,
        Some(n) if (1..=MAX_PAGE_SIZE as u64).contains(&n) => n as usize,
        Some(n) => {
            return Err(FilterError(format!(
                "limit {n}: a page holds 1 to {MAX_PAGE_SIZE} files"
            )));
        }
    };
    if let Some(rule) = &filter.rule
        && !view.has_rule(rule)
    {
        return Err(FilterError(format!(
            "'{rule}' is not a rule of this pipeline"
        )));
    }
    let start = match &filter.cursor {
        None => 0,
        Some(cursor) => {
            let after = place_of_cursor(cursor)?;
            view.entries.partition_point(|e| place_of(&e.key) <= after)
        }
    };
    let skip_reason = filter.skip_reason.map(|r| r.reason().as_str());
    let passes = |entry: &&Entry| {
        let file = &entry.file;
        filter
            .prefix
            .as_ref()
            .is_none_or(|p| file.path.starts_with(p.as_str()))
            && (filter.language.as_ref()).is_none_or(|l| file.language.as_ref() == Some(l))
            && (filter.rule.as_ref())
                .is_none_or(|r| file.rule_counts.get(r).is_some_and(|&n| n > 0))
            && skip_reason.is_none_or(|r| file.skip_reason.as_deref() == Some(r))
    };
    let mut selected = view.entries[start..].iter().filter(passes);
    let page: Vec<&Entry> = selected.by_ref().take(limit).collect();
    let more = selected.next().is_some();
    Ok(FilesPage {
        committed_epoch: view.committed_epoch,
        next_cursor: (more && !page.is_empty()).then(|| cursor_of(&page[page.len() - 1].key)),
        files: page.into_iter().map(|e| e.file.clone()).collect(),
    })
}

/// The current version of `path` in `source`, with its match positions. `path` is a lake key
/// (the lossy path the listings show, or the hex `path_bytes` of a name that is not UTF-8);
/// None when no current file has it.
pub fn file(view: &LakeView, source: &str, path: &str) -> Option<FileDetail> {
    let found = view
        .entries
        .binary_search_by(|e| {
            (e.key.0.as_str(), e.key.1.as_slice()).cmp(&(source, path.as_bytes()))
        })
        .ok()
        .or_else(|| {
            // A name that is not UTF-8 is asked for by its lossy path or its exact bytes in hex.
            view.entries.iter().position(|e| {
                e.key.0 == source
                    && e.file.path_bytes.is_some()
                    && (e.file.path == path || e.file.path_bytes.as_deref() == Some(path))
            })
        })?;
    let entry = &view.entries[found];
    Some(FileDetail {
        committed_epoch: view.committed_epoch,
        file: entry.file.clone(),
        matches: entry.matches.clone(),
    })
}

/// The exact duplicate groups and near-duplicate clusters.
pub fn duplicates(view: &LakeView) -> Duplicates {
    Duplicates {
        committed_epoch: view.committed_epoch,
        exact: view.exact.clone(),
        near: view.near.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_cursors_are_places_in_the_key_order() {
        let keys = [
            ("a".to_string(), b"z".to_vec()),
            ("ab".to_string(), b"a".to_vec()),
            ("b".to_string(), b"a/b\xff.rs".to_vec()),
            ("b".to_string(), b"a0".to_vec()),
        ];
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        let places: Vec<Vec<u8>> = keys.iter().map(place_of).collect();
        assert!(places.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(place_of_cursor(&cursor_of(&keys[2])), Ok(places[2].clone()));
        for bad in ["", "0", "zz", "00FF", "+1"] {
            assert!(place_of_cursor(bad).is_err(), "{bad}");
        }
    }
}
