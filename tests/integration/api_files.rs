//! The committed lake through the REST routes of a real `exoflow watch --http`: `files` (filters,
//! every page walked), `files/{source}/{path}` (rule counts and match positions equal to the
//! lake's rows, secrets masked), `duplicates`, path traversal attempts, and the OpenAPI document.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use serde_json::Value;

use crate::util::{Watching, current_versions, parts, read_batches, write};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// The status and JSON body of a GET, with a bearer token when one is given.
fn get_json(base: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = agent().get(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request.call().unwrap();
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap();
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, json)
}

fn get(base: &str, path: &str) -> (u16, Value) {
    get_json(base, path, None)
}

/// Polls `check` every 50 ms for up to 30 s; panics with the last value when it never holds.
fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let started = Instant::now();
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if started.elapsed() > Duration::from_secs(30) => {
                panic!("{what} never held; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Every current file the listing holds, walking its pages of `limit` files: each key once, in
/// (source, path) order, or a panic.
fn every_page(base: &str, query: &str, limit: usize) -> Vec<Value> {
    let mut files = Vec::new();
    let mut cursor: Option<String> = None;
    let mut epochs = BTreeSet::new();
    for _ in 0..10_000 {
        let position = cursor
            .as_ref()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        let (status, page) = get(
            base,
            &format!("/api/v1/files?limit={limit}{query}{position}"),
        );
        assert_eq!(status, 200, "{page}");
        epochs.insert(page["committed_epoch"].as_u64().unwrap());
        let listed = page["files"].as_array().unwrap();
        assert!(listed.len() <= limit);
        files.extend(listed.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(listed.len(), limit, "only a full page has a next one");
                cursor = Some(next.to_string());
            }
            None => break,
        }
    }
    let keys: Vec<(String, String)> = files.iter().map(key).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted, "pages in key order, each key once");
    files
}

fn key(file: &Value) -> (String, String) {
    (
        file["source"].as_str().unwrap().to_string(),
        file["path"].as_str().unwrap().to_string(),
    )
}

/// A file as `util::current_versions` prints the lake's current version of it.
fn as_lake_prints(file: &Value) -> String {
    let text = |v: &Value| match v.as_str() {
        Some(s) => format!("{s:?}"),
        None => "null".to_string(),
    };
    let size = match file["size"].as_u64() {
        Some(n) => n.to_string(),
        None => "null".into(),
    };
    let hash = file["hash"].as_str().unwrap_or("null");
    format!(
        "size={size} hash={hash} skip={}",
        text(&file["skip_reason"])
    )
}

/// The rows of a lake table (committed parts, read directly).
fn batches(lake: &Path, table: &str) -> Vec<RecordBatch> {
    parts(lake, table)
        .iter()
        .flat_map(|p| read_batches(p))
        .collect()
}

/// `file_rules` of one version: rule -> count.
fn lake_rule_counts(lake: &Path, path: &str, epoch: u64) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for batch in batches(lake, "file_rules") {
        let paths = batch["path"].as_string::<i32>();
        let epochs = batch["epoch"].as_primitive::<UInt64Type>();
        let rules = batch["rule"].as_string::<i32>();
        let count = batch["count"].as_primitive::<UInt64Type>();
        for row in 0..batch.num_rows() {
            if paths.value(row) == path && epochs.value(row) == epoch {
                counts.insert(rules.value(row).to_string(), count.value(row));
            }
        }
    }
    counts
}

/// `matches` of one version, as (offset, rule, line, column, excerpt), sorted.
fn lake_matches(lake: &Path, path: &str, epoch: u64) -> Vec<(u64, String, u64, u64, String)> {
    let mut matches = Vec::new();
    for batch in batches(lake, "matches") {
        let paths = batch["path"].as_string::<i32>();
        let epochs = batch["epoch"].as_primitive::<UInt64Type>();
        let column = |name: &str| batch[name].as_primitive::<UInt64Type>().clone();
        let (line, col, offset) = (column("line"), column("column"), column("offset"));
        for row in 0..batch.num_rows() {
            if paths.value(row) == path && epochs.value(row) == epoch {
                matches.push((
                    offset.value(row),
                    batch["rule"].as_string::<i32>().value(row).to_string(),
                    line.value(row),
                    col.value(row),
                    batch["excerpt"].as_string::<i32>().value(row).to_string(),
                ));
            }
        }
    }
    matches.sort();
    matches
}

