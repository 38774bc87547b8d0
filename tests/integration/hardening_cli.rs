//! Limits at their edges and the command line: every numeric flag is taken and works, or is
//! refused with exit 2 before anything is read; `stats` reads as a summary; logs in a pipe are
//! plain text.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::util::{exoflow, files_column, parts, run, run_ok, run_within, s, stats_current, write};

/// Asserts that `args` ends within seconds with exit 2 and an error that mentions each of
/// `mentions`, and that it wrote no lake at `lake`.
fn assert_refused(args: &[&str], lake: &Path, mentions: &[&str]) {
    let out = run_within(args, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("exoflow {args:?} was still running after 20 s"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exoflow {args:?}: {stderr}");
    for mention in mentions {
        assert!(stderr.contains(mention), "exoflow {args:?}: {stderr}");
    }
    assert!(
        !lake.exists(),
        "exoflow {args:?} created {}",
        lake.display()
    );
}

fn small_tree(root: &Path) {
    write(root, "a.rs", "// TODO one\n");
    write(root, "b.txt", "two\n");
}

/// A file of `len` bytes that takes no disk: a hole.
fn sparse_file(path: &Path, len: u64) {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

#[test]
fn a_max_file_bytes_the_batch_offsets_cannot_hold_is_refused_with_exit_2_before_reading() {
    // Before the bound, a file near i32::MAX bytes next to any other in one batch overflowed
    // the batch's 32-bit offsets and panicked a worker.
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    small_tree(&tree);
    // Files named before and after it, so that one shares its batch in any walk order.
    write(&tree, "0.txt", "zero\n");
    write(&tree, "zz.txt", "last\n");
    sparse_file(&tree.join("huge.bin"), i32::MAX as u64 - 1);
    let pipeline = tmp.path().join("pipeline.json");
    std::fs::write(&pipeline, r#"{"max_file_bytes": 2147483647}"#).unwrap();
    let lake = tmp.path().join("lake");
    assert_refused(
        &[
            "replay",
            s(&tree),
            "--out",
            s(&lake),
            "--pipeline",
            s(&pipeline),
        ],
        &lake,
        &[s(&pipeline), "max_file_bytes", "1073741824"],
    );
}

#[test]
fn at_the_max_file_bytes_maximum_a_larger_sparse_file_is_too_large_and_never_read() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    small_tree(&tree);
    sparse_file(&tree.join("huge.bin"), (1 << 30) + 1);
    let pipeline = tmp.path().join("pipeline.json");
    std::fs::write(&pipeline, r#"{"max_file_bytes": 1073741824}"#).unwrap();
    let lake = tmp.path().join("lake");
    run_ok(&[
        "replay",
        s(&tree),
        "--out",
        s(&lake),
        "--pipeline",
        s(&pipeline),
    ]);
    let skips = files_column(&lake, "skip_reason");
    assert_eq!(skips["huge.bin"], "\"too_large\"", "{skips:?}");
    assert_eq!(skips["a.rs"], "null", "{skips:?}");
    assert_eq!(files_column(&lake, "size")["huge.bin"], "1073741825");
}

#[test]
fn workers_beyond_the_bound_are_refused_with_exit_2_by_replay_and_watch() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    small_tree(&tree);
    let lake = tmp.path().join("lake");
    for command in ["replay", "watch"] {
        assert_refused(
            &[command, s(&tree), "--out", s(&lake), "--workers", "10000"],
            &lake,
            &["--workers", "10000 is not in 1..="],
        );
    }
}

#[test]
fn workers_0_is_refused_the_same_way_by_replay_and_watch() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    small_tree(&tree);
    let lake = tmp.path().join("lake");
    let mut errors = Vec::new();
    for command in ["replay", "watch"] {
        let args = [command, s(&tree), "--out", s(&lake), "--workers", "0"];
        assert_refused(&args, &lake, &["--workers", "0 is not in 1..="]);
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        errors.push(stderr.lines().next().unwrap_or_default().to_string());
    }
    assert_eq!(errors[0], errors[1]);
}

#[test]
fn interval_flags_out_of_range_are_refused_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    small_tree(&tree);
    let lake = tmp.path().join("lake");
    let (t, l) = (s(&tree), s(&lake));
    // A replay stamps a new epoch on every file with a 0 interval; the largest duration
    // overflowed the clock's arithmetic at the second snapshot.
    for interval in ["0s", "9ms", "8days", "18446744073709551615s"] {
        assert_refused(
            &["replay", t, t, "--out", l, "--commit-interval", interval],
            &lake,
            &["--commit-interval", interval],
        );
    }
    assert_refused(
        &["watch", t, "--out", l, "--commit-interval", "0s"],
        &lake,
        &["--commit-interval"],
    );
    for poll in ["0s", "1ms"] {
        assert_refused(
            &["watch", t, "--out", l, "--poll", poll],
            &lake,
            &["--poll", "rescanned without pause"],
        );
    }
    for (flag, value) in [
        ("--latency-ms", "3600001"),
        ("--debounce-ms", "3600001"),
        ("--debounce-ms", "18446744073709551615"),
    ] {
        assert_refused(&["watch", t, "--out", l, flag, value], &lake, &[flag]);
    }
}

#[test]
fn edge_values_that_are_accepted_work() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    small_tree(&tree);
    let lake = tmp.path().join("lake");
    let args = [
        "replay",
        s(&tree),
        "--out",
        s(&lake),
        "--commit-interval",
        "10ms",
        "--checkpoint-rows",
        "0",
    ];
    // The most workers every machine takes.
    run_ok(&[&args[..], &["--workers", "64"]].concat());
    assert_eq!(files_column(&lake, "hash").len(), 2);
    // Both files change: as many rows as twice the tracked paths, which is all that
    // `--checkpoint-rows 0` still asks for a checkpoint.
    write(&tree, "a.rs", "// TODO changed\n");
    write(&tree, "b.txt", "changed\n");
    run_ok(&args);
    let second = files_column(&lake, "hash");
    // Continued from that checkpoint: nothing changed, no rows.
    run_ok(&args);
    assert_eq!(files_column(&lake, "hash"), second);
    let checkpoints = std::fs::read_dir(lake.join("_exoflow"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("checkpoint-")
        })
        .count();
    assert!(checkpoints > 0, "no checkpoint written");

    let watched = tmp.path().join("watched");
    std::fs::create_dir(&watched).unwrap();
    let watch_lake = tmp.path().join("watch-lake");
    let watching = crate::util::Watching::start_with(
        &watched,
        &watch_lake,
        &["--latency-ms", "0", "--debounce-ms", "0", "--poll", "10ms"],
    );
    write(&watched, "new.txt", "TODO new\n");
    std::thread::sleep(Duration::from_millis(800));
    watching.stop();
    assert!(files_column(&watch_lake, "hash").contains_key("new.txt"));
}

