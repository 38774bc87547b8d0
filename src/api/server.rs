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
use subtle::ConstantTimeEq;
use tokio::sync::{broadcast, oneshot};

use super::live::{EpochDiff, Live, Snapshot, StatRow};
use super::metrics::{self, Metrics};
use super::{ApiError, RuleInfo, ServeConfig, Token};
use crate::dataflow::stats::{Dimension, Metric};

/// Query strings longer than this are refused (414).
pub const MAX_QUERY_BYTES: usize = 4096;
/// Threads of the server's runtime: the API is light, and the cores belong to the workers.
pub const SERVER_THREADS: usize = 2;

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
        let mut app = router(AppState {
            metrics: Arc::new(Metrics::new(&live)),
            live,
            tokens: Arc::new(config.tokens),
            lake: config.lake.map(Arc::new),
            rules: Arc::new(config.rules),
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
struct AppState {
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    tokens: Arc<Vec<Token>>,
    lake: Option<Arc<std::path::PathBuf>>,
    rules: Arc<Vec<RuleInfo>>,
    /// The audit log: one JSON line per request, appended.
    audit: Option<Arc<std::sync::Mutex<std::fs::File>>>,
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

/// One line of the audit log.
#[derive(Serialize)]
struct AuditLine<'a> {
    /// RFC 3339, UTC.
    time: String,
    remote: Option<String>,
    /// The name of the token presented, never the token; null without one.
    token: Option<&'a str>,
    method: &'a str,
    /// The matched route (like `/api/v1/stats`), null when none matched.
    route: Option<&'a str>,
    status: u16,
    duration_ms: f64,
    /// The body's length; null for a stream, whose length is not known when it starts.
    bytes: Option<u64>,
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
        .merge(super::dashboard::routes())
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// An error answer: its status and a JSON body `{"error": "..."}`.
struct ApiFailure(StatusCode, String);

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (self.0, Json(Body { error: self.1 })).into_response()
    }
}

/// Around every route: bounds the query string, checks the bearer token (the health checks and
/// the dashboard's page and assets, which hold no data, are open), counts the answer by route and status, and writes the audit log's line.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let matched = (request.extensions().get::<MatchedPath>()).map(|p| p.as_str().to_string());
    let route = matched.as_deref().unwrap_or("unmatched").to_string();
    let remote = (request.extensions().get::<ConnectInfo<SocketAddr>>()).map(|c| c.0.to_string());
    let method = request.method().clone();
    let path = request.uri().path();
    let open = path == "/healthz" || path == "/readyz" || super::dashboard::is_open(path);
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
    state.metrics.request(&route, response.status().as_u16());
    if let Some(audit) = &state.audit {
        let line = AuditLine {
            time,
            remote,
            token: token.as_deref(),
            method: method.as_str(),
            route: matched.as_deref(),
            status: response.status().as_u16(),
            duration_ms: started.elapsed().as_secs_f64() * 1e3,
            bytes: response.body().size_hint().exact(),
        };
        let mut text = serde_json::to_vec(&line).expect("an audit line encodes");
        text.push(b'\n');
        // One short append of a whole line; a failure is logged, never the request's.
        let written = (audit.lock()).map(|mut file| std::io::Write::write_all(&mut *file, &text));
        if let Ok(Err(error)) = written {
            tracing::warn!(error = %error, "cannot write the audit log");
        }
    }
    response
}

/// The name of the configured token the request presents as its bearer token, if any. Every
/// token is compared, each in constant time, so that timing tells nothing of which matched.
fn presented_token<'a>(tokens: &'a [Token], headers: &HeaderMap) -> Option<&'a str> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))?;
    let mut matched = None;
    for token in tokens {
        if bool::from(token.secret.as_slice().ct_eq(given.as_bytes())) {
            matched = Some(token.name.as_str());
        }
    }
    matched
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.live.snapshot().ready {
        "ready\n".into_response()
    } else {
        ApiFailure(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: restoring the state or processing the first epoch".into(),
        )
        .into_response()
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        (state.metrics).encode(&state.live, state.lake.as_deref().map(|p| p.as_path())),
    )
        .into_response()
}

