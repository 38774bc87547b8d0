//! Requests for the committed lake's files and duplicates -> answers read from the cached
//! [`LakeView`]; handlers only parse, look the key up and encode.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::lake_view::{self, Duplicates, FileDetail, FilesFilter, FilesPage, LakeView};
use super::server::{ApiFailure, AppState, ErrorBody};

/// The newest view the server loaded, and a lock so that one request loads a new one while
/// the others wait for it.
#[derive(Default)]
pub struct ViewCache {
    current: ArcSwapOption<LakeView>,
    loading: tokio::sync::Mutex<()>,
}

/// The view as of the committed epoch of the latest snapshot: the cached one while that epoch
/// has not moved, else one loaded on a blocking thread. 503 before the run is ready.
pub(super) async fn current_view(state: &AppState) -> Result<Arc<LakeView>, ApiFailure> {
    let snapshot = state.live.snapshot();
    if !snapshot.ready {
        return Err(ApiFailure(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: restoring the state or processing the first epoch".into(),
        ));
    }
    let epoch = snapshot.committed_epoch;
    let cached = || (state.view.current.load_full()).filter(|view| view.committed_epoch == epoch);
    if let Some(view) = cached() {
        return Ok(view);
    }
    let _loading = state.view.loading.lock().await;
    if let Some(view) = cached() {
        return Ok(view);
    }
    let view = match state.lake.clone() {
        None => Arc::new(LakeView::default()),
        Some(lake) => {
            let rules = state.rule_set.clone();
            let loaded =
                tokio::task::spawn_blocking(move || LakeView::load(&lake, epoch, &rules)).await;
            match loaded {
                Ok(Ok(view)) => Arc::new(view),
                Ok(Err(error)) => {
                    tracing::error!(error = %error, "cannot read the committed lake");
                    return Err(ApiFailure(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "cannot read the committed lake".into(),
                    ));
                }
                Err(error) => {
                    tracing::error!(error = %error, "reading the committed lake failed");
                    return Err(ApiFailure(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "cannot read the committed lake".into(),
                    ));
                }
            }
        }
    };
    state.view.current.store(Some(view.clone()));
    Ok(view)
}

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
    let view = current_view(&state).await?;
    let page = lake_view::files(&view, &filter)
        .map_err(|e| ApiFailure(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(Json(page))
}

/// Why a path cannot be a lake key, if it cannot: keys are relative, '/'-separated names
/// without empty, `.` or `..` components and without NUL.
fn not_a_key(path: &str) -> Option<&'static str> {
    if path.contains('\0') {
        Some("holds a NUL")
    } else if path.starts_with('/') {
        Some("is absolute")
    } else if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        Some("has an empty, '.' or '..' component")
    } else {
        None
    }
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
    if let Some(reason) = not_a_key(&source).or_else(|| not_a_key(&path)) {
        return Err(ApiFailure(
            StatusCode::BAD_REQUEST,
            format!("not a lake key: the path {reason}"),
        ));
    }
    let view = current_view(&state).await?;
    lake_view::file(&view, &source, &path)
        .map(Json)
        .ok_or_else(|| {
            ApiFailure(
                StatusCode::NOT_FOUND,
                format!("no current file {path:?} in source {source:?}"),
            )
        })
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
    let view = current_view(&state).await?;
    Ok(Json(lake_view::duplicates(&view)))
}

#[cfg(test)]
mod tests {
    use super::not_a_key;

    #[test]
    fn api_only_relative_clean_names_are_lake_keys() {
        for key in ["a.rs", "src/a.rs", "a..b/c", "dir\\..\\x", "...", "%2e%2e"] {
            assert_eq!(not_a_key(key), None, "{key}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a/",
            "a\0b",
        ] {
            assert!(not_a_key(bad).is_some(), "{bad:?}");
        }
    }
}
