//! The lake: FileVersions -> Parquet part files, one writer per worker and table.

pub mod commit;
pub mod compact;
pub mod parquet;
pub mod restore;
pub mod schema;
pub mod stats;
pub mod tables;

use std::path::PathBuf;

pub use parquet::{LakeWriter, PartWriter, SinkReport};

/// Why the lake could not be written. Each variant names the path concerned.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write Parquet file {path}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: ::parquet::errors::ParquetError,
    },
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("table {table}: batch schema differs from schemas/{table}.json: {detail}")]
    SchemaMismatch { table: String, detail: String },
    #[error("table {table}: cannot build a record batch")]
    Arrow {
        table: String,
        #[source]
        source: arrow_schema::ArrowError,
    },
}
