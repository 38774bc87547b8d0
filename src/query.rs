//! A lake -> its current statistics, read back from `stats_current.parquet`, for `exoflow stats`.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::{Array, Int64Array, StringArray, UInt64Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

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
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| read(e.into()))?;
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

/// The rows as an aligned text table.
pub fn format_table(rows: &[StatRow]) -> String {
    let header = ["dimension", "key", "rule", "metric", "value"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
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
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[String]| {
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i == 4 {
                out.push_str(&format!("{c:>w$}"));
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push('\n');
    };
    line(&mut out, &header.map(String::from));
    for row in &cells {
        line(&mut out, row);
    }
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
