//! The current file versions (a differential collection keyed by path) -> pattern statistics: each
//! function maps that collection to a collection of [`StatKey`]s whose accumulated difference is the
//! statistic's value. A modified file's old contribution is retracted by differential itself.

use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

use super::reconcile::PathKey;
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
    /// (rule, count) for rules with a non-zero count.
    pub rules: Vec<(u32, u64)>,
}

impl Tracked {
    /// The statistics' view of an upsert; None for a delete.
    pub fn of(version: &FileVersion) -> Option<Tracked> {
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
                rules: version.rule_counts.clone(),
            },
            None => Tracked {
                skipped: true,
                size: 0,
                lines: 0,
                language: None,
                hash: [0; 16],
                rules: Vec::new(),
            },
        })
    }
}

/// Which statistic family a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Dimension {
    Rule,
    RuleLanguage,
    RuleDir,
    Language,
    Duplicates,
    Total,
}

impl Dimension {
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Rule => "rule",
            Dimension::RuleLanguage => "rule_language",
            Dimension::RuleDir => "rule_dir",
            Dimension::Language => "language",
            Dimension::Duplicates => "duplicates",
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
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Files => "files",
            Metric::Matches => "matches",
            Metric::Bytes => "bytes",
            Metric::Lines => "lines",
            Metric::Paths => "paths",
            Metric::Skipped => "skipped",
        }
    }
}

/// One statistic: a row of `stats_current`, a key of `stats_changes`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StatKey {
    pub dimension: Dimension,
    pub key: String,
    /// Rule index, for the rule dimensions.
    pub rule: Option<u32>,
    pub metric: Metric,
}

impl StatKey {
    fn new(
        dimension: Dimension,
        key: impl Into<String>,
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

/// The current versions: one record per tracked path.
pub type Current<'scope> = VecCollection<'scope, u64, (PathKey, Tracked)>;
/// Statistics: the accumulated difference of each key is its value.
pub type Stats<'scope> = VecCollection<'scope, u64, StatKey>;

/// Every statistic, consolidated.
pub fn all_stats<'scope>(current: Current<'scope>, dir_depth: usize) -> Stats<'scope> {
    rule_stats(current.clone(), dir_depth)
        .concat(language_stats(current.clone()))
        .concat(duplicate_stats(current.clone()))
        .concat(total_stats(current))
        .consolidate()
}

/// `rule`, `rule_language` and `rule_dir`: per rule, files with a match and matches, overall, by
/// language (`''` when unknown) and by the leading `dir_depth` directories (`'.'` at the top).
pub fn rule_stats<'scope>(current: Current<'scope>, dir_depth: usize) -> Stats<'scope> {
    current.explode(move |((_, path), tracked)| {
        let mut out = Vec::new();
        if tracked.skipped {
            return out;
        }
        let language = tracked.language.map_or("", |l| l.0);
        let dir = directory_key(&path, dir_depth);
        for &(rule, count) in &tracked.rules {
            for (dimension, key) in [
                (Dimension::Rule, ""),
                (Dimension::RuleLanguage, language),
                (Dimension::RuleDir, dir.as_str()),
            ] {
                out.push((StatKey::new(dimension, key, Some(rule), Metric::Files), 1));
                out.push((
                    StatKey::new(dimension, key, Some(rule), Metric::Matches),
                    count as isize,
                ));
            }
        }
        out
    })
}

/// `language`: files, bytes and lines per language (`''` when unknown).
pub fn language_stats<'scope>(current: Current<'scope>) -> Stats<'scope> {
    current.explode(|(_, tracked)| {
        if tracked.skipped {
            return Vec::new();
        }
        let key = tracked.language.map_or("", |l| l.0);
        vec![
            (
                StatKey::new(Dimension::Language, key, None, Metric::Files),
                1,
            ),
            (
                StatKey::new(Dimension::Language, key, None, Metric::Bytes),
                tracked.size as isize,
            ),
            (
                StatKey::new(Dimension::Language, key, None, Metric::Lines),
                tracked.lines as isize,
            ),
        ]
    })
}

/// `duplicates`: per content hash held by two or more current non-empty paths, how many.
pub fn duplicate_stats<'scope>(current: Current<'scope>) -> Stats<'scope> {
    current
        .filter(|(_, tracked)| !tracked.skipped && tracked.size > 0)
        .map(|(_, tracked)| tracked.hash)
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

/// `total`: files, bytes, lines and matches of the files with content features, and `skipped`.
pub fn total_stats<'scope>(current: Current<'scope>) -> Stats<'scope> {
    current.explode(|(_, tracked)| {
        let total = |metric| StatKey::new(Dimension::Total, "", None, metric);
        if tracked.skipped {
            return vec![(total(Metric::Skipped), 1)];
        }
        let matches: u64 = tracked.rules.iter().map(|(_, n)| n).sum();
        vec![
            (total(Metric::Files), 1),
            (total(Metric::Bytes), tracked.size as isize),
            (total(Metric::Lines), tracked.lines as isize),
            (total(Metric::Matches), matches as isize),
        ]
    })
}

/// The first `depth` directory components of `path`'s directory, '/'-joined; `'.'` for a file at
/// the top.
pub fn directory_key(path: &[u8], depth: usize) -> String {
    let text = String::from_utf8_lossy(path);
    let mut components: Vec<&str> = text.split('/').collect();
    components.pop();
    if components.is_empty() || depth == 0 {
        return ".".to_string();
    }
    components.truncate(depth);
    components.join("/")
}

#[cfg(test)]
mod tests {
    use super::directory_key;

    #[test]
    fn directory_keys() {
        assert_eq!(directory_key(b"a.rs", 1), ".");
        assert_eq!(directory_key(b"src/a.rs", 1), "src");
        assert_eq!(directory_key(b"src/x/y/a.rs", 2), "src/x");
        assert_eq!(directory_key(b"src/x/a.rs", 5), "src/x");
    }
}
