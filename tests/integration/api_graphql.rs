//! GraphQL through a real HTTP client and a real graphql-ws WebSocket against a real
//! `exoflow watch --http`: its answers equal the REST answers, the subscription's diffs sum to
//! `/api/v1/stats`, limits refuse what is too deep, too complex or too large, tokens guard both.

use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::api::{Summed, add, agent, eventually, files_total, get, printed, serve, stats, total};
use crate::util::{s, write};

/// The status and body of `POST /graphql` with `query` (and a bearer token when given).
fn graphql_as(base: &str, token: Option<&str>, query: &str) -> (u16, Value) {
    let mut request = agent().post(format!("{base}/graphql"));
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = (request.header("Content-Type", "application/json"))
        .send(json!({ "query": query }).to_string())
        .unwrap();
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap();
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, value)
}

/// The `data` of a query that must succeed.
fn graphql(base: &str, query: &str) -> Value {
    let (status, body) = graphql_as(base, None, query);
    assert_eq!(status, 200, "{body}");
    assert!(body.get("errors").is_none(), "{query}: {body}");
    body["data"].clone()
}

/// The first error's message of a query that must fail, after checking that nothing ran.
fn graphql_error(base: &str, query: &str) -> String {
    let (status, body) = graphql_as(base, None, query);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.get("data").is_none_or(Value::is_null),
        "nothing ran: {body}"
    );
    body["errors"][0]["message"].as_str().unwrap().to_string()
}

/// The fields of a statistic, aliased to the names REST gives them.
const ROW: &str = "rows { dimension key rule metric value }";

fn stats_query(arguments: &str) -> String {
    format!("{{ stats{arguments} {{ epoch committed_epoch: committedEpoch run {ROW} }} }}")
}

/// Waits until the watch has committed everything with `files` current files and nothing moves.
fn settled(base: &str, files: i64) -> Value {
    eventually("the statistics committed", || {
        let now = stats(base, "");
        (files_total(&now) == files && now["epoch"] == now["committed_epoch"])
            .then_some(now.clone())
            .ok_or(now.to_string())
    })
}

