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

/// Why the lake could not be written, or read back. Each variant names the path concerned, and
/// says whether it was being read or written: damage found while reading the lake is not a write
/// failure, and the user needs to know which file to look at.
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
    /// `what` says which kind of lake file it is: "part file", "checkpoint file", "commit record",
    /// "table directory".
    #[error("cannot read {what} {path}")]
    ReadIo {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {what} {path}: it is not a readable Parquet file")]
    ReadParquet {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: ::parquet::errors::ParquetError,
    },
    #[error("cannot read {what} {path}: its data is damaged")]
    ReadArrow {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: arrow_schema::ArrowError,
    },
    #[error(
        "cannot read {what} {path}: its columns are not those of schemas/{table}.json: {detail}"
    )]
    ReadSchema {
        what: &'static str,
        path: PathBuf,
        table: String,
        detail: String,
    },
    #[error("table {table}: batch schema differs from schemas/{table}.json: {detail}")]
    SchemaMismatch { table: String, detail: String },
    #[error("table {table}: cannot build a record batch")]
    Arrow {
        table: String,
        #[source]
        source: arrow_schema::ArrowError,
    },
}
