//! [`FileVersion`]: one observed version of one path with its features, the record that flows from the
//! kernel stage to the statistics and the sinks.

use serde::{Deserialize, Serialize};

/// Why a file's content features are null.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SkipReason {
    Symlink,
    NotRegular,
    TooLarge,
    Vanished,
    Unreadable,
}

impl SkipReason {
    pub const ALL: [SkipReason; 5] = [
        SkipReason::Symlink,
        SkipReason::NotRegular,
        SkipReason::TooLarge,
        SkipReason::Vanished,
        SkipReason::Unreadable,
    ];

    /// The reason a `skip_reason` value of the lake names.
    pub fn parse(value: &str) -> Option<SkipReason> {
        SkipReason::ALL.into_iter().find(|r| r.as_str() == value)
    }

    /// The `skip_reason` value in the lake.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Symlink => "symlink",
            SkipReason::NotRegular => "not_regular",
            SkipReason::TooLarge => "too_large",
            SkipReason::Vanished => "vanished",
            SkipReason::Unreadable => "unreadable",
        }
    }
}

/// Content features; all present together, or the version has a skip reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Features {
    pub hash: [u8; 16],
    pub lines: u64,
    pub entropy: f64,
    pub is_binary: bool,
    pub language: Option<Language>,
}

/// A language name from the language table. It travels by name and is looked up again on
/// arrival, so that every worker holds the same static string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Language(pub &'static str);

impl Serialize for Language {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Language {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Language, D::Error> {
        let name = String::deserialize(deserializer)?;
        crate::kernels::language::intern(&name)
            .map(Language)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown language {name:?}")))
    }
}

/// One `matches` row before it is written: where a rule matched and the (masked) excerpt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchRow {
    pub rule: u32,
    pub line: u64,
    pub column: u64,
    pub offset: u64,
    pub excerpt: String,
}

/// One observed version of a path: an upsert with features (or a skip reason), or a delete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileVersion {
    pub source: String,
    /// Exact path bytes, relative to the source, '/'-separated.
    pub path: Vec<u8>,
    pub deleted: bool,
    pub epoch: u64,
    pub size: Option<u64>,
    pub features: Option<Features>,
    pub skip_reason: Option<SkipReason>,
    /// (rule index, exact count) for every rule with a non-zero count.
    pub rule_counts: Vec<(u32, u64)>,
    /// At most `max_matches_per_rule` rows per rule.
    pub matches: Vec<MatchRow>,
    /// The MinHash signature, when the pipeline finds near-duplicates and the file gets one.
    pub signature: Option<std::sync::Arc<[u32]>>,
}

impl FileVersion {
    /// A delete of `path` at `epoch`.
    pub fn delete(source: String, path: Vec<u8>, epoch: u64) -> FileVersion {
        FileVersion {
            source,
            path,
            deleted: true,
            epoch,
            size: None,
            features: None,
            skip_reason: None,
            rule_counts: Vec::new(),
            matches: Vec::new(),
            signature: None,
        }
    }

    /// The path as UTF-8, lossy where the name is not valid UTF-8.
    pub fn path_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.path)
    }

    /// The exact name bytes when they are not valid UTF-8 (the `path_bytes` column).
    pub fn path_bytes_if_not_utf8(&self) -> Option<&[u8]> {
        std::str::from_utf8(&self.path)
            .is_err()
            .then_some(&self.path[..])
    }
}
