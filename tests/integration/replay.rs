//! End-to-end tests of `exoflow replay`: the lake against an independent Python oracle, and the same
//! rows whatever the route (workers, directory or archive).

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use crate::util::*;

const PIPELINE: &str = r#"{
  "name": "test",
  "max_file_bytes": 200000,
  "max_matches_per_rule": 5,
  "rules": [
    { "id": "todo", "pattern": "TODO" },
    { "id": "todo_any_case", "pattern": "todo", "case_insensitive": true },
    { "id": "aa", "pattern": "aa" },
    { "id": "odo", "pattern": "ODO" },
    { "id": "upper_word", "pattern": "\\b[A-Z]{4}\\b", "regex": true },
    { "id": "unicode", "pattern": "ünï" },
    { "id": "aws", "pattern": "AKIA[0-9A-Z]{16}", "regex": true, "secret": true },
    { "id": "password", "pattern": "password\\s*=\\s*\"[^\"]+\"", "regex": true, "case_insensitive": true, "secret": true }
  ]
}"#;

/// A corpus with every awkward case the reader and the rules must handle.
fn awkward_corpus(root: &Path, with_special_files: bool) {
    write(
        root,
        "src/main.rs",
        "// TODO: one\nfn main() {} // FIXME two\n",
    );
    write(root, "crlf.txt", "TODO a\r\nTODO b\r\nlast\r\n");
    write(root, "no_newline.py", "# TODO last line");
    write(root, "empty.txt", "");
    write(root, "overlap.txt", "TODODO aaaaa TODOTODO todo ToDo\n");
    write(root, "utf8/héllo.md", "héllo TODO ünïcödé — TODO ünï\n");
    write(root, "bin.dat", b"\0\x01TODO\xff\xfe");
    write(root, "big.txt", vec![b'x'; 250_000]);
    write(root, "run", "#!/bin/sh\n# TODO nothing\necho hi\n");
    write(root, "Makefile", "all:\n\techo TODO\n");
    write(
        root,
        "secrets.env",
        "aws = AKIAABCDEFGHIJKLMNOP # TODO rotate\nPassword = \"hunter2 is not a secret\"\n",
    );
    write(root, "many.txt", "TODO\n".repeat(150));
    // Matches across 64 KiB boundaries, where a chunked reader would split them.
    let mut straddle = vec![b'.'; 150_000];
    for boundary in [65_536usize, 131_072] {
        straddle[boundary - 2..boundary + 2].copy_from_slice(b"TODO");
    }
    straddle[100_000] = b'\n';
    write(root, "straddle.txt", straddle);
    // A long line with multi-byte characters around a match far from its start.
    let long = format!("{}TODO{}\n", "é".repeat(300), "ü".repeat(300));
    write(root, "long_line.txt", long);
    write(root, ".git/config", "TODO must not be seen\n");
    std::os::unix::fs::symlink("src/main.rs", root.join("link")).unwrap();
    std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
    let bad_name = std::ffi::OsStr::from_bytes(b"bad\xffname.txt");
    std::fs::write(root.join(bad_name), "TODO in a badly named file\n").unwrap();
    if with_special_files {
        mkfifo(&root.join("fifo"));
    }
}

fn setup(with_special_files: bool) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    std::fs::create_dir(&corpus).unwrap();
    awkward_corpus(&corpus, with_special_files);
    let pipeline = tmp.path().join("pipeline.json");
    std::fs::write(&pipeline, PIPELINE).unwrap();
    (tmp, corpus, pipeline)
}

#[test]
fn replay_matches_the_independent_oracle() {
    let (tmp, corpus, pipeline) = setup(true);
    let lake = tmp.path().join("lake");
    let out = replay_ok(&corpus, &lake, &pipeline, &["--workers", "2"]);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains(": 18 files,"), "{summary}");
    assert!(summary.contains("too_large 1"), "{summary}");
    oracle(&corpus, &lake, &pipeline, &[]);
}