fn api_matches(detail: &Value) -> Vec<(u64, String, u64, u64, String)> {
    let mut matches: Vec<_> = (detail["matches"].as_array().unwrap().iter())
        .map(|m| {
            (
                m["offset"].as_u64().unwrap(),
                m["rule"].as_str().unwrap().to_string(),
                m["line"].as_u64().unwrap(),
                m["column"].as_u64().unwrap(),
                m["excerpt"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    matches.sort();
    matches
}

const SECRET: &str = "AKIAQWERTYUIOPASDFGH";

/// The listing once it holds `count` files, checked equal to the lake's current versions.
fn settled(base: &str, lake: &Path, count: usize) -> Vec<Value> {
    eventually("/readyz answers 200", || {
        let status = agent()
            .get(format!("{base}/readyz"))
            .call()
            .map(|r| r.status());
        (status.as_ref().is_ok_and(|s| s.as_u16() == 200))
            .then_some(())
            .ok_or(format!("{status:?}"))
    });
    eventually("the listing equals the lake's current versions", || {
        let listed: BTreeMap<String, String> = every_page(base, "", 1000)
            .iter()
            .map(|f| (format!("{:?}", key(f).1), as_lake_prints(f)))
            .collect();
        let lake = current_versions(lake);
        if listed.len() == count && listed == lake {
            Ok(every_page(base, "", 1000))
        } else {
            Err(format!("{listed:?} != {lake:?}"))
        }
    })
}

#[test]
fn api_files_pages_filters_and_one_file_equal_the_lake() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tree");
    let lake = tmp.path().join("lake");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..23 {
        write(
            &dir,
            &format!("src/m{i:02}.rs"),
            format!("fn f{i}() {{}}\n"),
        );
    }
    write(&dir, "src/todo.rs", "// TODO one\nfn x() {}\n// TODO two\n");
    write(&dir, "docs/notes.md", "# Notes\nFIXME later\n");
    write(&dir, "conf/keys.env", format!("export KEY={SECRET}\n"));
    std::os::unix::fs::symlink("src/m00.rs", dir.join("link.rs")).unwrap();
    let (watch, base) = Watching::serving(&dir, &lake, &["--no-auto-compact"]);
    let files = settled(&base, &lake, 27);

    // Small pages walk to the same files, each once.
    let walked: Vec<(String, String)> = every_page(&base, "", 4).iter().map(key).collect();
    let all: Vec<(String, String)> = files.iter().map(key).collect();
    assert_eq!(walked, all);

    // Filters.
    let paths = |query: &str| -> Vec<String> {
        every_page(&base, query, 5)
            .iter()
            .map(|f| key(f).1)
            .collect()
    };
    assert_eq!(paths("&prefix=src/").len(), 24);
    assert_eq!(paths("&prefix=docs/"), ["docs/notes.md"]);
    assert_eq!(paths("&language=Markdown"), ["docs/notes.md"]);
    assert_eq!(paths("&rule=todo"), ["src/todo.rs"]);
    assert_eq!(paths("&rule=aws_access_key_id"), ["conf/keys.env"]);
    assert_eq!(paths("&rule=todo&prefix=docs/"), Vec::<String>::new());
    assert_eq!(paths("&skip_reason=symlink"), ["link.rs"]);
    let rust = paths("&language=Rust");
    assert_eq!(rust.len(), 24, "{rust:?}");
    for bad in [
        "rule=no_such_rule",
        "skip_reason=gone",
        "limit=0",
        "limit=1001",
        "limit=ten",
        "cursor=zz",
        "cursor=abc",
        "colour=red",
    ] {
        let (status, body) = get(&base, &format!("/api/v1/files?{bad}"));
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
    let (status, page) = get(&base, "/api/v1/files");
    assert_eq!(status, 200);
    assert_eq!(
        page["files"].as_array().unwrap().len(),
        27,
        "100 a page by default"
    );

    // One file: rule counts and match positions are the lake's rows; the secret is masked.
    let tree = dir.file_name().unwrap().to_str().unwrap().to_string();
    for path in [
        "src/todo.rs",
        "conf/keys.env",
        "docs/notes.md",
        "src/m03.rs",
    ] {
        let (status, detail) = get(&base, &format!("/api/v1/files/{tree}/{path}"));
        assert_eq!(status, 200, "{detail}");
        let epoch = detail["file"]["epoch"].as_u64().unwrap();
        let counts: BTreeMap<String, u64> =
            serde_json::from_value(detail["file"]["rule_counts"].clone()).unwrap();
        assert_eq!(counts, lake_rule_counts(&lake, path, epoch), "{path}");
        assert_eq!(
            api_matches(&detail),
            lake_matches(&lake, path, epoch),
            "{path}"
        );
        let listed = files.iter().find(|f| key(f).1 == path).unwrap();
        assert_eq!(&detail["file"], listed);
    }
    let (_, todo) = get(&base, &format!("/api/v1/files/{tree}/src/todo.rs"));
    assert_eq!(todo["file"]["rule_counts"]["todo"], 2);
    let lines: Vec<u64> = api_matches(&todo).iter().map(|m| m.2).collect();
    assert_eq!(lines, [1, 3]);
    let (_, keys) = get(&base, &format!("/api/v1/files/{tree}/conf/keys.env"));
    let excerpt = keys["matches"][0]["excerpt"].as_str().unwrap();
    assert!(!excerpt.contains(SECRET), "{excerpt}");
    assert!(excerpt.contains("AKIA"), "{excerpt}");

    // Modify and delete: the answers follow the commits.
    write(&dir, "src/todo.rs", "// TODO only one now\n");
    std::fs::remove_file(dir.join("docs/notes.md")).unwrap();
    eventually("the modified file's counts", || {
        let (_, detail) = get(&base, &format!("/api/v1/files/{tree}/src/todo.rs"));
        let one = detail["file"]["rule_counts"]["todo"] == 1;
        let (gone, body) = get(&base, &format!("/api/v1/files/{tree}/docs/notes.md"));
        (one && gone == 404 && body["error"].is_string())
            .then_some(())
            .ok_or(format!("{detail} {gone}"))
    });
    settled(&base, &lake, 26);
    let (_, detail) = get(&base, &format!("/api/v1/files/{tree}/src/todo.rs"));
    let epoch = detail["file"]["epoch"].as_u64().unwrap();
    assert_eq!(
        api_matches(&detail),
        lake_matches(&lake, "src/todo.rs", epoch)
    );
    watch.stop();
}

#[test]
fn api_duplicates_group_identical_files_until_one_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dups");
    let lake = tmp.path().join("lake");
    std::fs::create_dir_all(&dir).unwrap();
    write(&dir, "a.txt", "the same words\n");
    write(&dir, "sub/b.txt", "the same words\n");
    write(&dir, "c.txt", "other words\n");
    write(&dir, "empty1", "");
    write(&dir, "empty2", "");
    // Near-duplicates: two long files that differ in one word.
    let long: String = (0..200)
        .map(|i| format!("line {i} of a long file\n"))
        .collect();
    write(&dir, "near1.txt", &long);
    write(&dir, "near2.txt", long.replace("line 7 ", "line seven "));
    let pipeline = concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/dedupe.json");
    let (watch, base) =
        Watching::serving(&dir, &lake, &["--pipeline", pipeline, "--no-auto-compact"]);
    let groups = eventually("one exact group and one cluster", || {
        let (status, body) = get(&base, "/api/v1/duplicates");
        if status != 200 {
            return Err(body.to_string());
        }
        let exact = body["exact"].as_array().unwrap().len();
        let near = body["near"].as_array().unwrap().len();
        (exact == 1 && near == 1)
            .then_some(body.clone())
            .ok_or(body.to_string())
    });
    let group = &groups["exact"][0];
    let members: Vec<&str> = (group["files"].as_array().unwrap().iter())
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["a.txt", "sub/b.txt"], "empty files are no group");
    assert_eq!(group["size"], 15);
    let (_, a) = get(&base, "/api/v1/files/dups/a.txt");
    assert_eq!(group["hash"], a["file"]["hash"]);
    let cluster = &groups["near"][0];
    let mut paths: Vec<String> = (cluster["members"].as_array().unwrap().iter())
        .map(|m| format!("{:?}", m["path"].as_str().unwrap()))
        .collect();
    let representative = format!("{:?}", cluster["representative"]["path"].as_str().unwrap());
    paths.retain(|p| *p != representative);
    paths.insert(0, representative);
    let lake_clusters = crate::util::near_duplicate_clusters(&lake);
    assert_eq!(lake_clusters, BTreeSet::from([paths]));

    write(&dir, "sub/b.txt", "changed words\n");
    eventually("the group is gone", || {
        let (_, body) = get(&base, "/api/v1/duplicates");
        (body["exact"].as_array().unwrap().is_empty())
            .then_some(())
            .ok_or(body.to_string())
    });
    watch.stop();
}

/// Sends `target` exactly as written (no client normalises it) and returns the status and body.
fn raw_get(base: &str, target: &str) -> (u16, String) {
    let addr = base.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (status, body.unwrap_or_default())
}

#[test]
fn api_file_paths_are_lake_keys_never_file_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let lake = tmp.path().join("lake");
    std::fs::create_dir_all(&dir).unwrap();
    write(&dir, "inside.txt", "inside\n");
    write(tmp.path(), "outside.txt", "OUTSIDE-CONTENT\n");
    let (watch, base) = Watching::serving(&dir, &lake, &[]);
    eventually("inside.txt is listed", || {
        let (status, body) = get(&base, "/api/v1/files/keys/inside.txt");
        (status == 200).then_some(()).ok_or(body.to_string())
    });
    let outside = tmp.path().join("outside.txt");
    let outside = outside.to_str().unwrap();
    let attempts = [
        "/api/v1/files/keys/../outside.txt".to_string(),
        "/api/v1/files/keys/..%2foutside.txt".into(),
        "/api/v1/files/keys/%2e%2e/outside.txt".into(),
        "/api/v1/files/keys/%2e%2e%2f%2e%2e%2fetc%2fpasswd".into(),
        "/api/v1/files/keys/../../../../../../etc/passwd".into(),
        "/api/v1/files/keys/%2Fetc%2Fpasswd".into(),
        "/api/v1/files/keys//etc/passwd".into(),
        format!("/api/v1/files/keys/{outside}"),
        format!("/api/v1/files/keys/%2F{}", &outside[1..]),
        "/api/v1/files/..%2F..%2Foutside.txt/x".into(),
        "/api/v1/files/keys/inside.txt%00".into(),
        "/api/v1/files/keys/inside.txt%00.png".into(),
        "/api/v1/files/keys/..\\outside.txt".into(),
        "/api/v1/files/keys/..%5coutside.txt".into(),
        "/api/v1/files/keys/%ff%fe".into(),
        "/api/v1/files/keys/./inside.txt".into(),
        "/api/v1/files/keys/inside.txt/".into(),
    ];
    for target in &attempts {
        let (status, body) = raw_get(&base, target);
        assert!(status == 400 || status == 404, "{target}: {status} {body}");
        let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{target}: {e}"));
        assert!(json["error"].is_string(), "{target}: {body}");
        assert!(
            !body.contains("OUTSIDE-CONTENT") && !body.contains("root:"),
            "{target}: {body}"
        );
    }
    let (status, _) = raw_get(&base, "/api/v1/files/keys/inside.txt");
    assert_eq!(status, 200);
    watch.stop();
}

#[test]
fn api_the_openapi_document_lists_every_route_and_needs_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("doc");
    let lake = tmp.path().join("lake");
    std::fs::create_dir_all(&dir).unwrap();
    write(&dir, "a.rs", "// TODO\n");
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, "ci:letmein\n").unwrap();
    let (watch, base) = Watching::serving(&dir, &lake, &["--token-file", tokens.to_str().unwrap()]);
    let token = Some("letmein");
    eventually("a.rs is committed", || {
        let (status, body) = get_json(&base, "/api/v1/files/doc/a.rs", token);
        (status == 200).then_some(()).ok_or(body.to_string())
    });
    let (status, body) = get(&base, "/api/v1/openapi.json");
    assert_eq!(status, 401, "{body}");
    let (status, doc) = get_json(&base, "/api/v1/openapi.json", token);
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let routes: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected = BTreeSet::from([
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/stats",
        "/api/v1/stats/stream",
        "/api/v1/epochs",
        "/api/v1/rules",
        "/api/v1/files",
        "/api/v1/files/{source}/{path}",
        "/api/v1/duplicates",
        "/api/v1/openapi.json",
    ]);
    assert_eq!(routes, expected);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    // Every documented route is one the server has (the fallback answers "no such route"), and
    // answers as documented.
    for route in routes {
        if route.ends_with("/stream") {
            continue;
        }
        let path = route.replace("{source}", "doc").replace("{path}", "a.rs");
        let mut response = agent()
            .get(format!("{base}{path}"))
            .header("Authorization", "Bearer letmein")
            .call()
            .unwrap();
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap();
        assert_eq!(status, 200, "{route}: {body}");
        let documented = &doc["paths"][route]["get"]["responses"]["200"];
        assert!(documented.is_object(), "{route}");
        if !route.starts_with("/api/v1/") {
            continue;
        }
        assert!(
            doc["paths"][route]["get"]["responses"]["401"].is_object(),
            "{route}"
        );
    }
    let (status, _) = get_json(&base, "/api/v1/no/such/route", token);
    assert_eq!(status, 404);
    watch.stop();
}

