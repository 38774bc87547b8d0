//! HTTP requests -> answers read from the latest live snapshot, on a tokio runtime of its own
//! threads; handlers only parse, read the snapshot and encode.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use axum::body::HttpBody;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::live::Live;
use super::metrics::{self, Metrics};
use super::query::{
    Change, EpochBody, Model, QueryError, Resume, RulesBody, StatsBody, StatsFilter, ViewCache,
};
use super::rest;
use super::{ApiError, RuleInfo, ServeConfig, Token};

/// Query strings longer than this are refused (414).
pub const MAX_QUERY_BYTES: usize = 4096;
/// Threads of the server's runtime: the API is light, and the cores belong to the workers.
pub const SERVER_THREADS: usize = 2;

/// The nice value of the server's threads: when the workers and the API both want a core, the
/// workers get most of it, so however many clients connect, ingestion keeps its pace.
pub const SERVER_NICENESS: i32 = 5;

/// Lowers the calling thread's priority to [`SERVER_NICENESS`]. On Linux the nice value is a
/// thread's own (setpriority(2), NOTES), so the workers keep theirs; elsewhere it does nothing.
fn yield_to_workers() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its arguments; `0` names the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, SERVER_NICENESS);
    }
}

/// A running server; dropping it stops it.
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on the configured address (an error here is reported before any work starts)
    /// and serves from `live` on threads of its own.
    pub fn start(config: ServeConfig, live: Arc<Live>) -> Result<Server, ApiError> {
        let addr = config.addr;
        let listener =
            std::net::TcpListener::bind(addr).map_err(|source| ApiError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ApiError::Bind { addr, source })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ApiError::Bind { addr, source })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(SERVER_THREADS)
            .thread_name("exoflow-http")
            .on_thread_start(yield_to_workers)
            .enable_all()
            .build()
            .map_err(ApiError::Runtime)?;
        let audit = match &config.audit_log {
            Some(path) => Some(Arc::new(std::sync::Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| ApiError::AuditLog {
                        path: path.clone(),
                        source,
                    })?,
            ))),
            None => None,
        };
        let cors = match &config.cors {
            Some(origin) => Some(cors_layer(origin)?),
            None => None,
        };
        let rule_ids: Arc<[String]> = config.rules.iter().map(|r| r.id.clone()).collect();
        let openapi = Arc::new(super::openapi::document(&config.rules));
        let mut app = router(AppState {
            metrics: Arc::new(Metrics::new(&live)),
            live,
            tokens: Arc::new(config.tokens),
            lake: config.lake.map(Arc::new),
            rules: Arc::new(config.rules),
            rule_ids,
            view: Arc::new(ViewCache::default()),
            openapi,
            audit,
        });
        if let Some(cors) = cors {
            // Outside the token check: a preflight carries no token.
            app = app.layer(cors);
        }
        let (shutdown, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("exoflow-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(error) => {
                            tracing::error!(error = %error, "cannot serve");
                            return;
                        }
                    };
                    let app = app.into_make_service_with_connect_info::<SocketAddr>();
                    let served = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                    if let Err(error) = served {
                        tracing::error!(error = %error, "the server failed");
                    }
                });
                // Open streams would hold a graceful shutdown for good.
                runtime.shutdown_background();
            })
            .map_err(ApiError::Runtime)?;
        tracing::info!(addr = %bound, "serving");
        Ok(Server {
            addr: bound,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the port the system chose for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        // Streams still open end with the process; a run does not wait for its clients.
        drop(self.thread.take());
    }
}

#[derive(Clone)]
pub(super) struct AppState {
    pub(super) live: Arc<Live>,
    metrics: Arc<Metrics>,
    tokens: Arc<Vec<Token>>,
    lake: Option<Arc<std::path::PathBuf>>,
    rules: Arc<Vec<RuleInfo>>,
    /// The compiled rules the lake's rule counts are read by.
    rule_ids: Arc<[String]>,
    /// The committed lake's view, loaded again when the committed epoch moves.
    view: Arc<ViewCache>,
    /// The OpenAPI document, as JSON.
    openapi: Arc<String>,
    audit: Option<AuditLog>,
}

