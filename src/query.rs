//! A lake -> its current statistics, read back from `stats_current.parquet`, for `exoflow stats`.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::{Array, Int64Array, StringArray, UInt64Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::sink::schema::table;
use crate::sink::stats::STATS_CURRENT_FILE;

/// One row of `stats_current`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct StatRow {
    pub dimension: String,
    pub key: String,
    pub rule: Option<String>,
    pub metric: String,
    pub value: i64,
    pub epoch: u64,
}

/// Why the statistics could not be read.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(
        "{path} has no statistics yet (no {STATS_CURRENT_FILE}); replay or watch into it first"
    )]
    NoStatistics { path: PathBuf },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Reads every row of `LAKE/stats_current.parquet`, sorted.
pub fn current_stats(lake: &Path) -> Result<Vec<StatRow>, QueryError> {
    let path = lake.join(STATS_CURRENT_FILE);
    let read = |e: Box<dyn std::error::Error + Send + Sync>| QueryError::Read {
        path: path.clone(),
        source: e,
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(QueryError::NoStatistics {
                path: lake.to_path_buf(),
            });
        }
        Err(e) => return Err(read(e.into())),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| read(e.into()))?;
    // The file is checked whole before a row is taken, so that a file of another schema is an
    // error naming the column, never a panic or a partial answer.
    if let Some(detail) = table("stats_current").difference(builder.schema()) {
        return Err(read(
            format!("its columns are not those of schemas/stats_current.json: {detail}").into(),
        ));
    }
    let reader = builder.build().map_err(|e| read(e.into()))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| read(e.into()))?;
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
                .ok_or_else(|| read(format!("column {name} is missing or not text").into()))
        };
        let (dimension, key, rule, metric) = (
            text("dimension")?,
            text("key")?,
            text("rule")?,
            text("metric")?,
        );
        let value = batch
            .column_by_name("value")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
            .ok_or_else(|| read("column value is missing or not int64".into()))?;
        let epoch = batch
            .column_by_name("epoch")
            .and_then(|c| c.as_any().downcast_ref::<UInt64Array>().cloned())
            .ok_or_else(|| read("column epoch is missing or not uint64".into()))?;
        for i in 0..batch.num_rows() {
            rows.push(StatRow {
                dimension: dimension.value(i).to_string(),
                key: key.value(i).to_string(),
                rule: rule.is_valid(i).then(|| rule.value(i).to_string()),
                metric: metric.value(i).to_string(),
                value: value.value(i),
                epoch: epoch.value(i),
            });
        }
    }
    rows.sort();
    Ok(rows)
}

/// The dimensions of `stats_current` (the names of [`Dimension`]), in the order the summary
/// shows them: what `--dimension` accepts.
pub const DIMENSIONS: [&str; 7] = [
    "total",
    "language",
    "rule",
    "rule_language",
    "rule_dir",
    "duplicates",
    "near_duplicates",
];

/// Languages and rules the summary lists; the rest are counted.
const SUMMARY_TOP: usize = 10;
/// Duplicate groups the summary lists.
const SUMMARY_DUPLICATES: usize = 5;

/// The statistics in brief, for people: totals, languages and rules (the largest first), then
/// the duplicate groups counted, with the largest few. A lake of many files has thousands of
/// `rule_dir` and `duplicates` rows, which [`format_table`] of one dimension lists.
pub fn format_summary(rows: &[StatRow]) -> String {
    let Some(epoch) = rows.first().map(|r| r.epoch) else {
        return "(no statistics)".to_string();
    };
    let value = |dimension: &str, key: &str, rule: Option<&str>, metric: &str| {
        rows.iter()
            .find(|r| {
                r.dimension == dimension
                    && r.key == key
                    && r.rule.as_deref() == rule
                    && r.metric == metric
            })
            .map_or(0, |r| r.value)
    };
    let mut out = format!(
        "statistics current at epoch {epoch} ({} rows; --dimension DIMENSION lists one in full, --json every row)\n\n",
        rows.len()
    );
    let total = |metric| value("total", "", None, metric);
    out.push_str(&format!(
        "total: {} files, {} bytes, {} lines, {} matches, {} skipped\n",
        total("files"),
        total("bytes"),
        total("lines"),
        total("matches"),
        total("skipped")
    ));

    let mut languages: Vec<(&str, [i64; 3])> = keys(rows, "language")
        .into_iter()
        .map(|key| {
            let metric = |m| value("language", key, None, m);
            (key, [metric("files"), metric("bytes"), metric("lines")])
        })
        .collect();
    languages.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    out.push('\n');
    if languages.is_empty() {
        out.push_str("languages: none\n");
    } else {
        let cells = languages.iter().take(SUMMARY_TOP).map(|(key, [f, b, l])| {
            let name = if key.is_empty() { "(unknown)" } else { key };
            vec![
                name.to_string(),
                f.to_string(),
                b.to_string(),
                l.to_string(),
            ]
        });
        out.push_str(&align(&["language", "files", "bytes", "lines"], cells, 1));
        out.push_str(&more_than(
            languages.len(),
            SUMMARY_TOP,
            ("language", "languages"),
            "--dimension language",
        ));
    }

    let mut rules: Vec<(&str, [i64; 2])> = rows
        .iter()
        .filter(|r| r.dimension == "rule")
        .filter_map(|r| r.rule.as_deref())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|rule| {
            let metric = |m| value("rule", "", Some(rule), m);
            (rule, [metric("matches"), metric("files")])
        })
        .collect();
    rules.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    out.push('\n');
    if rules.is_empty() {
        out.push_str("rules: no matches\n");
    } else {
        let cells = rules
            .iter()
            .take(SUMMARY_TOP)
            .map(|(rule, [m, f])| vec![rule.to_string(), m.to_string(), f.to_string()]);
        out.push_str(&align(&["rule", "matches", "files"], cells, 1));
        out.push_str(&more_than(
            rules.len(),
            SUMMARY_TOP,
            ("rule", "rules"),
            "--dimension rule",
        ));
        out.push_str(
            "(by language and by directory: --dimension rule_language, --dimension rule_dir)\n",
        );
    }

    let mut groups: Vec<(&str, i64)> = rows
        .iter()
        .filter(|r| r.dimension == "duplicates" && r.metric == "paths")
        .map(|r| (r.key.as_str(), r.value))
        .collect();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    out.push('\n');
    let near = |metric| value("near_duplicates", "", None, metric);
    let near_line = rows
        .iter()
        .any(|r| r.dimension == "near_duplicates")
        .then(|| near_duplicates_line(near("clusters"), near("files"), near("overflow_buckets")));
    if groups.is_empty() {
        out.push_str("duplicates: none");
        if let Some(line) = near_line {
            out.push_str(&format!("\n{line}"));
        }
        return out;
    }
    let paths: i64 = groups.iter().map(|(_, n)| n).sum();
    out.push_str(&format!(
        "duplicates: {} of paths with identical content, {paths} paths in all; the largest:\n",
        plural(groups.len(), "group", "groups")
    ));
    let cells = groups
        .iter()
        .take(SUMMARY_DUPLICATES)
        .map(|(hash, n)| vec![hash.to_string(), n.to_string()]);
    out.push_str(&align(&["content hash", "paths"], cells, 1));
    out.push_str(&more_than(
        groups.len(),
        SUMMARY_DUPLICATES,
        ("group", "groups"),
        "--dimension duplicates",
    ));
    if let Some(line) = near_line {
        out.push_str(&line);
    }
    out.trim_end().to_string()
}

