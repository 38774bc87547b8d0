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
    ("signatures", include_str!("../../schemas/signatures.json")),
    (
        "near_duplicates",
        include_str!("../../schemas/near_duplicates.json"),
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
    /// How the columns of a file read from the lake differ from this table's, if they do: the
    /// first difference, in words. Names, types, nullability and order must all be the table's,
    /// since readers address columns by name and compaction copies them by position; metadata is
    /// not compared.
    pub fn difference(&self, found: &Schema) -> Option<String> {
        let expected = self.arrow.fields();
        for field in expected {
            match found.field_with_name(field.name()) {
                Err(_) => return Some(format!("no column {}", field.name())),
                Ok(f) if f.data_type() != field.data_type() => {
                    return Some(format!(
                        "column {} is {}, not {}",
                        field.name(),
                        f.data_type(),
                        field.data_type()
                    ));
                }
                Ok(f) if f.is_nullable() != field.is_nullable() => {
                    return Some(format!(
                        "column {} is {}nullable",
                        field.name(),
                        if f.is_nullable() { "" } else { "not " }
                    ));
                }
                Ok(_) => {}
            }
        }
        if let Some(extra) = found
            .fields()
            .iter()
            .find(|f| !expected.iter().any(|e| e.name() == f.name()))
        {
            return Some(format!("unexpected column {}", extra.name()));
        }
        let names = |fields: &arrow_schema::Fields| -> Vec<String> {
            fields.iter().map(|f| f.name().clone()).collect()
        };
        if found.fields().len() != expected.len() || names(found.fields()) != names(expected) {
            return Some(format!(
                "columns in the order {:?}, not {:?}",
                names(found.fields()),
                names(expected)
            ));
        }
        None
    }

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
            assert_eq!(t.difference(&t.arrow), None);
        }
    }

    #[test]
    fn a_difference_names_the_column() {
        let t = table("file_rules");
        let with = |fields: Vec<Field>| t.difference(&Schema::new(fields));
        let mut fields: Vec<Field> = t.arrow.fields().iter().map(|f| (**f).clone()).collect();
        let count = fields.pop().unwrap();
        assert_eq!(with(fields.clone()).as_deref(), Some("no column count"));
        let wrong = Field::new("count", DataType::Utf8, false);
        let found = with([fields.clone(), vec![wrong]].concat()).unwrap();
        assert!(found.starts_with("column count is Utf8"), "{found}");
        let nullable = count.clone().with_nullable(true);
        let found = with([fields.clone(), vec![nullable]].concat()).unwrap();
        assert_eq!(found, "column count is nullable");
        let extra = Field::new("extra", DataType::Utf8, true);
        let found = with([fields.clone(), vec![count.clone(), extra]].concat()).unwrap();
        assert_eq!(found, "unexpected column extra");
        let found = with([vec![count], fields].concat()).unwrap();
        assert!(found.starts_with("columns in the order"), "{found}");
    }
}