impl AppState {
    /// What the answers are read from.
    pub(super) fn model(&self) -> Model {
        Model {
            live: self.live.clone(),
            lake: self.lake.clone(),
            rules: self.rules.clone(),
            rule_ids: self.rule_ids.clone(),
            view: self.view.clone(),
        }
    }
}

/// CORS for one origin: GET and POST, with the headers the API reads.
fn cors_layer(origin: &str) -> Result<tower_http::cors::CorsLayer, ApiError> {
    let value: header::HeaderValue = (origin.trim_end_matches('/'))
        .parse()
        .map_err(|_| ApiError::Cors(origin.to_string()))?;
    Ok(tower_http::cors::CorsLayer::new()
        .allow_origin(value)
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("last-event-id"),
        ]))
}

/// The audit log: one JSON line per request, appended.
pub(super) type AuditLog = Arc<std::sync::Mutex<std::fs::File>>;

/// One line of the audit log.
#[derive(Serialize)]
pub(super) struct AuditLine<'a> {
    /// RFC 3339, UTC.
    pub(super) time: String,
    pub(super) remote: Option<String>,
    /// The name of the token presented, never the token; null without one.
    pub(super) token: Option<&'a str>,
    pub(super) method: &'a str,
    /// The matched route (like `/api/v1/stats`), null when none matched.
    pub(super) route: Option<&'a str>,
    pub(super) status: u16,
    pub(super) duration_ms: f64,
    /// The body's length; null for a stream, whose length is not known when it starts.
    pub(super) bytes: Option<u64>,
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/stats/stream", get(stats_stream))
        .route("/api/v1/epochs", get(epochs))
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/files", get(rest::files))
        .route("/api/v1/files/{source}/{*path}", get(rest::file))
        .route("/api/v1/duplicates", get(rest::duplicates))
        .route("/api/v1/openapi.json", get(openapi))
        .merge(super::graphql::routes(
            state.model(),
            state.tokens.clone(),
            state.audit.clone(),
        ))
        .merge(super::dashboard::routes())
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// An error answer: its status and a JSON body `{"error": "..."}`.
pub(super) struct ApiFailure(pub(super) StatusCode, pub(super) String);

/// The body of every error answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person to read.
    pub error: String,
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

/// Around every route: bounds the query string, checks the bearer token (the health checks and
/// the dashboard's page and assets, which hold no data, are open, and the GraphQL WebSocket
/// checks its own), counts the answer by route and status, and writes the audit log's line.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let matched = (request.extensions().get::<MatchedPath>()).map(|p| p.as_str().to_string());
    let route = matched.as_deref().unwrap_or("unmatched").to_string();
    let remote = (request.extensions().get::<ConnectInfo<SocketAddr>>()).map(|c| c.0.to_string());
    let method = request.method().clone();
    let path = request.uri().path();
    // A graphql-ws socket without an Authorization header presents its token in its first
    // message instead, which its route checks.
    let open = path == "/healthz"
        || path == "/readyz"
        || super::dashboard::is_open(path)
        || (path == super::graphql::WS_PATH
            && !request.headers().contains_key(header::AUTHORIZATION));
    let token = presented_token(&state.tokens, request.headers());
    let authorized = state.tokens.is_empty() || token.is_some();
    let token = token.map(str::to_string);
    let response = if request.uri().query().map_or(0, str::len) > MAX_QUERY_BYTES {
        ApiFailure(
            StatusCode::URI_TOO_LONG,
            format!("the query string is longer than {MAX_QUERY_BYTES} bytes"),
        )
        .into_response()
    } else if !open && !authorized {
        let mut response = ApiFailure(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required".into(),
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Bearer".parse().expect("a header"),
        );
        response
    } else {
        next.run(request).await
    };
    let seconds = started.elapsed().as_secs_f64();
    (state.metrics).request(&route, response.status().as_u16(), seconds);
    if let Some(audit) = &state.audit {
        let line = AuditLine {
            time,
            remote,
            token: token.as_deref(),
            method: method.as_str(),
            route: matched.as_deref(),
            status: response.status().as_u16(),
            duration_ms: seconds * 1e3,
            bytes: response.body().size_hint().exact(),
        };
        append_audit(audit, &line);
    }
    response
}