async fn unknown_route() -> ApiFailure {
    ApiFailure(StatusCode::NOT_FOUND, "no such route".into())
}

/// The filters of `/api/v1/stats`; each absent one matches every row.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsFilter {
    dimension: Option<String>,
    key: Option<String>,
    rule: Option<String>,
    metric: Option<String>,
}

impl StatsFilter {
    /// Refuses a dimension or metric that does not exist, naming the ones that do.
    fn check(&self) -> Result<(), ApiFailure> {
        let dimensions = Dimension::ALL.map(Dimension::as_str);
        let metrics = Metric::ALL.map(Metric::as_str);
        for (field, value, known) in [
            ("dimension", &self.dimension, &dimensions[..]),
            ("metric", &self.metric, &metrics[..]),
        ] {
            if let Some(value) = value
                && !known.contains(&value.as_str())
            {
                return Err(ApiFailure(
                    StatusCode::BAD_REQUEST,
                    format!("unknown {field} '{value}': one of {}", known.join(", ")),
                ));
            }
        }
        Ok(())
    }

    fn matches(&self, row: &StatRow) -> bool {
        self.selects(row.dimension, &row.key, row.rule.as_deref(), row.metric)
    }

    fn selects(&self, dimension: &str, key: &str, rule: Option<&str>, metric: &str) -> bool {
        self.dimension.as_deref().is_none_or(|d| d == dimension)
            && self.key.as_deref().is_none_or(|k| k == key)
            && self.rule.as_deref().is_none_or(|r| Some(r) == rule)
            && self.metric.as_deref().is_none_or(|m| m == metric)
    }
}

/// The statistics as of an epoch: the body of `/api/v1/stats` and of a stream's `snapshot`.
#[derive(Serialize)]
struct StatsBody {
    epoch: u64,
    committed_epoch: u64,
    rows: Vec<StatRow>,
}

impl StatsBody {
    fn of(snapshot: &Snapshot, filter: &StatsFilter) -> StatsBody {
        StatsBody {
            epoch: snapshot.epoch,
            committed_epoch: snapshot.committed_epoch,
            rows: (snapshot.values.iter())
                .filter(|(key, _)| {
                    let rule = key.rule.map(|r| snapshot.rule_ids[r as usize].as_str());
                    filter.selects(key.dimension.as_str(), &key.key, rule, key.metric.as_str())
                })
                .map(|(key, value)| StatRow::of(key, *value, &snapshot.rule_ids))
                .collect(),
        }
    }
}

fn filter_of(query: Result<Query<StatsFilter>, QueryRejection>) -> Result<StatsFilter, ApiFailure> {
    let Query(filter) = query.map_err(|e| ApiFailure(StatusCode::BAD_REQUEST, e.body_text()))?;
    filter.check()?;
    Ok(filter)
}

async fn stats(
    State(state): State<AppState>,
    query: Result<Query<StatsFilter>, QueryRejection>,
) -> Result<Response, ApiFailure> {
    let filter = filter_of(query)?;
    let snapshot = state.live.snapshot();
    Ok(Json(StatsBody::of(&snapshot, &filter)).into_response())
}

/// One committed epoch as `/api/v1/epochs` shows it.
#[derive(Serialize)]
struct EpochBody {
    epoch: u64,
    /// RFC 3339, UTC.
    committed_at: String,
    committed_at_ms: u64,
    /// "epoch", "checkpoint" or "compaction".
    action: String,
    /// The `stats_changes` rows of the epochs this commit covers (after the previous record's
    /// epoch); null for the oldest record kept when its predecessor is gone.
    stats_changes_rows: Option<u64>,
}