#[test]
fn api_graphql_answers_equal_the_rest_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("dir"), tmp.path().join("lake"));
    std::fs::create_dir(&dir).unwrap();
    let (watch, base) = serve(&dir, &lake, &[]);
    write(&dir, "a.rs", "fn main() { println!(\"TODO\"); }\n");
    write(&dir, "b.py", "print('hello')\n# TODO\n# FIXME\n");
    settled(&base, 2);
    write(&dir, "b.py", "print('bye')\n# TODO twice TODO\n");
    write(&dir, "c.txt", "plain\n");
    std::fs::remove_file(dir.join("a.rs")).unwrap();
    eventually("b.py modified and a.rs deleted", || {
        let now = settled(&base, 2);
        (total(&now, "bytes") == 37)
            .then_some(())
            .ok_or(now.to_string())
    });

    // The same filters give the same rows, epochs included; asked while nothing changes.
    for (rest, arguments) in [
        ("", ""),
        ("?dimension=total", "(dimension: \"total\")"),
        (
            "?dimension=total&metric=files",
            "(dimension: \"total\", metric: \"files\")",
        ),
        (
            "?dimension=rule&metric=files",
            "(dimension: \"rule\", metric: \"files\")",
        ),
        (
            "?dimension=rule&rule=todo",
            "(dimension: \"rule\", rule: \"todo\")",
        ),
        (
            "?dimension=language&key=nope",
            "(dimension: \"language\", key: \"nope\")",
        ),
    ] {
        let want = stats(&base, rest);
        assert!(!want["rows"].as_array().unwrap().is_empty() || rest.contains("nope"));
        let got = graphql(&base, &stats_query(arguments));
        assert_eq!(got["stats"], want, "{arguments}");
    }

    // A key, as REST names it.
    let languages = stats(&base, "?dimension=language");
    let key = languages["rows"][0]["key"].as_str().unwrap();
    let want = stats(&base, &format!("?key={key}"));
    let got = graphql(&base, &stats_query(&format!("(key: \"{key}\")")));
    assert_eq!(got["stats"], want);

    // An unknown dimension or metric: the same message as REST's 400, and nothing ran.
    for (rest, arguments) in [
        ("?dimension=nope", "(dimension: \"nope\")"),
        ("?metric=nope", "(metric: \"nope\")"),
    ] {
        let (status, body) = get(&base, &format!("/api/v1/stats{rest}"));
        assert_eq!(status, 400);
        let want: Value = serde_json::from_str(&body).unwrap();
        let (status, got) = graphql_as(&base, None, &stats_query(arguments));
        assert_eq!(status, 200);
        assert_eq!(got["data"], Value::Null, "{got}");
        assert_eq!(got["errors"][0]["message"], want["error"], "{got}");
        assert_eq!(got["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    }

    let (status, body) = get(&base, "/api/v1/rules");
    assert_eq!(status, 200);
    let want: Value = serde_json::from_str(&body).unwrap();
    let got = graphql(
        &base,
        "{ rules { epoch rules { id pattern regex secret files matches } } }",
    );
    assert_eq!(got["rules"], want);
    let todo = (want["rules"].as_array().unwrap().iter())
        .find(|r| r["id"] == "todo")
        .unwrap();
    assert_eq!(
        (todo["files"].as_i64(), todo["matches"].as_i64()),
        (Some(1), Some(2))
    );

    let (status, body) = get(&base, "/api/v1/epochs");
    assert_eq!(status, 200);
    let want: Value = serde_json::from_str(&body).unwrap();
    assert!(!want["epochs"].as_array().unwrap().is_empty(), "{want}");
    let got = graphql(
        &base,
        "{ epochs { epoch committed_at: committedAt committed_at_ms: committedAtMs action \
           stats_changes_rows: statsChangesRows } }",
    );
    assert_eq!(got, want);

    // Several fields in one request read one model.
    let both = graphql(
        &base,
        "{ stats(dimension: \"total\") { epoch } rules { epoch } }",
    );
    assert_eq!(both["stats"]["epoch"], both["rules"]["epoch"]);
    // A subscription is for the WebSocket.
    let (_, body) = graphql_as(&base, None, "subscription { statsChanges { epoch } }");
    assert!(body["errors"][0]["message"].is_string(), "{body}");
    watch.stop();
}

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// Opens a graphql-transport-ws WebSocket to `base`, with an `Authorization` header when given.
fn open_socket(base: &str, header: Option<&str>) -> Result<Socket, tungstenite::Error> {
    let url = format!("{}/graphql/ws", base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    if let Some(token) = header {
        headers.insert("Authorization", format!("Bearer {token}").parse().unwrap());
    }
    let (socket, response) = tungstenite::connect(request)?;
    let protocol = response.headers().get("sec-websocket-protocol");
    assert_eq!(protocol.unwrap(), "graphql-transport-ws");
    if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
    }
    Ok(socket)
}

fn send(socket: &mut Socket, message: Value) {
    socket.send(Message::text(message.to_string())).unwrap();
}

/// The next protocol message, or None once the server closed the socket.
fn receive(socket: &mut Socket) -> Option<Value> {
    loop {
        match socket.read() {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).unwrap()),
            Ok(Message::Close(_)) => return None,
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return None;
            }
            Err(tungstenite::Error::Io(e)) if e.kind() != std::io::ErrorKind::WouldBlock => {
                return None;
            }
            Err(e) => panic!("the socket failed: {e}"),
        }
    }
}

/// `connection_init` with `payload`; whether the server acknowledged it.
fn init(socket: &mut Socket, payload: Value) -> bool {
    send(
        socket,
        json!({ "type": "connection_init", "payload": payload }),
    );
    match receive(socket) {
        Some(message) => {
            assert_eq!(message["type"], "connection_ack", "{message}");
            true
        }
        None => false,
    }
}

fn subscription(arguments: &str) -> String {
    format!("subscription {{ statsChanges{arguments} {{ kind epoch {ROW} }} }}")
}