/// Appends `line` to the audit log: one short write of a whole line; a failure is logged, never
/// the request's.
pub(super) fn append_audit(audit: &AuditLog, line: &AuditLine) {
    let mut text = serde_json::to_vec(line).expect("an audit line encodes");
    text.push(b'\n');
    let written = (audit.lock()).map(|mut file| std::io::Write::write_all(&mut *file, &text));
    if let Ok(Err(error)) = written {
        tracing::warn!(error = %error, "cannot write the audit log");
    }
}

/// The name of the configured token the request presents as its bearer token, if any.
pub(super) fn presented_token<'a>(tokens: &'a [Token], headers: &HeaderMap) -> Option<&'a str> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))?;
    super::token_named(tokens, given.as_bytes())
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// The restored state is applied and the run's first epoch processed.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, description = "Ready", body = String, content_type = "text/plain"),
        (status = 503, description = "Not ready yet", body = ErrorBody),
    ))]
pub(super) async fn readyz(State(state): State<AppState>) -> Result<Response, ApiFailure> {
    if !state.live.snapshot().ready {
        return Err(super::query::not_ready().into());
    }
    Ok("ready\n".into_response())
}

/// The run's metrics in the OpenMetrics text format that Prometheus scrapes.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "The metrics", body = String,
        content_type = "application/openmetrics-text")))]
pub(super) async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        (state.metrics).encode(&state.live, state.lake.as_deref().map(|p| p.as_path())),
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document of this API", body = Object)))]
pub(super) async fn openapi(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.as_str().to_string(),
    )
        .into_response()
}

async fn unknown_route() -> ApiFailure {
    ApiFailure(StatusCode::NOT_FOUND, "no such route".into())
}

impl From<QueryError> for ApiFailure {
    fn from(error: QueryError) -> ApiFailure {
        let status = match error {
            QueryError::BadRequest(_) => StatusCode::BAD_REQUEST,
            QueryError::Gone(_) => StatusCode::GONE,
            QueryError::NotFound(_) => StatusCode::NOT_FOUND,
            QueryError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            QueryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiFailure(status, error.message().to_string())
    }
}

fn filter_of(query: Result<Query<StatsFilter>, QueryRejection>) -> Result<StatsFilter, ApiFailure> {
    let Query(filter) = query.map_err(|e| ApiFailure(StatusCode::BAD_REQUEST, e.body_text()))?;
    filter.check()?;
    Ok(filter)
}

/// The live statistics, filtered.
#[utoipa::path(get, path = "/api/v1/stats", tag = "statistics", params(StatsFilter),
    responses(
        (status = 200, description = "The statistics as of an epoch", body = StatsBody),
        (status = 400, description = "An unknown dimension or metric", body = ErrorBody),
        (status = 503, description = "Not ready yet", body = ErrorBody),
    ))]
pub(super) async fn stats(
    State(state): State<AppState>,
    query: Result<Query<StatsFilter>, QueryRejection>,
) -> Result<Response, ApiFailure> {
    let filter = filter_of(query)?;
    Ok(Json(state.model().stats(&filter)?).into_response())
}

/// The lake's kept commit records, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct EpochsBody {
    epochs: Vec<EpochBody>,
}

/// The committed epochs of the lake's kept commit records, newest first.
#[utoipa::path(get, path = "/api/v1/epochs", tag = "lake",
    responses((status = 200, description = "Committed epochs, newest first", body = EpochsBody)))]
pub(super) async fn epochs(State(state): State<AppState>) -> Result<Response, ApiFailure> {
    let epochs = state.model().epochs().await?;
    Ok(Json(EpochsBody { epochs }).into_response())
}

/// The pipeline's rules with the files and matches the live statistics count for each.
#[utoipa::path(get, path = "/api/v1/rules", tag = "statistics",
    responses(
        (status = 200, description = "The rules and their counts", body = RulesBody),
        (status = 503, description = "Not ready yet", body = ErrorBody),
    ))]