#[test]
fn api_files_follow_the_lake_across_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let lake = tmp.path().join("lake");
    std::fs::create_dir_all(&dir).unwrap();
    let (watch, base) = Watching::serving(&dir, &lake, &["--checkpoint-rows", "1"]);
    let named_checkpoint = || {
        // The newest commit record names a checkpoint that is on disk.
        let newest = (std::fs::read_dir(lake.join("_exoflow/commits")).ok()?)
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .max()?;
        let record: Value = serde_json::from_slice(&std::fs::read(newest).ok()?).ok()?;
        let epoch = record["checkpoint"].as_u64()?;
        lake.join(format!("_exoflow/checkpoint-{epoch}"))
            .is_dir()
            .then_some(epoch)
    };
    let mut round = 0;
    while named_checkpoint().is_none() || round < 3 {
        assert!(round < 60, "no checkpoint after {round} rounds");
        for i in 0..3 {
            write(
                &dir,
                &format!("f{i}.txt"),
                format!("TODO {}\n", "x".repeat(round)),
            );
        }
        // Each round's files are a byte longer than the last's.
        let expected = 6 + round as u64;
        eventually("the round is committed", || {
            let (status, body) = get(&base, "/api/v1/files/ckpt/f2.txt");
            let size = body["file"]["size"].as_u64();
            (status == 200 && size == Some(expected))
                .then_some(())
                .ok_or(body.to_string())
        });
        round += 1;
    }
    let files = settled(&base, &lake, 3);
    for file in &files {
        assert_eq!(file["rule_counts"]["todo"], 1, "{file}");
    }
    watch.stop();
}