/// Reads the socket on a thread: each message goes to the channel until the socket closes.
fn messages(mut socket: Socket) -> mpsc::Receiver<Value> {
    // A subscription is silent while nothing changes.
    if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream.set_read_timeout(None).unwrap();
    }
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        while let Some(message) = receive(&mut socket) {
            if sender.send(message).is_err() {
                return;
            }
        }
    });
    receiver
}

/// The sums of each subscription's items, by subscription id, as `printed` rows.
struct Sums {
    summed: std::collections::BTreeMap<String, Summed>,
    last_epoch: std::collections::BTreeMap<String, u64>,
}

impl Sums {
    /// Adds one `next` message's item.
    fn add(&mut self, message: &Value) {
        assert_eq!(message["type"], "next", "{message}");
        let id = message["id"].as_str().unwrap().to_string();
        let item = &message["payload"]["data"]["statsChanges"];
        assert!(message["payload"].get("errors").is_none(), "{message}");
        let epoch = item["epoch"].as_u64().unwrap();
        let last = self.last_epoch.insert(id.clone(), epoch);
        match item["kind"].as_str().unwrap() {
            "SNAPSHOT" => assert_eq!(last, None, "the snapshot comes first: {message}"),
            "DIFF" => {
                let last = last.expect("a snapshot before the diffs");
                assert!(epoch > last, "epochs grow: {epoch} after {last}");
            }
            kind => panic!("kind {kind}"),
        }
        add(self.summed.entry(id).or_default(), &item["rows"]);
    }

    fn take(&mut self, messages: &mpsc::Receiver<Value>) {
        while let Ok(message) = messages.try_recv() {
            self.add(&message);
        }
    }

    fn printed(&self, id: &str) -> Vec<String> {
        (self.summed.get(id).into_iter().flatten())
            .map(|([d, k, r, m], v)| format!("{d} {k} {r} {m} {v}"))
            .collect()
    }
}

#[test]
fn api_graphql_subscription_diffs_sum_to_the_stats() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("dir"), tmp.path().join("lake"));
    std::fs::create_dir(&dir).unwrap();
    write(&dir, "before.md", "# TODO from before\n");
    let (watch, base) = serve(&dir, &lake, &[]);
    settled(&base, 1);

    let mut socket = open_socket(&base, None).unwrap();
    assert!(init(&mut socket, json!({})));
    send(
        &mut socket,
        json!({ "id": "all", "type": "subscribe", "payload": { "query": subscription("") } }),
    );
    let totals = subscription("(dimension: \"total\")");
    send(
        &mut socket,
        json!({ "id": "totals", "type": "subscribe", "payload": { "query": totals } }),
    );
    // An unknown dimension: an error for that subscription alone.
    let wrong = subscription("(dimension: \"nope\")");
    send(
        &mut socket,
        json!({ "id": "wrong", "type": "subscribe", "payload": { "query": wrong } }),
    );
    let messages = messages(socket);
    let mut sums = Sums {
        summed: Default::default(),
        last_epoch: Default::default(),
    };
    let mut refused = false;
    let mut snapshots = 0;
    while snapshots < 2 || !refused {
        let message = messages.recv_timeout(Duration::from_secs(10)).unwrap();
        if message["id"] == "wrong" {
            // The subscription's one item is the error, then it completes.
            if message["type"] == "complete" {
                refused = true;
            } else {
                assert_eq!(message["payload"]["data"], Value::Null, "{message}");
                let error = &message["payload"]["errors"][0];
                assert!(
                    error["message"]
                        .as_str()
                        .unwrap()
                        .starts_with("unknown dimension 'nope'"),
                    "{message}"
                );
                assert_eq!(error["extensions"]["code"], "BAD_REQUEST");
            }
            continue;
        }
        sums.add(&message);
        snapshots = sums.last_epoch.len();
    }
    assert_eq!(sums.printed("all"), printed(&stats(&base, "")["rows"]));

    write(&dir, "a.rs", "// TODO one\n");
    write(&dir, "b.py", "# TODO two\nprint(2)\n");
    settled(&base, 3);
    write(&dir, "a.rs", "// TODO one, changed, FIXME\n");
    std::fs::remove_file(dir.join("before.md")).unwrap();
    write(&dir, "c.txt", "plain\n");
    eventually("the subscriptions' sums equal to /api/v1/stats", || {
        sums.take(&messages);
        let now = settled(&base, 3);
        let totals = stats(&base, "?dimension=total");
        let done = total(&now, "bytes") == 6 + 20 + 28
            && sums.printed("all") == printed(&now["rows"])
            && sums.printed("totals") == printed(&totals["rows"]);
        done.then_some(())
            .ok_or(format!("{:?} against {now}", sums.printed("all")))
    });
    watch.stop();
}

