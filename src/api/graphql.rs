//! GraphQL requests -> the answers of [`super::query`]: queries at `POST /graphql`, the
//! `statsChanges` subscription over a graphql-ws WebSocket at `GET /graphql/ws`. Every operation
//! is bounded in depth, complexity and body size before it runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::{
    Context, Data, EmptyMutation, Enum, ErrorExtensions, Object, Schema, SimpleObject, Subscription,
};
use async_graphql_axum::{GraphQLProtocol, GraphQLResponse, GraphQLWebSocket};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::ws::{CloseFrame, Message};
use axum::extract::{ConnectInfo, DefaultBodyLimit, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{SinkExt, Stream, StreamExt};

use super::Token;
use super::lake_view::{
    DEFAULT_PAGE_SIZE, Duplicates, FileDetail, FilesFilter, FilesPage, SkipReasonName,
};
use super::live::StatRow;
use super::query::{
    Change, EpochBody, Model, QueryError, Resume, RulesBody, StatsBody, StatsFilter,
};
use super::server::{AuditLine, AuditLog, append_audit};

/// The route of queries.
pub const PATH: &str = "/graphql";
/// The route of the graphql-ws WebSocket (protocols `graphql-transport-ws` and `graphql-ws`).
pub const WS_PATH: &str = "/graphql/ws";
/// Operations nested deeper than this are refused; the introspection query tools send fits.
pub const MAX_DEPTH: usize = 16;
/// Operations of more fields than this (aliases and fragments counted where they are used, a
/// page of files once per [`FILES_PER_UNIT`] files) are refused; the introspection query tools
/// send fits.
pub const MAX_COMPLEXITY: usize = 1000;
/// A page of files costs its fields' complexity once per this many files it may hold.
pub const FILES_PER_UNIT: usize = 100;
/// Request bodies longer than this are refused (413).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A WebSocket that has not sent `connection_init` this long after it opened is closed.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema: queries, no mutations, the statistics' changes as a subscription.
pub type ApiSchema = Schema<QueryRoot, EmptyMutation, SubscriptionRoot>;

/// The schema over `model`, with its limits.
pub fn schema(model: Model) -> ApiSchema {
    Schema::build(QueryRoot, EmptyMutation, SubscriptionRoot)
        .data(model)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// A [`QueryError`] as a GraphQL error, its kind in `extensions.code`.
fn graphql_error(error: QueryError) -> async_graphql::Error {
    let code = match error {
        QueryError::BadRequest(_) => "BAD_REQUEST",
        QueryError::Gone(_) => "GONE",
        QueryError::NotFound(_) => "NOT_FOUND",
        QueryError::NotReady(_) => "NOT_READY",
        QueryError::Internal(_) => "INTERNAL",
    };
    async_graphql::Error::new(error.message()).extend_with(|_, e| e.set("code", code))
}

fn model<'a>(ctx: &Context<'a>) -> &'a Model {
    ctx.data_unchecked::<Model>()
}

pub struct QueryRoot;

/// What the REST routes under `/api/v1` answer, with the same filters and errors.
#[Object]
impl QueryRoot {
    /// The live statistics the filters select (as `/api/v1/stats`); each absent filter matches
    /// every row.
    async fn stats(
        &self,
        ctx: &Context<'_>,
        dimension: Option<String>,
        key: Option<String>,
        rule: Option<String>,
        metric: Option<String>,
    ) -> async_graphql::Result<StatsBody> {
        let filter = StatsFilter {
            dimension,
            key,
            rule,
            metric,
        };
        model(ctx).stats(&filter).map_err(graphql_error)
    }

    /// The pipeline's rules with their current counts (as `/api/v1/rules`).
    async fn rules(&self, ctx: &Context<'_>) -> async_graphql::Result<RulesBody> {
        model(ctx).rules().map_err(graphql_error)
    }

