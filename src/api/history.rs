//! A lake's committed `stats_changes` parts -> the diffs of the epochs in a range, for streams
//! that resume from an epoch the live history no longer holds. Reads files: call it on a
//! blocking thread.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use arrow_array::{Array, Int64Array, StringArray, UInt64Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::live::StatRow;
use crate::dataflow::stats::{Dimension, Metric};
use crate::sink::commit::{part_epochs, parts};

/// The committed changes of each epoch `e` with `after < e <= through`, by epoch.
pub fn committed_diffs(
    lake: &Path,
    after: u64,
    through: u64,
) -> Result<BTreeMap<u64, Vec<StatRow>>, String> {
    let mut diffs: BTreeMap<u64, Vec<StatRow>> = BTreeMap::new();
    if through <= after {
        return Ok(diffs);
    }
    for path in parts(lake, "stats_changes") {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let Some((first, last)) = part_epochs(&name) else {
            continue;
        };
        if last <= after || first > through {
            continue;
        }
        let error = |e: &dyn std::fmt::Display| format!("cannot read {}: {e}", path.display());
        let file = File::open(&path).map_err(|e| error(&e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| error(&e))?;
        for batch in reader {
            let batch = batch.map_err(|e| error(&e))?;
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .ok_or_else(|| error(&format!("no column {name}")))
            };
            let text = |name: &str| {
                column(name)?
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
                    .ok_or_else(|| error(&format!("column {name} is not text")))
            };
            let (dimension, key, rule, metric) = (
                text("dimension")?,
                text("key")?,
                text("rule")?,
                text("metric")?,
            );
            let epoch = (column("epoch")?.as_any().downcast_ref::<UInt64Array>())
                .cloned()
                .ok_or_else(|| error(&"column epoch is not uint64"))?;
            let diff = (column("diff")?.as_any().downcast_ref::<Int64Array>())
                .cloned()
                .ok_or_else(|| error(&"column diff is not int64"))?;
            for i in 0..batch.num_rows() {
                let e = epoch.value(i);
                if e <= after || e > through {
                    continue;
                }
                let known_dimension = Dimension::ALL
                    .map(Dimension::as_str)
                    .into_iter()
                    .find(|d| *d == dimension.value(i));
                let known_metric = Metric::ALL
                    .map(Metric::as_str)
                    .into_iter()
                    .find(|m| *m == metric.value(i));
                let (Some(dimension), Some(metric)) = (known_dimension, known_metric) else {
                    return Err(error(&"a dimension or metric this build does not know"));
                };
                diffs.entry(e).or_default().push(StatRow {
                    dimension,
                    key: key.value(i).to_string(),
                    rule: rule.is_valid(i).then(|| rule.value(i).to_string()),
                    metric,
                    value: diff.value(i),
                });
            }
        }
    }
    Ok(diffs)
}