/// A tree with `groups` pairs of identical files, Rust and text, for a lake with many
/// duplicate rows.
fn lake_with_duplicates(tmp: &Path, groups: usize) -> std::path::PathBuf {
    let tree = tmp.join("tree");
    for g in 0..groups {
        for copy in 0..2 {
            write(
                &tree,
                &format!("d{g}/copy{copy}.rs"),
                format!("// TODO group {g}\n"),
            );
        }
    }
    write(&tree, "notes.txt", "FIXME once\n");
    let lake = tmp.join("lake");
    run_ok(&["replay", s(&tree), "--out", s(&lake)]);
    lake
}

#[test]
fn stats_prints_totals_languages_and_rules_before_a_brief_of_the_duplicate_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake_with_duplicates(tmp.path(), 30);
    let out = String::from_utf8(run_ok(&["stats", s(&lake)]).stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("statistics current at epoch 1"),
        "{out}"
    );
    let at = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?}:\n{out}"))
    };
    let (total, language, rule, duplicates) = (
        at("total:"),
        at("language "),
        at("rule "),
        at("duplicates:"),
    );
    assert!(
        total < language && language < rule && rule < duplicates,
        "{out}"
    );
    assert_eq!(
        lines[total],
        "total: 61 files, 1011 bytes, 61 lines, 61 matches, 0 skipped"
    );
    let row = |cells: &[&str]| {
        lines
            .iter()
            .position(|l| l.split_whitespace().collect::<Vec<_>>() == cells)
            .unwrap_or_else(|| panic!("no row {cells:?}:\n{out}"))
    };
    assert!(row(&["Rust", "60", "1000", "60"]) < row(&["Text", "1", "11", "1"]));
    assert!(row(&["todo", "60", "60"]) < row(&["fixme", "1", "1"]));
    assert_eq!(
        lines[duplicates],
        "duplicates: 30 groups of paths with identical content, 60 paths in all; the largest:"
    );
    let hashes = lines
        .iter()
        .filter(|l| l.len() > 32 && l.as_bytes()[..32].iter().all(u8::is_ascii_hexdigit))
        .count();
    assert_eq!(hashes, 5, "{out}");
    assert_eq!(
        *lines.last().unwrap(),
        "(and 25 more groups: --dimension duplicates)"
    );
}