    /// The committed epochs of the lake's kept commit records, newest first (as
    /// `/api/v1/epochs`).
    async fn epochs(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<EpochBody>> {
        model(ctx).epochs().await.map_err(graphql_error)
    }

    /// A page of the committed lake's current files, ordered by (source, path) (as
    /// `/api/v1/files`): `first` files (its `limit`), after the previous page's `nextCursor`
    /// (its `cursor`).
    #[graphql(
        complexity = "child_complexity * (first.unwrap_or(DEFAULT_PAGE_SIZE as u64) as usize).div_ceil(FILES_PER_UNIT)"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn files(
        &self,
        ctx: &Context<'_>,
        prefix: Option<String>,
        language: Option<String>,
        rule: Option<String>,
        skip_reason: Option<SkipReasonName>,
        first: Option<u64>,
        after: Option<String>,
    ) -> async_graphql::Result<FilesPage> {
        let filter = FilesFilter {
            prefix,
            language,
            rule,
            skip_reason,
            limit: first,
            cursor: after,
        };
        model(ctx).files(&filter).await.map_err(graphql_error)
    }

    /// One current file of the committed lake by its lake key (as
    /// `/api/v1/files/{source}/{path}`): its version, rule counts and match positions.
    async fn file(
        &self,
        ctx: &Context<'_>,
        source: String,
        path: String,
    ) -> async_graphql::Result<FileDetail> {
        (model(ctx).file(&source, &path).await).map_err(graphql_error)
    }

    /// The committed lake's exact duplicate groups and near-duplicate clusters (as
    /// `/api/v1/duplicates`).
    async fn duplicates(&self, ctx: &Context<'_>) -> async_graphql::Result<Duplicates> {
        model(ctx).duplicates().await.map_err(graphql_error)
    }
}

/// What an item of `statsChanges` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum ChangeKind {
    /// The statistics as of the epoch: the first item of a subscription without `since`.
    Snapshot,
    /// The changes of the epoch.
    Diff,
}

/// One item of `statsChanges`: the statistics, or one epoch's changes of them.
#[derive(Debug, Clone, SimpleObject)]
pub struct StatsChange {
    pub kind: ChangeKind,
    pub epoch: u64,
    /// In a diff, `value` is the change of the value.
    pub rows: Vec<StatRow>,
}

pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// The statistics the filters select as they change (as `/api/v1/stats/stream`): without
    /// `since` or `resume`, a snapshot, then one diff per epoch with changes; with `since`, the
    /// diffs of the epochs after it (from the lake for those the server no longer holds), then
    /// the live ones. `since` must be a committed epoch (error `GONE` otherwise): an uncommitted
    /// one may have other changes in another run. `resume` is an `EPOCH-RUN` id (the epoch and
    /// the `run` of a snapshot): this run's epochs resume up to the current one, another run's
    /// only when committed. A client that falls behind gets an error and the subscription ends.
    // GraphQL arguments are the resolver's parameters.
    #[allow(clippy::too_many_arguments)]
    async fn stats_changes(
        &self,
        ctx: &Context<'_>,
        since: Option<u64>,
        resume: Option<String>,
        dimension: Option<String>,
        key: Option<String>,
        rule: Option<String>,
        metric: Option<String>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<StatsChange>> + use<>> {
        let filter = StatsFilter {
            dimension,
            key,
            rule,
            metric,
        };
        let since = match (since, resume) {
            (Some(_), Some(_)) => {
                return Err(graphql_error(QueryError::BadRequest(
                    "give since or resume, not both".into(),
                )));
            }
            (Some(epoch), None) => Some(Resume { epoch, run: None }),
            (None, Some(resume)) => Some(
                resume
                    .parse()
                    .map_err(|e| graphql_error(QueryError::BadRequest(e)))?,
            ),
            (None, None) => None,
        };
        let changes = (model(ctx).changes(filter, since).await).map_err(graphql_error)?;
        Ok(changes.map(|change| match change {
            Change::Snapshot(body) => Ok(StatsChange {
                kind: ChangeKind::Snapshot,
                epoch: body.epoch,
                rows: body.rows,
            }),
            Change::Diff(body) => Ok(StatsChange {
                kind: ChangeKind::Diff,
                epoch: body.epoch,
                rows: body.rows().to_vec(),
            }),
            Change::Lagged(missed) => Err(async_graphql::Error::new(format!(
                "this client fell {missed} epochs behind the stream; subscribe again for a new snapshot"
            ))
            .extend_with(|_, e| e.set("code", "LAGGED"))),
        }))
    }
}