#[test]
fn api_graphql_subscription_resumes_after_an_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("dir"), tmp.path().join("lake"));
    std::fs::create_dir(&dir).unwrap();
    let (watch, base) = serve(&dir, &lake, &[]);
    write(&dir, "a.rs", "// TODO one\n");
    let first = settled(&base, 1);
    let mut summed = Summed::new();
    add(&mut summed, &first["rows"]);
    write(&dir, "b.py", "# TODO two\n");
    write(&dir, "a.rs", "// changed\n");
    settled(&base, 2);

    // From the epoch of the first answer: only the diffs after it, no snapshot.
    let mut socket = open_socket(&base, None).unwrap();
    assert!(init(&mut socket, json!({})));
    let since = first["epoch"].as_u64().unwrap();
    let query = subscription(&format!("(since: {since})"));
    send(
        &mut socket,
        json!({ "id": "1", "type": "subscribe", "payload": { "query": query } }),
    );
    let messages = messages(socket);
    eventually("the resumed sum equal to /api/v1/stats", || {
        while let Ok(message) = messages.try_recv() {
            let item = &message["payload"]["data"]["statsChanges"];
            assert_eq!(item["kind"], "DIFF", "{message}");
            assert!(item["epoch"].as_u64().unwrap() > since, "{message}");
            add(&mut summed, &item["rows"]);
        }
        let now = stats(&base, "");
        let got: Vec<String> = (summed.iter())
            .map(|([d, k, r, m], v)| format!("{d} {k} {r} {m} {v}"))
            .collect();
        (got == printed(&now["rows"]))
            .then_some(())
            .ok_or(format!("{got:?} against {now}"))
    });

    // As by the SSE route: a bare epoch after the last commit is gone (another run may have
    // sent other changes under it), an epoch of this run still to come a bad request.
    let run = first["run"].as_str().unwrap();
    for (arguments, code, text) in [
        ("(since: 99999999)".to_string(), "GONE", "was not committed"),
        (
            format!("(resume: \"99999999-{run}\")"),
            "BAD_REQUEST",
            "after the current epoch",
        ),
        (
            "(resume: \"7-x/y\")".to_string(),
            "BAD_REQUEST",
            "not an epoch",
        ),
    ] {
        let mut socket = open_socket(&base, None).unwrap();
        assert!(init(&mut socket, json!({})));
        send(
            &mut socket,
            json!({ "id": "1", "type": "subscribe", "payload": { "query": subscription(&arguments) } }),
        );
        let message = receive(&mut socket).unwrap();
        assert_eq!(message["payload"]["data"], Value::Null, "{message}");
        let error = &message["payload"]["errors"][0];
        assert!(
            error["message"].as_str().unwrap().contains(text),
            "{message}"
        );
        assert_eq!(error["extensions"]["code"], code, "{message}");
        assert_eq!(receive(&mut socket).unwrap()["type"], "complete");
    }
    watch.stop();
}

/// The introspection query GraphiQL and graphql-js tools send.
const INTROSPECTION: &str = "
query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) {
    name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason
  }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name
  ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}";