/// The near-duplicate line of a run's summary, from the lake's current statistics; None when they
/// cannot be read.
pub fn near_duplicates_summary(lake: &Path) -> Option<String> {
    let rows = current_stats(lake).ok()?;
    let value = |metric: &str| {
        rows.iter()
            .find(|r| r.dimension == "near_duplicates" && r.metric == metric)
            .map_or(0, |r| r.value)
    };
    Some(near_duplicates_line(
        value("clusters"),
        value("files"),
        value("overflow_buckets"),
    ))
}

/// The near-duplicate statistics in one line.
pub fn near_duplicates_line(clusters: i64, files: i64, overflow: i64) -> String {
    let mut line = format!(
        "near-duplicates: {} of {files} files (the near_duplicates table lists them)",
        plural(clusters.max(0) as usize, "cluster", "clusters")
    );
    if overflow > 0 {
        line.push_str(&format!(
            "; {} over max_bucket not expanded into pairs",
            plural(overflow as usize, "band bucket", "band buckets")
        ));
    }
    line
}

/// The distinct keys of `dimension`.
fn keys<'a>(rows: &'a [StatRow], dimension: &str) -> std::collections::BTreeSet<&'a str> {
    rows.iter()
        .filter(|r| r.dimension == dimension)
        .map(|r| r.key.as_str())
        .collect()
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// "(and N more …: FLAG)" when `len` is more than the `shown`, else nothing.
fn more_than(len: usize, shown: usize, (one, many): (&str, &str), flag: &str) -> String {
    if len <= shown {
        return String::new();
    }
    let n = len - shown;
    format!(
        "(and {n} more {}: {flag})\n",
        if n == 1 { one } else { many }
    )
}

/// Rows of cells under a header, each column as wide as its widest cell; the columns from
/// `right_from` on (numbers) are aligned right. Every line ends with a newline.
fn align(header: &[&str], rows: impl Iterator<Item = Vec<String>>, right_from: usize) -> String {
    let rows: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| h.to_string()).collect())
        .chain(rows)
        .collect();
    let mut widths = vec![0; header.len()];
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (c, &w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            if i >= right_from {
                line.push_str(&format!("{c:>w$}"));
            } else {
                line.push_str(&format!("{c:<w$}"));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The rows as an aligned text table.
pub fn format_table(rows: &[StatRow]) -> String {
    let header = ["dimension", "key", "rule", "metric", "value"];
    let cells = rows.iter().map(|r| {
        vec![
            r.dimension.clone(),
            if r.key.is_empty() {
                "''".into()
            } else {
                r.key.clone()
            },
            r.rule.clone().unwrap_or_else(|| "-".into()),
            r.metric.clone(),
            r.value.to_string(),
        ]
    });
    let mut out = align(&header, cells, 4);
    if let Some(epoch) = rows.first().map(|r| r.epoch) {
        out.push_str(&format!(
            "({} statistics, current at epoch {epoch})",
            rows.len()
        ));
    } else {
        out.push_str("(no statistics)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::stats::Dimension;

    #[test]
    fn every_dimension_is_listed() {
        // A new dimension fails to compile here until it is listed.
        let name = |d: Dimension| match d {
            Dimension::Rule
            | Dimension::RuleLanguage
            | Dimension::RuleDir
            | Dimension::Language
            | Dimension::Duplicates
            | Dimension::NearDuplicates
            | Dimension::Total => d.as_str(),
        };
        for d in Dimension::ALL {
            assert!(DIMENSIONS.contains(&name(d)), "{d:?}");
        }
        assert_eq!(DIMENSIONS.len(), Dimension::ALL.len());
    }
}