#[derive(Clone)]
struct GraphqlState {
    schema: ApiSchema,
    tokens: Arc<Vec<Token>>,
    audit: Option<AuditLog>,
}

/// The GraphQL routes over `model`; the caller puts its guard (token, audit, metrics) around
/// them. `tokens` is what a WebSocket's `connection_init` may present instead of a header; the
/// audit log gets a line for each such `connection_init`, with its token's name.
pub(super) fn routes<S: Clone + Send + Sync + 'static>(
    model: Model,
    tokens: Arc<Vec<Token>>,
    audit: Option<AuditLog>,
) -> axum::Router<S> {
    let state = GraphqlState {
        schema: schema(model),
        tokens,
        audit,
    };
    axum::Router::new()
        .route(
            PATH,
            post(execute).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
        .route(WS_PATH, get(subscribe))
        .with_state(state)
}

/// One query as JSON (`{"query": ..., "variables": ...}`); a body that is not one is refused
/// with its status (400, 413, 415) and a GraphQL error.
async fn execute(
    State(state): State<GraphqlState>,
    request: Result<Json<async_graphql::Request>, JsonRejection>,
) -> Response {
    match request {
        Ok(Json(request)) => {
            GraphQLResponse::from(state.schema.execute(request).await).into_response()
        }
        Err(rejection) => {
            let body = serde_json::json!({ "errors": [{ "message": rejection.body_text() }] });
            (rejection.status(), Json(body)).into_response()
        }
    }
}

/// The audit line of a graphql-ws `connection_init` that presents its token (the upgrade's own
/// line, written before it, holds none): `WS` as the method, 101 if the token is valid and 401
/// if not (the socket is then closed).
fn audit_init(audit: &AuditLog, remote: SocketAddr, token: Option<&str>) {
    let line = AuditLine {
        time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        remote: Some(remote.to_string()),
        token,
        method: "WS",
        route: Some(WS_PATH),
        status: if token.is_some() { 101 } else { 401 },
        duration_ms: 0.0,
        bytes: None,
    };
    append_audit(audit, &line);
}

/// The bearer token of a `connection_init` payload, `{"Authorization": "Bearer ..."}`.
fn init_token<'a>(tokens: &'a [Token], payload: &serde_json::Value) -> Option<&'a str> {
    let given = ["Authorization", "authorization"]
        .iter()
        .find_map(|name| payload.get(name)?.as_str())?
        .strip_prefix("Bearer ")?;
    super::token_named(tokens, given.as_bytes())
}