/// The committed epochs of the lake's kept commit records, newest first.
async fn epochs(State(state): State<AppState>) -> Result<Response, ApiFailure> {
    let Some(lake) = state.lake.clone() else {
        return Ok(Json(serde_json::json!({ "epochs": [] })).into_response());
    };
    let read = tokio::task::spawn_blocking(move || {
        let records = crate::sink::commit::records(&lake);
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Ok(Vec::new());
        };
        // The epoch each record commits after: its predecessor's, or 0 for the lake's first.
        let after = |i: usize| match i {
            0 => (records[0].sequence == 1).then_some(0),
            _ => Some(records[i - 1].epoch),
        };
        let from = after(0).unwrap_or(first.epoch);
        let diffs = super::history::committed_diffs(&lake, from, last.epoch)?;
        let mut bodies = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            let rows = after(i).map(|after| {
                if record.epoch <= after {
                    return 0;
                }
                (diffs.range(after + 1..=record.epoch))
                    .map(|(_, rows)| rows.len() as u64)
                    .sum()
            });
            let at =
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(record.committed_at_ms);
            bodies.push(EpochBody {
                epoch: record.epoch,
                committed_at: humantime::format_rfc3339_millis(at).to_string(),
                committed_at_ms: record.committed_at_ms,
                action: record.action.clone(),
                stats_changes_rows: rows,
            });
        }
        bodies.reverse();
        Ok::<_, String>(bodies)
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|read| read);
    let epochs = read.map_err(|e| {
        tracing::error!(error = %e, "cannot read the commit records");
        ApiFailure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot read the lake's commit records".into(),
        )
    })?;
    Ok(Json(serde_json::json!({ "epochs": epochs })).into_response())
}

/// One rule with its current counts.
#[derive(Serialize)]
struct RuleBody<'a> {
    #[serde(flatten)]
    rule: &'a RuleInfo,
    files: i64,
    matches: i64,
}

/// The pipeline's rules with the files and matches the live statistics count for each.
async fn rules(State(state): State<AppState>) -> Response {
    let snapshot = state.live.snapshot();
    let mut counts = std::collections::HashMap::new();
    for (key, value) in snapshot.values.iter() {
        if let (Dimension::Rule, Some(rule)) = (key.dimension, key.rule) {
            counts.insert(
                (snapshot.rule_ids[rule as usize].as_str(), key.metric),
                *value,
            );
        }
    }
    let count = |id: &str, metric: Metric| counts.get(&(id, metric)).copied().unwrap_or(0);
    let rules: Vec<RuleBody> = (state.rules.iter())
        .map(|rule| RuleBody {
            rule,
            files: count(&rule.id, Metric::Files),
            matches: count(&rule.id, Metric::Matches),
        })
        .collect();
    Json(serde_json::json!({ "epoch": snapshot.epoch, "rules": rules })).into_response()
}

/// A stream's place: the snapshot still to send (none when resuming), then the diffs after it.
enum StreamState {
    Snapshot(broadcast::Receiver<Arc<EpochDiff>>, Arc<Snapshot>),
    Diffs(broadcast::Receiver<Arc<EpochDiff>>, u64),
    Ended,
}

/// The filters of `/api/v1/stats/stream`: those of `/api/v1/stats` and where to resume.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    dimension: Option<String>,
    key: Option<String>,
    rule: Option<String>,
    metric: Option<String>,
    since: Option<String>,
}

/// The epoch a stream resumes after: `?since=` or else `Last-Event-ID`; a number at most the
/// current epoch.
fn resume_point(
    since: Option<&str>,
    headers: &HeaderMap,
    current: u64,
) -> Result<Option<u64>, ApiFailure> {
    let given = match since {
        Some(since) => since.to_string(),
        None => match headers.get("last-event-id") {
            Some(value) => value
                .to_str()
                .map_err(|_| {
                    ApiFailure(
                        StatusCode::BAD_REQUEST,
                        "Last-Event-ID is not an epoch".into(),
                    )
                })?
                .trim()
                .to_string(),
            None => return Ok(None),
        },
    };
    let epoch: u64 = given.parse().map_err(|_| {
        ApiFailure(
            StatusCode::BAD_REQUEST,
            format!("'{given}' is not an epoch: a number is expected"),
        )
    })?;
    if epoch > current {
        return Err(ApiFailure(
            StatusCode::BAD_REQUEST,
            format!("epoch {epoch} is after the current epoch {current}"),
        ));
    }
    Ok(Some(epoch))
}

