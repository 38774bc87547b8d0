//! Requests for the committed lake's files and duplicates -> answers of the query model's
//! cached lake view; handlers only parse, call and encode.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::lake_view::{Duplicates, FileDetail, FilesFilter, FilesPage};
use super::server::{ApiFailure, AppState, ErrorBody};

/// The current versions of the committed lake with their features, ordered by (source, path),
/// a page at a time.
#[utoipa::path(get, path = "/api/v1/files", tag = "lake", params(FilesFilter),
    responses(
        (status = 200, description = "A page of current files", body = FilesPage),
        (status = 400, description = "A bad filter, limit or cursor", body = ErrorBody),
        (status = 503, description = "Not ready yet", body = ErrorBody),
    ))]
pub(super) async fn files(
    State(state): State<AppState>,
    query: Result<Query<FilesFilter>, QueryRejection>,
) -> Result<Json<FilesPage>, ApiFailure> {
    let Query(filter) = query.map_err(|e| ApiFailure(StatusCode::BAD_REQUEST, e.body_text()))?;
    Ok(Json(state.model().files(&filter).await?))
}

/// One current file of the committed lake: its version, rule counts and match positions (secret
/// rules' excerpts masked as the lake holds them). The path is a lake key, never a file name.
#[utoipa::path(get, path = "/api/v1/files/{source}/{path}", tag = "lake",
    params(
        ("source" = String, Path, description = "The file's source"),
        ("path" = String, Path, description = "The file's path in its source, '/'-separated \
            (the `path` a listing shows, or its `path_bytes` for a name that is not UTF-8)"),
    ),
    responses(
        (status = 200, description = "The file", body = FileDetail),
        (status = 400, description = "Not a lake key", body = ErrorBody),
        (status = 404, description = "No current file has that key", body = ErrorBody),
        (status = 503, description = "Not ready yet", body = ErrorBody),
    ))]
pub(super) async fn file(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<FileDetail>, ApiFailure> {
    let Path((source, path)) =
        path.map_err(|e| ApiFailure(StatusCode::BAD_REQUEST, e.body_text()))?;
    Ok(Json(state.model().file(&source, &path).await?))
}

/// The committed lake's exact duplicate groups (two or more current non-empty files with one
/// hash) and near-duplicate clusters (when the pipeline finds them).
#[utoipa::path(get, path = "/api/v1/duplicates", tag = "lake",
    responses(
        (status = 200, description = "Duplicate groups and clusters", body = Duplicates),
        (status = 503, description = "Not ready yet", body = ErrorBody),
    ))]
pub(super) async fn duplicates(
    State(state): State<AppState>,
) -> Result<Json<Duplicates>, ApiFailure> {
    Ok(Json(state.model().duplicates().await?))
}