#[test]
fn api_graphql_refuses_what_is_too_deep_too_complex_or_too_large() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("dir"), tmp.path().join("lake"));
    std::fs::create_dir(&dir).unwrap();
    let (watch, base) = serve(&dir, &lake, &[]);

    // Introspection works, within the limits.
    let schema = graphql(&base, INTROSPECTION);
    let types = schema["__schema"]["types"].as_array().unwrap();
    assert!(types.iter().any(|t| t["name"] == "StatsChange"), "{schema}");
    assert_eq!(
        schema["__schema"]["subscriptionType"]["name"],
        "SubscriptionRoot"
    );

    // Nested past the depth limit (`name` at level 17): refused before it runs; at level 16 it
    // runs.
    let nested = |levels: usize| {
        format!(
            "{{ __schema {{ types {{ fields {{ type {}{{ name }}{} }} }} }} }}",
            "{ ofType ".repeat(levels),
            " }".repeat(levels)
        )
    };
    let error = graphql_error(&base, &nested(12));
    assert!(error.contains("nested too deep"), "{error}");
    graphql(&base, &nested(11));

    // Many fields through aliases: past the complexity limit, refused.
    let aliases: String = (0..600)
        .map(|i| format!("a{i}: rules {{ epoch }} "))
        .collect();
    let error = graphql_error(&base, &format!("{{ {aliases} }}"));
    assert!(error.contains("too complex"), "{error}");
    let aliases: String = (0..400)
        .map(|i| format!("a{i}: rules {{ epoch }} "))
        .collect();
    let data = graphql(&base, &format!("{{ {aliases} }}"));
    assert_eq!(data.as_object().unwrap().len(), 400);

    // A body past the bound: 413.
    let padding = " ".repeat(70 * 1024);
    let (status, body) = graphql_as(&base, None, &format!("{{ rules {{ epoch }} {padding} }}"));
    assert_eq!(status, 413, "{body}");
    assert!(body["errors"][0]["message"].is_string(), "{body}");
    // Not JSON: 400; not declared JSON: 415.
    let response = agent()
        .post(format!("{base}/graphql"))
        .header("Content-Type", "application/json")
        .send("{ rules")
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let response = agent()
        .post(format!("{base}/graphql"))
        .header("Content-Type", "text/plain")
        .send("{ rules { epoch } }")
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);

    // Requests by route, refusals included.
    let (_, metrics) = get(&base, "/metrics");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("exoflow_http_requests_total{route=\"/graphql\",status=\"413\"}")
        ),
        "{metrics}"
    );
    watch.stop();
}

#[test]
fn api_graphql_needs_the_token_on_post_and_on_the_websocket() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("dir"), tmp.path().join("lake"));
    std::fs::create_dir(&dir).unwrap();
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, "ops:right-token\n").unwrap();
    let audit = tmp.path().join("audit.jsonl");
    let (watch, base) = serve(
        &dir,
        &lake,
        &["--token-file", s(&tokens), "--audit-log", s(&audit)],
    );
    // Opened now, never initialised: closed once the init timeout passes.
    let idle = open_socket(&base, None).unwrap();
    let opened = std::time::Instant::now();
    let query = "{ rules { epoch } }";
    assert_eq!(graphql_as(&base, None, query).0, 401);
    assert_eq!(graphql_as(&base, Some("wrong-token"), query).0, 401);
    let (status, body) = graphql_as(&base, Some("right-token"), query);
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["rules"]["epoch"].is_u64(), "{body}");

    // A wrong token in the upgrade request's header: refused before the upgrade.
    match open_socket(&base, Some("wrong-token")) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 401),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a wrong token opened a socket"),
    }
    // A right one: the socket opens and needs nothing more.
    let mut socket = open_socket(&base, Some("right-token")).unwrap();
    assert!(init(&mut socket, json!({})));

    // No header: the token is in connection_init's payload, compared like the header's.
    let mut socket = open_socket(&base, None).unwrap();
    assert!(!init(
        &mut socket,
        json!({ "Authorization": "Bearer wrong-token" })
    ));
    let mut socket = open_socket(&base, None).unwrap();
    assert!(!init(&mut socket, json!({})));
    let mut socket = open_socket(&base, None).unwrap();
    send(
        &mut socket,
        json!({ "id": "1", "type": "subscribe", "payload": { "query": subscription("") } }),
    );
    assert_eq!(
        receive(&mut socket),
        None,
        "no operation before connection_init"
    );

    let mut socket = open_socket(&base, None).unwrap();
    assert!(init(
        &mut socket,
        json!({ "Authorization": "Bearer right-token" })
    ));
    send(
        &mut socket,
        json!({ "id": "1", "type": "subscribe", "payload": { "query": subscription("") } }),
    );
    let message = receive(&mut socket).unwrap();
    assert_eq!(message["type"], "next", "{message}");
    assert_eq!(
        message["payload"]["data"]["statsChanges"]["kind"],
        "SNAPSHOT"
    );

    let mut idle = idle;
    assert_eq!(receive(&mut idle), None, "closed, with nothing sent");
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(20),
        "{waited:?}"
    );

    // The audit log names the token of each request, never the token itself.
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains("right-token"), "{text}");
    let lines: Vec<Value> = (text.lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let posts: Vec<(u64, &Value)> = (lines.iter())
        .filter(|l| l["route"] == "/graphql")
        .map(|l| (l["status"].as_u64().unwrap(), &l["token"]))
        .collect();
    assert_eq!(
        posts,
        [
            (401, &Value::Null),
            (401, &Value::Null),
            (200, &json!("ops"))
        ]
    );
    assert!(
        (lines.iter())
            .any(|l| l["route"] == "/graphql/ws" && l["status"] == 101 && l["token"] == "ops"),
        "{text}"
    );
    // Each connection_init that presents a token has its own line: the token's name when it is
    // valid (one), 401 without a name when not (two: a wrong one, none).
    let inits: Vec<(u64, &Value)> = (lines.iter())
        .filter(|l| l["method"] == "WS")
        .map(|l| (l["status"].as_u64().unwrap(), &l["token"]))
        .collect();
    assert_eq!(inits.len(), 3, "{text}");
    assert_eq!(
        inits
            .iter()
            .filter(|(s, t)| *s == 101 && *t == "ops")
            .count(),
        1
    );
    assert_eq!(
        (inits.iter())
            .filter(|(s, t)| *s == 401 && t.is_null())
            .count(),
        2
    );
    watch.stop();
}

