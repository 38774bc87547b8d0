//! `schemas/*.json` -> Arrow schemas: the single source of truth for every table of the lake.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::Deserialize;

/// The schema files, embedded so that the binary writes exactly what the repository documents.
pub const SCHEMA_FILES: &[(&str, &str)] = &[
    ("files", include_str!("../../schemas/files.json")),
    ("file_rules", include_str!("../../schemas/file_rules.json")),
    ("matches", include_str!("../../schemas/matches.json")),
    (
        "stats_changes",
        include_str!("../../schemas/stats_changes.json"),
    ),
    (
        "stats_current",
        include_str!("../../schemas/stats_current.json"),
    ),
];

/// One column as a schema file describes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    pub name: String,
    /// `utf8`, `binary`, `boolean`, `uint64`, `int64`, `float64` or `fixed_size_binary(N)`.
    #[serde(rename = "type")]
    pub data_type: String,
    pub nullable: bool,
    pub doc: String,
}

/// A table's schema file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    pub table: String,
    pub version: u32,
    pub doc: String,
    pub columns: Vec<ColumnSpec>,
}

/// A table's schema file and the Arrow schema built from it.
#[derive(Debug, Clone)]
pub struct TableSchema {
    pub spec: TableSpec,
    pub arrow: SchemaRef,
}

static TABLES: LazyLock<HashMap<&'static str, TableSchema>> = LazyLock::new(|| {
    SCHEMA_FILES
        .iter()
        .map(|(name, text)| {
            let schema = TableSchema::parse(text)
                .unwrap_or_else(|e| panic!("schemas/{name}.json is invalid: {e}"));
            assert_eq!(
                &schema.spec.table, name,
                "schemas/{name}.json names another table"
            );
            (*name, schema)
        })
        .collect()
});

/// The schema of table `name`; panics for a table without a schema file (a programming error).
pub fn table(name: &str) -> &'static TableSchema {
    TABLES
        .get(name)
        .unwrap_or_else(|| panic!("no schema file for table {name}"))
}

impl TableSchema {
    /// Parses a schema file.
    pub fn parse(text: &str) -> Result<TableSchema, String> {
        let spec: TableSpec = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let fields = spec
            .columns
            .iter()
            .map(|c| Ok(Field::new(&c.name, data_type(&c.data_type)?, c.nullable)))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(TableSchema {
            arrow: Arc::new(Schema::new(fields)),
            spec,
        })
    }
}

fn data_type(name: &str) -> Result<DataType, String> {
    Ok(match name {
        "utf8" => DataType::Utf8,
        "binary" => DataType::Binary,
        "boolean" => DataType::Boolean,
        "uint64" => DataType::UInt64,
        "int64" => DataType::Int64,
        "float64" => DataType::Float64,
        other => {
            let width = other
                .strip_prefix("fixed_size_binary(")
                .and_then(|rest| rest.strip_suffix(')'))
                .and_then(|n| n.parse::<i32>().ok())
                .ok_or_else(|| format!("unknown column type `{other}`"))?;
            DataType::FixedSizeBinary(width)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_file_parses_and_documents_every_column() {
        for (name, _) in SCHEMA_FILES {
            let t = table(name);
            assert!(!t.spec.columns.is_empty());
            for c in &t.spec.columns {
                assert!(!c.doc.trim().is_empty(), "{name}.{} has no doc", c.name);
            }
        }
    }
}