#[test]
fn one_and_four_workers_write_the_same_rows() {
    let (tmp, corpus, pipeline) = setup(true);
    let mut lakes = Vec::new();
    for workers in ["1", "4"] {
        let lake = tmp.path().join(format!("lake-{workers}"));
        replay_ok(&corpus, &lake, &pipeline, &["--workers", workers]);
        lakes.push(lake_rows(&lake));
    }
    assert!(!lakes[0]["files"].is_empty());
    assert_eq!(lakes[0], lakes[1]);
}

#[test]
fn secrets_never_reach_the_lake() {
    let (tmp, corpus, pipeline) = setup(false);
    let lake = tmp.path().join("lake");
    replay_ok(&corpus, &lake, &pipeline, &[]);
    let matches = rows(&lake, "matches", &[]).join("\n");
    assert!(matches.contains("AKIA****************"), "{matches}");
    assert!(!matches.contains("ABCDEFGHIJ"), "{matches}");
    assert!(!matches.contains("hunter2"), "{matches}");
    for part in parts(&lake, "matches") {
        let bytes = std::fs::read(part).unwrap();
        assert!(!bytes.windows(10).any(|w| w == b"ABCDEFGHIJ"));
    }
}

#[test]
fn languages_come_from_names_extensions_and_shebangs() {
    let (tmp, corpus, pipeline) = setup(false);
    let lake = tmp.path().join("lake");
    replay_ok(&corpus, &lake, &pipeline, &[]);
    let languages = files_column(&lake, "language");
    assert_eq!(languages["src/main.rs"], "\"Rust\"");
    assert_eq!(languages["no_newline.py"], "\"Python\"");
    assert_eq!(languages["utf8/héllo.md"], "\"Markdown\"");
    assert_eq!(languages["Makefile"], "\"Makefile\"");
    assert_eq!(languages["run"], "\"Shell\"");
    assert_eq!(languages["bin.dat"], "null");
}

/// Builds `name` from `corpus` with the system tar (which stores FIFOs, symlinks and any name),
/// compressed by `compress`.
fn tarball(corpus: &Path, dir_arg: &str, name: &Path, compress: fn(&[u8]) -> Vec<u8>) {
    let out = Command::new("tar")
        .arg("-C")
        .arg(corpus)
        .args(["-cf", "-", dir_arg])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(name, compress(&out.stdout)).unwrap();
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zst(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

#[test]
fn archives_give_the_same_rows_as_the_directory() {
    let (tmp, corpus, pipeline) = setup(true);
    let replay = |input: &Path, lake: &Path, extra: &[&str]| {
        let mut args = vec!["--source", "corpus"];
        args.extend_from_slice(extra);
        replay_ok(input, lake, &pipeline, &args);
        lake_rows(lake)
    };
    let expected = replay(&corpus, &tmp.path().join("lake-dir"), &[]);

    let tgz = tmp.path().join("corpus.tar.gz");
    tarball(&corpus, ".", &tgz, gzip);
    assert_eq!(replay(&tgz, &tmp.path().join("lake-tgz"), &[]), expected);

    let tzst = tmp.path().join("corpus.tar.zst");
    tarball(&corpus, ".", &tzst, zst);
    assert_eq!(replay(&tzst, &tmp.path().join("lake-zst"), &[]), expected);

    let nested = tmp.path().join("nested.tgz");
    tarball(tmp.path(), "corpus", &nested, gzip);
    let stripped = replay(
        &nested,
        &tmp.path().join("lake-strip"),
        &["--strip-components", "1"],
    );
    assert_eq!(stripped, expected);
}

#[test]
fn truncated_archive_names_the_member_and_commits_nothing_of_it() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    // Incompressible members so that truncating the archive cuts through the middle.
    let mut state = 0x9e3779b97f4a7c15u64;
    for i in 0..40 {
        let content: Vec<u8> = (0..8192)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state & 0x7f) as u8 | 0x20
            })
            .collect();
        write(&corpus, &format!("f{i:02}.txt"), content);
    }
    let tgz = tmp.path().join("corpus.tar.gz");
    tarball(&corpus, ".", &tgz, gzip);
    let bytes = std::fs::read(&tgz).unwrap();
    std::fs::write(&tgz, &bytes[..bytes.len() / 2]).unwrap();
    let lake = tmp.path().join("lake");
    let out = run(&["replay", s(&tgz), "--out", s(&lake), "--workers", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("corpus.tar.gz") && stderr.contains("member"),
        "{stderr}"
    );
    // The members before the cut cannot be trusted either (the checksum is at the end): the
    // damaged snapshot commits nothing.
    assert_eq!(rows(&lake, "files", &[]).len(), 0, "{stderr}");
}