/// The fields of a file, aliased to the names REST gives them.
const FILE: &str = "source path path_bytes: pathBytes size hash lines entropy is_binary: isBinary \
    language skip_reason: skipReason epoch rule_counts: ruleCounts";

/// A page of files through GraphQL with `arguments`, as REST's `/api/v1/files` shows it.
fn files_page(base: &str, arguments: &str) -> Value {
    let query = format!(
        "{{ files{arguments} {{ committed_epoch: committedEpoch files {{ {FILE} }} \
           next_cursor: nextCursor }} }}"
    );
    graphql(base, &query)["files"].clone()
}

fn rest(base: &str, path: &str) -> (u16, Value) {
    let (status, body) = get(base, path);
    (status, serde_json::from_str(&body).unwrap())
}

#[test]
fn api_graphql_files_file_and_duplicates_equal_the_rest_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("tree"), tmp.path().join("lake"));
    std::fs::create_dir(&dir).unwrap();
    for i in 0..7 {
        write(&dir, &format!("src/m{i}.rs"), format!("// TODO {i}\n"));
    }
    write(&dir, "src/same.rs", "// TODO 0\n");
    write(&dir, "docs/notes.md", "# Notes\nFIXME later\n");
    let long: String = (0..200)
        .map(|i| format!("line {i} of a long file\n"))
        .collect();
    write(&dir, "near1.txt", &long);
    write(&dir, "near2.txt", long.replace("line 7 ", "line seven "));
    std::os::unix::fs::symlink("src/m0.rs", dir.join("link.rs")).unwrap();
    let pipeline = concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/dedupe.json");
    let (watch, base) = serve(&dir, &lake, &["--pipeline", pipeline, "--no-auto-compact"]);
    eventually("every file listed and a duplicate group", || {
        let (status, page) = rest(&base, "/api/v1/files?limit=1000");
        let (_, duplicates) = rest(&base, "/api/v1/duplicates");
        let listed = page["files"].as_array().map_or(0, Vec::len);
        (status == 200 && listed == 12 && duplicates["exact"].as_array().unwrap().len() == 1)
            .then_some(())
            .ok_or(page.to_string())
    });

    // Page by page, `first` and `after` walk what `limit` and `cursor` walk.
    let mut cursor: Option<String> = None;
    let mut walked = 0;
    loop {
        let after = (cursor.as_ref()).map_or(String::new(), |c| format!(", after: \"{c}\""));
        let position = (cursor.as_ref()).map_or(String::new(), |c| format!("&cursor={c}"));
        let (status, want) = rest(&base, &format!("/api/v1/files?limit=3{position}"));
        assert_eq!(status, 200, "{want}");
        let got = files_page(&base, &format!("(first: 3{after})"));
        assert_eq!(got, want);
        walked += want["files"].as_array().unwrap().len();
        match want["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(walked, 12);

    // Filters, and what they refuse with the same message.
    for (rest_query, arguments) in [
        ("prefix=src/", "(prefix: \"src/\")"),
        ("language=Markdown", "(language: \"Markdown\")"),
        ("rule=todo&limit=2", "(rule: \"todo\", first: 2)"),
        ("skip_reason=symlink", "(skipReason: SYMLINK)"),
    ] {
        let (status, want) = rest(&base, &format!("/api/v1/files?{rest_query}"));
        assert_eq!(status, 200, "{want}");
        assert!(
            !want["files"].as_array().unwrap().is_empty(),
            "{rest_query}: {want}"
        );
        assert_eq!(files_page(&base, arguments), want, "{arguments}");
    }
    for (rest_query, arguments) in [
        ("limit=5000", "(first: 5000)"),
        ("rule=nope", "(rule: \"nope\")"),
        ("cursor=zz", "(after: \"zz\")"),
    ] {
        let (status, want) = rest(&base, &format!("/api/v1/files?{rest_query}"));
        assert_eq!(status, 400, "{want}");
        let error = graphql_error(&base, &format!("{{ files{arguments} {{ nextCursor }} }}"));
        assert_eq!(error, want["error"].as_str().unwrap(), "{arguments}");
    }

    // One file, its matches included; an unknown key and a key that is no key.
    let (status, want) = rest(&base, "/api/v1/files/tree/src/m3.rs");
    assert_eq!(status, 200, "{want}");
    assert_eq!(want["matches"].as_array().unwrap().len(), 1, "{want}");
    let detail = format!(
        "committed_epoch: committedEpoch file {{ {FILE} }} matches {{ rule line column offset excerpt }}"
    );
    let got = graphql(
        &base,
        &format!("{{ file(source: \"tree\", path: \"src/m3.rs\") {{ {detail} }} }}"),
    );
    assert_eq!(got["file"], want);
    for path in ["src/none.rs", "src/../src/m3.rs"] {
        let (status, want) = rest(&base, &format!("/api/v1/files/tree/{path}"));
        assert!(status == 404 || status == 400, "{status} {want}");
        let (_, got) = graphql_as(
            &base,
            None,
            &format!("{{ file(source: \"tree\", path: \"{path}\") {{ {detail} }} }}"),
        );
        let error = &got["errors"][0];
        assert_eq!(error["message"], want["error"], "{got}");
        let code = if status == 404 {
            "NOT_FOUND"
        } else {
            "BAD_REQUEST"
        };
        assert_eq!(error["extensions"]["code"], code, "{got}");
    }

    // Exact groups and near-duplicate clusters.
    let (status, want) = rest(&base, "/api/v1/duplicates");
    assert_eq!(status, 200);
    assert_eq!(want["near"].as_array().unwrap().len(), 1, "{want}");
    let got = graphql(
        &base,
        "{ duplicates { committed_epoch: committedEpoch exact { hash size files { source path } } \
           near { cluster representative { source path } members { source path similarity } } } }",
    );
    assert_eq!(got["duplicates"], want);

    // A page counts its fields once per 100 files it may hold: a few big pages run, many are
    // too complex.
    let big = |aliases: usize| -> String {
        let pages: String = (0..aliases)
            .map(|i| format!("p{i}: files(first: 1000) {{ files {{ {FILE} }} }} "))
            .collect();
        format!("{{ {pages} }}")
    };
    assert_eq!(graphql(&base, &big(3)).as_object().unwrap().len(), 3);
    let error = graphql_error(&base, &big(10));
    assert!(error.contains("too complex"), "{error}");
    watch.stop();
}