pub(super) async fn rules(State(state): State<AppState>) -> Result<Response, ApiFailure> {
    Ok(Json(state.model().rules()?).into_response())
}

/// The filters of `/api/v1/stats/stream`: those of `/api/v1/stats` and where to resume.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct StreamQuery {
    /// Only rows of this dimension.
    dimension: Option<String>,
    /// Only rows with this key.
    key: Option<String>,
    /// Only rows of this rule id.
    rule: Option<String>,
    /// Only rows of this metric.
    metric: Option<String>,
    /// Resume after this event id, `EPOCH-RUN` (any epoch of this run up to the current one) or
    /// `EPOCH` (a committed one): no snapshot, the diffs after it.
    #[param(value_type = Option<String>)]
    since: Option<String>,
}

/// Where a stream resumes: `?since=` or else `Last-Event-ID`, `EPOCH` or `EPOCH-RUN`.
fn resume_point(since: Option<&str>, headers: &HeaderMap) -> Result<Option<Resume>, ApiFailure> {
    let given = match since {
        Some(since) => since.to_string(),
        None => match headers.get("last-event-id") {
            Some(value) => value
                .to_str()
                .map_err(|_| {
                    ApiFailure(
                        StatusCode::BAD_REQUEST,
                        "Last-Event-ID is not an event id".into(),
                    )
                })?
                .trim()
                .to_string(),
            None => return Ok(None),
        },
    };
    let resume = given
        .parse()
        .map_err(|e| ApiFailure(StatusCode::BAD_REQUEST, e))?;
    Ok(Some(resume))
}

/// Server-Sent Events: a `snapshot` event (the filtered statistics), then a `diff` event per
/// epoch with changes (its rows the filtered changes). Each event's id is `EPOCH-RUN`: its epoch
/// and the server's run id. With `Last-Event-ID` (or `?since=`) there is no snapshot: first the
/// diffs of the epochs after that one (from the live history, or the lake's `stats_changes` for
/// those it no longer holds), then the live ones. An id of this run resumes after any epoch up to
/// the current one; a bare `EPOCH`, or an id of another run (a server that restarted), resumes
/// only after a committed epoch, and answers 410 for a later one, whose changes that run may
/// have published differently. A client that falls behind the bounded diff history gets an
/// `error` event and the stream ends.
#[utoipa::path(get, path = "/api/v1/stats/stream", tag = "statistics",
    params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id \
            (`EPOCH-RUN`, or a committed `EPOCH`), when `since` is not given")),
    responses(
        (status = 200, description = "Server-Sent Events: `snapshot` (a StatsBody), then `diff` events \
            (epoch and rows), each with the id `EPOCH-RUN`, or a final `error` event", body = String,
            content_type = "text/event-stream"),
        (status = 400, description = "An unknown dimension or metric, or a bad epoch", body = ErrorBody),
        (status = 410, description = "The changes after that epoch are no longer kept, or the epoch \
            is another run's and was not committed: connect without `since`", body = ErrorBody),
        (status = 503, description = "Not ready yet", body = ErrorBody),
    ))]