/// A graphql-ws connection. With tokens configured, the upgrade request's `Authorization`
/// header (checked by the guard) or else the `connection_init` payload's must hold one: browsers
/// cannot set headers on a WebSocket. Without a valid one the connection is closed before any
/// operation runs.
async fn subscribe(
    State(state): State<GraphqlState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
    headers: HeaderMap,
) -> Response {
    let by_header = state.tokens.is_empty()
        || super::server::presented_token(&state.tokens, &headers).is_some();
    let GraphqlState {
        schema,
        tokens,
        audit,
    } = state;
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| async move {
            let (mut sink, mut stream) = socket.split();
            let timed_out = {
                let (initialized, init_seen) = tokio::sync::oneshot::channel::<()>();
                let connection =
                    GraphQLWebSocket::new_with_pair(&mut sink, &mut stream, schema, protocol)
                        .on_connection_init(move |payload| async move {
                            let _ = initialized.send(());
                            if by_header {
                                return Ok(Data::default());
                            }
                            let token = init_token(&tokens, &payload);
                            if let Some(audit) = &audit {
                                audit_init(audit, remote, token);
                            }
                            match token {
                                Some(name) => {
                                    tracing::info!(
                                        token = name,
                                        "graphql-ws connection initialised"
                                    );
                                    Ok(Data::default())
                                }
                                None => {
                                    tracing::info!("graphql-ws connection refused: no valid token");
                                    Err(async_graphql::Error::new(
                                        "a valid bearer token is required",
                                    ))
                                }
                            }
                        })
                        .serve();
                let mut connection = std::pin::pin!(connection);
                let initialised = tokio::select! {
                    () = &mut connection => None,
                    seen = tokio::time::timeout(INIT_TIMEOUT, init_seen) => {
                        Some(matches!(seen, Ok(Ok(()))))
                    }
                };
                match initialised {
                    None => false,
                    Some(true) => {
                        connection.await;
                        false
                    }
                    Some(false) => true,
                }
            };
            // A socket that never initialises would be held open for nothing: 4408 is the
            // protocol's close code for it.
            if timed_out {
                let close = CloseFrame {
                    code: 4408,
                    reason: "connection initialisation timeout".into(),
                };
                let _ = sink.send(Message::Close(Some(close))).await;
            }
        })
}

#[cfg(test)]
mod tests {
    use super::super::ServeConfig;
    use super::super::live::{Live, StatRow};
    use super::super::server::Server;
    use std::sync::Arc;
    use tungstenite::Message;

    #[test]
    fn api_a_subscriber_that_falls_behind_gets_an_error_and_the_subscription_ends() {
        let live = Arc::new(Live::new(4));
        live.advance(0, 0, true);
        let config = ServeConfig::new("127.0.0.1:0".parse().unwrap(), vec![]).unwrap();
        let server = Server::start(config, live.clone()).unwrap();
        let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}{}",
            server.addr(),
            super::WS_PATH
        ))
        .unwrap();
        (request.headers_mut()).insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        let (mut socket, _) = tungstenite::connect(request).unwrap();
        let mut send = |text: &str| socket.send(Message::text(text)).unwrap();
        send(r#"{"type":"connection_init"}"#);
        send(
            r#"{"id":"1","type":"subscribe","payload":{"query":"subscription { statsChanges { kind epoch rows { key value } } }"}}"#,
        );
        let mut read = move || loop {
            match socket.read() {
                Ok(Message::Text(text)) => {
                    break Some(serde_json::from_str::<serde_json::Value>(&text).unwrap());
                }
                Ok(Message::Close(_)) | Err(_) => break None,
                Ok(_) => continue,
            }
        };
        assert_eq!(read().unwrap()["type"], "connection_ack");
        let snapshot = read().unwrap();
        assert_eq!(
            snapshot["payload"]["data"]["statsChanges"]["kind"],
            "SNAPSHOT"
        );
        // The client reads nothing while far more diffs are published than the history and the
        // socket's buffers hold: the server cannot send them, so its receiver lags.
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
        let mut diffs = 0;
        let lagged = loop {
            let message = read().expect("the subscription ends with an error, then completes");
            let payload = &message["payload"];
            if let Some(errors) = payload.get("errors") {
                break errors[0].clone();
            }
            assert_eq!(payload["data"]["statsChanges"]["kind"], "DIFF", "{message}");
            diffs += 1;
        };
        assert_eq!(lagged["extensions"]["code"], "LAGGED", "{lagged}");
        assert!(diffs < 20_000, "{diffs} diffs");
        let complete = read().unwrap();
        assert_eq!(
            (complete["type"].as_str(), complete["id"].as_str()),
            (Some("complete"), Some("1"))
        );
    }
}
