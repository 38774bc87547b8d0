//! FileVersions and statistics -> Arrow record batches of the lake's tables, in the column order of their
//! schema files.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, FixedSizeBinaryBuilder, Float64Builder, Int64Builder,
    StringBuilder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::ArrowError;

use super::schema::table;
use crate::dataflow::stats::StatKey;
use crate::pipeline::RuleSet;
use crate::version::FileVersion;

/// The per-version tables' batches for one group of versions.
pub struct TableBatches {
    pub files: RecordBatch,
    pub file_rules: RecordBatch,
    pub matches: RecordBatch,
    pub signatures: RecordBatch,
}

/// Builds the batches for `versions`.
pub fn build(versions: &[FileVersion], rules: &RuleSet) -> Result<TableBatches, ArrowError> {
    Ok(TableBatches {
        files: files(versions)?,
        file_rules: file_rules(versions, rules)?,
        matches: matches(versions, rules)?,
        signatures: signatures(versions)?,
    })
}

fn signatures(versions: &[FileVersion]) -> Result<RecordBatch, ArrowError> {
    let mut source = StringBuilder::new();
    let mut path = StringBuilder::new();
    let mut path_bytes = BinaryBuilder::new();
    let mut epoch = UInt64Builder::new();
    let mut signature = BinaryBuilder::new();
    let mut bytes = Vec::new();
    for v in versions {
        let Some(values) = &v.signature else {
            continue;
        };
        source.append_value(&v.source);
        path.append_value(v.path_lossy());
        path_bytes.append_option(v.path_bytes_if_not_utf8());
        epoch.append_value(v.epoch);
        bytes.clear();
        bytes.extend(values.iter().flat_map(|x| x.to_le_bytes()));
        signature.append_value(&bytes);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(source.finish()),
        Arc::new(path.finish()),
        Arc::new(path_bytes.finish()),
        Arc::new(epoch.finish()),
        Arc::new(signature.finish()),
    ];
    RecordBatch::try_new(table("signatures").arrow.clone(), columns)
}

/// One `near_duplicates` row before it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct NearDuplicateRow<'a> {
    pub epoch: u64,
    pub source: &'a str,
    pub path: &'a [u8],
    pub cluster: u128,
    pub representative_source: &'a str,
    pub representative_path: &'a [u8],
    pub similarity: f64,
    pub diff: i64,
}