#[test]
fn stats_dimension_lists_all_its_rows_and_json_prints_every_row() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake_with_duplicates(tmp.path(), 30);
    let out = String::from_utf8(run_ok(&["stats", s(&lake), "--dimension", "duplicates"]).stdout)
        .unwrap();
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("duplicates "))
        .collect();
    assert_eq!(rows.len(), 30, "{out}");
    assert!(out.lines().all(|l| !l.starts_with("language")), "{out}");
    let json = run_ok(&["stats", s(&lake), "--json"]).stdout;
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json.as_array().unwrap().len(), stats_current(&lake).len());
}

#[test]
fn stats_refuses_an_unknown_dimension_with_exit_2_listing_the_valid_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake_with_duplicates(tmp.path(), 1);
    let out = run(&["stats", s(&lake), "--dimension", "langauge"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for valid in exoflow::query::DIMENSIONS {
        assert!(stderr.contains(valid), "{stderr}");
    }
    assert!(stderr.contains("langauge"), "{stderr}");
}

#[test]
fn compact_refuses_target_size_0_and_a_min_size_above_the_target_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    small_tree(&tree);
    let lake = tmp.path().join("lake");
    // Two commits: two parts per table to merge.
    run_ok(&["replay", s(&tree), "--out", s(&lake), "--workers", "1"]);
    write(&tree, "c.txt", "three\n");
    run_ok(&["replay", s(&tree), "--out", s(&lake), "--workers", "1"]);
    let before = parts(&lake, "files");
    assert_eq!(before.len(), 2);
    for (args, mention) in [
        (&["--target-size", "0"][..], "target size of 0"),
        (
            &["--target-size", "1MiB", "--min-size", "2MiB"][..],
            "above the target size",
        ),
    ] {
        let mut all = vec!["compact", s(&lake)];
        all.extend_from_slice(args);
        let out = run(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(mention), "{stderr}");
        assert_eq!(parts(&lake, "files"), before);
    }
    // --min-size defaults to half the target: both parts are below 512 KiB.
    run_ok(&["compact", s(&lake), "--target-size", "1MiB"]);
    assert_eq!(parts(&lake, "files").len(), 1);
}

/// A tar with a file and a hard link to it: replaying it logs a warning.
fn tar_with_a_hard_link(path: &Path) {
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "a.txt", &b"one\n"[..])
        .unwrap();
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Link);
    link.set_size(0);
    link.set_mode(0o644);
    builder.append_link(&mut link, "b.txt", "a.txt").unwrap();
    builder.finish().unwrap();
}

/// Whether `text` holds an SGR (colour) escape sequence, `ESC [ digits/; m`; the progress bar's
/// cursor movements on a terminal are other sequences.
fn has_colour(text: &str) -> bool {
    text.split("\x1b[").skip(1).any(|rest| {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == ';'))
            .unwrap_or(rest.len());
        rest[end..].starts_with('m')
    })
}

#[test]
fn logs_written_to_a_pipe_carry_no_ansi_colour_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("linked.tar");
    tar_with_a_hard_link(&archive);
    let lake = tmp.path().join("lake");
    let out = exoflow()
        .args(["replay", s(&archive), "--out", s(&lake)])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warning = stderr
        .lines()
        .find(|l| l.contains("hard link"))
        .unwrap_or_else(|| panic!("no warning logged:\n{stderr}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(!has_colour(&stderr), "{stderr:?}");
}

#[test]
fn logs_on_a_terminal_are_coloured_unless_no_color_is_set() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("linked.tar");
    tar_with_a_hard_link(&archive);
    // util-linux `script` gives the command a terminal; its output is the terminal's.
    let on_terminal = |no_color: Option<&str>, lake: &str| {
        let command = format!(
            "{} replay {} --out {}",
            env!("CARGO_BIN_EXE_exoflow"),
            s(&archive),
            s(&tmp.path().join(lake))
        );
        let mut script = Command::new("script");
        script
            .args(["-qec", &command, "/dev/null"])
            .env("RUST_LOG", "warn")
            .env_remove("NO_COLOR");
        if let Some(value) = no_color {
            script.env("NO_COLOR", value);
        }
        let out = script.output().expect("script (util-linux) runs");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("hard link"), "{text}");
        text
    };
    assert!(has_colour(&on_terminal(None, "lake1")));
    assert!(!has_colour(&on_terminal(Some("1"), "lake2")));
}