fn diff_event(epoch: u64, rows: &[StatRow], filter: &StatsFilter) -> Event {
    let rows: Vec<&StatRow> = rows.iter().filter(|r| filter.matches(r)).collect();
    Event::default()
        .event("diff")
        .id(epoch.to_string())
        .json_data(DiffBody { epoch, rows })
        .expect("statistics encode as JSON")
}

/// Server-Sent Events: a `snapshot` event (the filtered statistics), then a `diff` event per
/// epoch with changes (its id the epoch, its rows the filtered changes). With `?since=EPOCH` or
/// `Last-Event-ID: EPOCH` there is no snapshot: first the diffs of the epochs after that one
/// (from the live history, or the lake's `stats_changes` for those it no longer holds), then
/// the live ones. A client that falls behind the bounded diff history gets an `error` event and
/// the stream ends.
async fn stats_stream(
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
    let filter = Arc::new(filter);
    // Subscribed before the snapshot is read, so no diff falls between them.
    let diffs = state.live.subscribe();
    let snapshot = state.live.snapshot();
    let since = resume_point(query.since.as_deref(), &headers, snapshot.epoch)?;
    let mut prefix = Vec::new();
    let start = match since {
        None => StreamState::Snapshot(diffs, snapshot),
        Some(since) => {
            let floor = snapshot.history_floor();
            if since < floor {
                let Some(lake) = state.lake.clone() else {
                    return Err(ApiFailure(
                        StatusCode::GONE,
                        format!("epoch {since} is older than the history this server keeps"),
                    ));
                };
                if floor > snapshot.committed_epoch && snapshot.recent_trimmed {
                    return Err(ApiFailure(
                        StatusCode::GONE,
                        format!(
                            "the changes after epoch {since} are no longer kept and not yet committed; \
                             connect without since for a snapshot"
                        ),
                    ));
                }
                let read = tokio::task::spawn_blocking(move || {
                    // A compaction may swap parts away while they are read: read again.
                    let mut tries = 0;
                    loop {
                        match super::history::committed_diffs(&lake, since, floor) {
                            Err(_) if tries < 2 => tries += 1,
                            read => break read,
                        }
                    }
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|read| read);
                let committed = read.map_err(|e| {
                    tracing::error!(error = %e, "cannot read the committed changes");
                    ApiFailure(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "cannot read the committed changes of the lake".into(),
                    )
                })?;
                for (epoch, rows) in committed {
                    prefix.push(Ok(diff_event(epoch, &rows, &filter)));
                }
            }
            for diff in snapshot.recent.iter().filter(|d| d.epoch > since) {
                prefix.push(Ok(diff_event(diff.epoch, &diff.rows, &filter)));
            }
            StreamState::Diffs(diffs, snapshot.seq)
        }
    };
    let live = futures_util::stream::unfold(start, move |place| {
        let filter = filter.clone();
        async move {
            match place {
                StreamState::Snapshot(diffs, snapshot) => {
                    let event = Event::default()
                        .event("snapshot")
                        .id(snapshot.epoch.to_string())
                        .json_data(StatsBody::of(&snapshot, &filter))
                        .expect("statistics encode as JSON");
                    Some((Ok(event), StreamState::Diffs(diffs, snapshot.seq)))
                }
                StreamState::Diffs(mut diffs, seen) => loop {
                    match diffs.recv().await {
                        Ok(diff) if diff.seq <= seen => continue,
                        Ok(diff) => {
                            let event = diff_event(diff.epoch, &diff.rows, &filter);
                            break Some((Ok(event), StreamState::Diffs(diffs, diff.seq)));
                        }
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            let event = Event::default().event("error").data(format!(
                                "{{\"error\":\"this client fell {missed} epochs behind the stream; reconnect for a new snapshot\"}}"
                            ));
                            break Some((Ok(event), StreamState::Ended));
                        }
                        Err(broadcast::error::RecvError::Closed) => break None,
                    }
                },
                StreamState::Ended => None,
            }
        }
    });
    let events = futures_util::stream::iter(prefix).chain(live);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The body of a `diff` event: the changes of one epoch.
#[derive(Serialize)]
struct DiffBody<'a> {
    epoch: u64,
    rows: Vec<&'a StatRow>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(body, r#"{"epoch":1,"committed_epoch":0,"rows":[]}"#);
    }
}