pub(super) async fn stats_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiFailure> {
    let Query(query) = query.map_err(|e| ApiFailure(StatusCode::BAD_REQUEST, e.body_text()))?;
    let filter = StatsFilter {
        dimension: query.dimension,
        key: query.key,
        rule: query.rule,
        metric: query.metric,
    };
    filter.check()?;
    let since = resume_point(query.since.as_deref(), &headers)?;
    let model = state.model();
    let run = model.run().to_string();
    let changes = model.changes(filter, since).await?;
    let events = changes.map(move |change| {
        let event = match change {
            Change::Snapshot(body) => Event::default()
                .event("snapshot")
                .id(format!("{}-{run}", body.epoch))
                .json_data(body),
            Change::Diff(body) => Ok(Event::default()
                .event("diff")
                .id(format!("{}-{run}", body.epoch))
                .data(&*body.json())),
            Change::Lagged(missed) => Ok(Event::default().event("error").data(format!(
                "{{\"error\":\"this client fell {missed} epochs behind the stream; reconnect for a new snapshot\"}}"
            ))),
        };
        Ok(event.expect("statistics encode as JSON"))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::live::StatRow;

    fn get(server: &Server, path: &str) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent
            .get(format!("http://{}{path}", server.addr()))
            .call()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }

    #[test]
    fn api_a_stream_client_that_falls_behind_gets_an_error_event_and_is_disconnected() {
        use std::io::BufRead;
        let live = Arc::new(Live::new(4));
        live.advance(0, 0, true);
        let config = ServeConfig::new("127.0.0.1:0".parse().unwrap(), vec![]).unwrap();
        let server = Server::start(config, live.clone()).unwrap();
        let response = ureq::get(format!("http://{}/api/v1/stats/stream", server.addr()))
            .call()
            .unwrap();
        // The client reads nothing while far more diffs are published than the history and
        // the socket's buffers hold: the server cannot keep up, so its receiver lags.
        let rows: Vec<StatRow> = (0..10)
            .map(|i| StatRow {
                dimension: "rule_dir",
                key: format!("{i:0>100}"),
                rule: Some("todo".into()),
                metric: "files",
                value: 1,
            })
            .collect();
        let ids: Arc<[String]> = Arc::from(vec!["todo".to_string()]);
        for epoch in 1..=20_000 {
            live.publish(epoch, Default::default(), ids.clone(), rows.clone());
        }
        let lines = std::io::BufReader::new(response.into_body().into_reader()).lines();
        let events: Vec<String> = lines
            .map_while(Result::ok)
            .filter_map(|l| l.strip_prefix("event: ").map(str::to_string))
            .collect();
        assert_eq!(events.first().map(String::as_str), Some("snapshot"));
        assert_eq!(
            events.last().map(String::as_str),
            Some("error"),
            "the stream ended"
        );
        assert!(events.len() < 20_000, "{} events", events.len());
    }

    #[test]
    fn api_the_dashboard_is_open_while_the_data_needs_a_token() {
        let live = Arc::new(Live::default());
        let token = Token {
            name: "ops".into(),
            secret: b"right-token".to_vec(),
        };
        let config = ServeConfig::new("127.0.0.1:0".parse().unwrap(), vec![token]).unwrap();
        let server = Server::start(config, live).unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        for (path, kind) in [
            ("/", "text/html"),
            ("/dashboard/dashboard.js", "text/javascript"),
            ("/dashboard/dashboard.css", "text/css"),
            ("/dashboard/icon.svg", "image/svg+xml"),
        ] {
            let response = agent
                .get(format!("http://{}{path}", server.addr()))
                .call()
                .unwrap();
            assert_eq!(response.status(), 200, "{path}");
            let header = |name| response.headers()[name].to_str().unwrap();
            assert!(header("content-type").starts_with(kind), "{path}");
            assert_eq!(
                header("content-security-policy"),
                super::super::dashboard::CONTENT_SECURITY_POLICY
            );
        }
        for path in ["/api/v1/stats", "/api/v1/stats/stream", "/metrics"] {
            assert_eq!(get(&server, path).0, 401, "{path}");
        }
        assert_eq!(get(&server, "/dashboard/nothing").0, 404);
    }

    #[test]
    fn api_readyz_is_503_until_the_run_is_ready() {
        let live = Arc::new(Live::default());
        let config = ServeConfig::new("127.0.0.1:0".parse().unwrap(), vec![]).unwrap();
        let server = Server::start(config, live.clone()).unwrap();
        let (status, body) = get(&server, "/readyz");
        assert_eq!(status, 503);
        assert!(body.contains("\"error\""), "{body}");
        assert_eq!(get(&server, "/healthz").0, 200);
        live.advance(1, 0, true);
        assert_eq!(get(&server, "/readyz").0, 200);
        let (status, body) = get(&server, "/api/v1/stats");
        assert_eq!(status, 200);
        let want = format!(
            r#"{{"epoch":1,"committed_epoch":0,"run":"{}","rows":[]}}"#,
            live.run()
        );
        assert_eq!(body, want);
    }
}