/// `near_duplicates` rows.
pub fn near_duplicates(rows: &[NearDuplicateRow<'_>]) -> Result<RecordBatch, ArrowError> {
    let mut epoch = UInt64Builder::new();
    let mut source = StringBuilder::new();
    let mut path = StringBuilder::new();
    let mut path_bytes = BinaryBuilder::new();
    let mut cluster = StringBuilder::new();
    let mut representative_source = StringBuilder::new();
    let mut representative_path = StringBuilder::new();
    let mut similarity = Float64Builder::new();
    let mut diff = Int64Builder::new();
    for row in rows {
        epoch.append_value(row.epoch);
        source.append_value(row.source);
        path.append_value(String::from_utf8_lossy(row.path));
        path_bytes.append_option(std::str::from_utf8(row.path).is_err().then_some(row.path));
        cluster.append_value(format!("{:032x}", row.cluster));
        representative_source.append_value(row.representative_source);
        representative_path.append_value(String::from_utf8_lossy(row.representative_path));
        similarity.append_value(row.similarity);
        diff.append_value(row.diff);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(epoch.finish()),
        Arc::new(source.finish()),
        Arc::new(path.finish()),
        Arc::new(path_bytes.finish()),
        Arc::new(cluster.finish()),
        Arc::new(representative_source.finish()),
        Arc::new(representative_path.finish()),
        Arc::new(similarity.finish()),
        Arc::new(diff.finish()),
    ];
    RecordBatch::try_new(table("near_duplicates").arrow.clone(), columns)
}

fn files(versions: &[FileVersion]) -> Result<RecordBatch, ArrowError> {
    let n = versions.len();
    let mut source = StringBuilder::with_capacity(n, n * 8);
    let mut path = StringBuilder::with_capacity(n, n * 32);
    let mut path_bytes = BinaryBuilder::new();
    let mut op = StringBuilder::with_capacity(n, n * 6);
    let mut epoch = UInt64Builder::with_capacity(n);
    let mut size = UInt64Builder::with_capacity(n);
    let mut hash = FixedSizeBinaryBuilder::with_capacity(n, 16);
    let mut lines = UInt64Builder::with_capacity(n);
    let mut entropy = Float64Builder::with_capacity(n);
    let mut is_binary = BooleanBuilder::with_capacity(n);
    let mut language = StringBuilder::new();
    let mut skip_reason = StringBuilder::new();
    for v in versions {
        source.append_value(&v.source);
        path.append_value(v.path_lossy());
        path_bytes.append_option(v.path_bytes_if_not_utf8());
        op.append_value(if v.deleted { "delete" } else { "upsert" });
        epoch.append_value(v.epoch);
        size.append_option(v.size);
        match &v.features {
            Some(f) => {
                hash.append_value(f.hash)?;
                lines.append_value(f.lines);
                entropy.append_value(f.entropy);
                is_binary.append_value(f.is_binary);
                language.append_option(f.language.map(|l| l.0));
            }
            None => {
                hash.append_null();
                lines.append_null();
                entropy.append_null();
                is_binary.append_null();
                language.append_null();
            }
        }
        skip_reason.append_option(v.skip_reason.map(|r| r.as_str()));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(source.finish()),
        Arc::new(path.finish()),
        Arc::new(path_bytes.finish()),
        Arc::new(op.finish()),
        Arc::new(epoch.finish()),
        Arc::new(size.finish()),
        Arc::new(hash.finish()),
        Arc::new(lines.finish()),
        Arc::new(entropy.finish()),
        Arc::new(is_binary.finish()),
        Arc::new(language.finish()),
        Arc::new(skip_reason.finish()),
    ];
    RecordBatch::try_new(table("files").arrow.clone(), columns)
}

fn file_rules(versions: &[FileVersion], rules: &RuleSet) -> Result<RecordBatch, ArrowError> {
    let mut source = StringBuilder::new();
    let mut path = StringBuilder::new();
    let mut path_bytes = BinaryBuilder::new();
    let mut epoch = UInt64Builder::new();
    let mut rule = StringBuilder::new();
    let mut count = UInt64Builder::new();
    for v in versions {
        let exact = v.path_bytes_if_not_utf8();
        for &(index, n) in &v.rule_counts {
            source.append_value(&v.source);
            path.append_value(v.path_lossy());
            path_bytes.append_option(exact);
            epoch.append_value(v.epoch);
            rule.append_value(rules.id(index));
            count.append_value(n);
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(source.finish()),
        Arc::new(path.finish()),
        Arc::new(path_bytes.finish()),
        Arc::new(epoch.finish()),
        Arc::new(rule.finish()),
        Arc::new(count.finish()),
    ];
    RecordBatch::try_new(table("file_rules").arrow.clone(), columns)
}

fn matches(versions: &[FileVersion], rules: &RuleSet) -> Result<RecordBatch, ArrowError> {
    let mut source = StringBuilder::new();
    let mut path = StringBuilder::new();
    let mut path_bytes = BinaryBuilder::new();
    let mut epoch = UInt64Builder::new();
    let mut rule = StringBuilder::new();
    let mut line = UInt64Builder::new();
    let mut column = UInt64Builder::new();
    let mut offset = UInt64Builder::new();
    let mut excerpt = StringBuilder::new();
    for v in versions {
        let exact = v.path_bytes_if_not_utf8();
        for m in &v.matches {
            source.append_value(&v.source);
            path.append_value(v.path_lossy());
            path_bytes.append_option(exact);
            epoch.append_value(v.epoch);
            rule.append_value(rules.id(m.rule));
            line.append_value(m.line);
            column.append_value(m.column);
            offset.append_value(m.offset);
            excerpt.append_value(&m.excerpt);
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(source.finish()),
        Arc::new(path.finish()),
        Arc::new(path_bytes.finish()),
        Arc::new(epoch.finish()),
        Arc::new(rule.finish()),
        Arc::new(line.finish()),
        Arc::new(column.finish()),
        Arc::new(offset.finish()),
        Arc::new(excerpt.finish()),
    ];
    RecordBatch::try_new(table("matches").arrow.clone(), columns)
}

/// `stats_changes` rows: (epoch, statistic, diff).
pub fn stats_changes(
    rows: &[(u64, StatKey, i64)],
    rules: &RuleSet,
) -> Result<RecordBatch, ArrowError> {
    let mut epoch = UInt64Builder::with_capacity(rows.len());
    let mut stat = StatColumns::default();
    let mut diff = Int64Builder::with_capacity(rows.len());
    for (e, key, d) in rows {
        epoch.append_value(*e);
        stat.append(key, rules);
        diff.append_value(*d);
    }
    let [dimension, key, rule, metric] = stat.finish();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(epoch.finish()),
        dimension,
        key,
        rule,
        metric,
        Arc::new(diff.finish()),
    ];
    RecordBatch::try_new(table("stats_changes").arrow.clone(), columns)
}

/// `stats_current` rows: every statistic with its value, current at `at`.
pub fn stats_current<'a>(
    rows: impl Iterator<Item = (&'a StatKey, &'a i64)>,
    at: u64,
    rules: &RuleSet,
) -> Result<RecordBatch, ArrowError> {
    let mut stat = StatColumns::default();
    let mut value = Int64Builder::new();
    let mut epoch = UInt64Builder::new();
    for (key, v) in rows {
        stat.append(key, rules);
        value.append_value(*v);
        epoch.append_value(at);
    }
    let [dimension, key, rule, metric] = stat.finish();
    let columns: Vec<ArrayRef> = vec![
        dimension,
        key,
        rule,
        metric,
        Arc::new(value.finish()),
        Arc::new(epoch.finish()),
    ];
    RecordBatch::try_new(table("stats_current").arrow.clone(), columns)
}

/// The four columns that name a statistic.
#[derive(Default)]
struct StatColumns {
    dimension: StringBuilder,
    key: StringBuilder,
    rule: StringBuilder,
    metric: StringBuilder,
}

impl StatColumns {
    fn append(&mut self, stat: &StatKey, rules: &RuleSet) {
        self.dimension.append_value(stat.dimension.as_str());
        self.key.append_value(&*stat.key);
        self.rule.append_option(stat.rule.map(|r| rules.id(r)));
        self.metric.append_value(stat.metric.as_str());
    }

    fn finish(mut self) -> [ArrayRef; 4] {
        [
            Arc::new(self.dimension.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.rule.finish()),
            Arc::new(self.metric.finish()),
        ]
    }
}