#[test]
fn not_an_archive_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("fake.tar.gz");
    std::fs::write(&fake, b"\x1f\x8bthis is not gzip at all").unwrap();
    let out = run(&["replay", s(&fake), "--out", s(&tmp.path().join("lake"))]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("fake.tar.gz"), "{stderr}");
}

#[test]
fn missing_path_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    let out = run(&["replay", "/no/such/tree", "--out", s(&lake)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/no/such/tree"), "{stderr}");
    assert!(!lake.exists());
}

#[test]
fn bad_pipeline_files_are_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    write(&corpus, "a.txt", "TODO\n");
    let lake = tmp.path().join("lake");
    let cases = [
        (
            r#"{"rules": [{"id": "a", "pattern": "x", "regx": true}]}"#,
            "regx",
        ),
        (
            r#"{"rules": [{"id": "a", "pattern": "x"}, {"id": "a", "pattern": "y"}]}"#,
            "rule 'a'",
        ),
        (
            r#"{"rules": [{"id": "broken", "pattern": "(unclosed", "regex": true}]}"#,
            "rule 'broken'",
        ),
        (r#"{"rules": [}"#, "pipeline"),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let file = tmp.path().join(format!("p{i}.json"));
        std::fs::write(&file, text).unwrap();
        let out = run(&[
            "replay",
            s(&corpus),
            "--out",
            s(&lake),
            "--pipeline",
            s(&file),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(s(&file)), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!lake.exists(), "nothing may be written for a bad pipeline");
    }
}

#[test]
fn ignore_files_are_honoured_unless_no_ignore() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    write(&corpus, ".gitignore", "build/\n*.log\n");
    write(&corpus, "src/a.rs", "// TODO\n");
    write(&corpus, "build/out.rs", "// TODO\n");
    write(&corpus, "debug.log", "TODO\n");
    write(&corpus, ".git/HEAD", "ref: refs/heads/main\n");
    let paths = |lake: &Path| files_column(lake, "path").into_keys().collect::<Vec<_>>();
    let lake = tmp.path().join("lake");
    run_ok(&["replay", s(&corpus), "--out", s(&lake)]);
    assert_eq!(paths(&lake), vec![".gitignore", "src/a.rs"]);
    let all = tmp.path().join("lake-all");
    run_ok(&["replay", s(&corpus), "--out", s(&all), "--no-ignore"]);
    assert_eq!(
        paths(&all),
        vec![
            ".git/HEAD",
            ".gitignore",
            "build/out.rs",
            "debug.log",
            "src/a.rs"
        ]
    );
}

#[test]
fn part_files_match_the_schema_files_and_no_temporary_file_remains() {
    let (tmp, corpus, pipeline) = setup(false);
    let lake = tmp.path().join("lake");
    replay_ok(&corpus, &lake, &pipeline, &[]);
    for table in ["files", "file_rules", "matches"] {
        let expected = &exoflow::sink::schema::table(table).arrow;
        let found = parts(&lake, table);
        assert!(!found.is_empty(), "{table} has no part files");
        for part in found {
            for batch in read_batches(&part) {
                assert_eq!(
                    batch.schema().fields(),
                    expected.fields(),
                    "{}",
                    part.display()
                );
            }
        }
        for entry in std::fs::read_dir(lake.join(table)).unwrap() {
            let name = entry.unwrap().file_name();
            assert!(
                !name.to_string_lossy().ends_with(".tmp"),
                "{name:?} left behind"
            );
        }
    }
}
