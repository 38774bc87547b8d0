//! Restarts: a run on an existing lake continues from its committed state. The same final tree
//! reached through several runs gives the same lake as one run; an unchanged tree adds no rows;
//! a watch restarted after changes made while it was down writes exactly those changes. And a
//! lake that cannot be written stops the run with an error naming the path, consistent.

use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::util::*;

/// A small tree with rule matches, a duplicate, a symlink and nested directories.
fn tree_one(root: &Path) {
    write(root, "README.md", "# Demo\nTODO: write\n");
    write(root, "src/main.rs", "fn main() {} // FIXME\n");
    write(
        root,
        "src/lib.rs",
        "// Copyright 2024 Demo\npub fn f() {}\n",
    );
    write(
        root,
        "src/util/a.py",
        "#!/usr/bin/env python3\nprint('x')  # TODO\n",
    );
    write(root, "docs/LICENSE", "MIT License\nCopyright (c) Demo\n");
    write(root, "LICENSE", "MIT License\nCopyright (c) Demo\n");
    write(root, "data/blob.bin", [0u8, 1, 2, 3, 0, 255]);
    std::os::unix::fs::symlink("src/main.rs", root.join("link.rs")).unwrap();
}

/// `tree_one` after edits, a delete, an addition and a rename.
fn tree_two(root: &Path) {
    tree_one(root);
    write(
        root,
        "src/main.rs",
        "fn main() { println!(\"hi\"); } // FIXME TODO\n",
    );
    std::fs::remove_file(root.join("docs/LICENSE")).unwrap();
    write(root, "src/new.go", "package main // HACK\n");
    std::fs::rename(root.join("src/util/a.py"), root.join("src/util/b.py")).unwrap();
}

#[test]
fn an_unchanged_tree_adds_no_rows_and_keeps_the_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, lake) = (tmp.path().join("tree"), tmp.path().join("lake"));
    tree_one(&tree);
    let args = ["replay", s(&tree), "--out", s(&lake)];
    run_ok(&args);
    let (before, stats) = (table_rows(&lake), stats_current(&lake));
    let out = run_ok(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0 upserts, 0 deletes, 8 unchanged"), "{text}");
    assert!(text.contains("continued from the lake's committed state: 8 tracked paths"));
    assert_eq!(table_rows(&lake), before, "a second replay wrote rows");
    assert_eq!(stats_current(&lake), stats);
}

#[test]
fn runs_one_after_another_equal_one_run_of_all_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one/tree"), tmp.path().join("two/tree"));
    tree_one(&one);
    tree_two(&two);
    let (together, apart) = (tmp.path().join("together"), tmp.path().join("apart"));
    run_ok(&["replay", s(&one), s(&two), "--out", s(&together)]);
    run_ok(&["replay", s(&one), "--out", s(&apart)]);
    let out = run_ok(&["replay", s(&two), "--out", s(&apart)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("epochs 2..=2"), "{text}");
    // Epochs included: the second run continues the epochs of the first.
    assert_eq!(table_rows(&apart), table_rows(&together));
    assert_eq!(stats_current(&apart), stats_current(&together));
    assert_eq!(stats_changes_sum(&apart), stats_current(&apart));
    assert_eq!(history_problems(&apart), Vec::<String>::new());
}

#[test]
fn a_restarted_watch_writes_what_changed_while_it_was_down() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("watched"), tmp.path().join("lake"));
    tree_one(&dir);
    let first = Watching::start(&dir, &lake);
    write(&dir, "while-watching.txt", "TODO seen live\n");
    std::thread::sleep(std::time::Duration::from_millis(300));
    first.stop();
    let before = rows(&lake, "files", &[]);
    // Down: an edit, a delete, an addition, a rename, and untouched files.
    write(
        &dir,
        "src/main.rs",
        "fn main() { /* changed while down */ }\n",
    );
    std::fs::remove_file(dir.join("docs/LICENSE")).unwrap();
    write(&dir, "added-while-down.md", "FIXME\n");
    std::fs::rename(dir.join("src/lib.rs"), dir.join("src/renamed.rs")).unwrap();
    let second = Watching::start(&dir, &lake);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let summary = second.stop();
    assert!(
        summary.contains("9 tracked paths restored"),
        "restored count: {summary}"
    );
    let after = rows(&lake, "files", &[]);
    let new: Vec<&String> = after.iter().filter(|r| !before.contains(r)).collect();
    let ops: Vec<String> = new
        .iter()
        .map(|r| {
            let field = |n: &str| {
                r.split(' ')
                    .find_map(|kv| kv.strip_prefix(&format!("{n}=")))
                    .unwrap()
                    .to_string()
            };
            format!("{} {}", field("op"), field("path"))
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        ops,
        [
            "\"delete\" \"docs/LICENSE\"",
            "\"delete\" \"src/lib.rs\"",
            "\"upsert\" \"added-while-down.md\"",
            "\"upsert\" \"src/main.rs\"",
            "\"upsert\" \"src/renamed.rs\"",
        ],
        "only the changes made while down are new rows"
    );
    assert_eq!(history_problems(&lake), Vec::<String>::new());
    assert_eq!(stats_changes_sum(&lake), stats_current(&lake));
    assert_same_as_replay(&dir, "watched", &lake, tmp.path());
}

#[test]
fn a_lake_in_use_or_of_another_pipeline_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, lake) = (tmp.path().join("tree"), tmp.path().join("lake"));
    tree_one(&tree);
    let watching = Watching::start(&tree, &lake);
    let out = run(&["replay", s(&tree), "--out", s(&lake)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is in use by another exoflow process (pid "),
        "{err}"
    );
    watching.stop();
    let pipeline = tmp.path().join("other.json");
    std::fs::write(&pipeline, r#"{"rules": [{"id": "x", "pattern": "x"}]}"#).unwrap();
    let out = run(&[
        "replay",
        s(&tree),
        "--out",
        s(&lake),
        "--pipeline",
        s(&pipeline),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("holds results of another pipeline"), "{err}");
}

/// Many files with many matches, so that the `matches` part outgrows a small file size limit.
fn big_tree(root: &Path, files: usize) {
    for i in 0..files {
        let body: String = (0..40)
            .map(|j| format!("line {j} of {i}: TODO {:x} FIXME\n", i * 7919 + j * 104729))
            .collect();
        write(root, &format!("d{}/f{i}.txt", i % 17), body);
    }
}

#[test]
fn a_lake_that_cannot_be_written_stops_the_run_and_a_later_run_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one/tree"), tmp.path().join("two/tree"));
    tree_one(&one);
    tree_one(&two);
    big_tree(&two, 1500);
    let (lake, clean) = (tmp.path().join("lake"), tmp.path().join("clean"));
    run_ok(&["replay", s(&one), "--out", s(&lake)]);
    let committed = table_rows(&lake);
    // A file size limit (as a full disk would) part way through the second run's writes.
    let out = exoflow()
        .args(["replay", s(&two), "--out", s(&lake)])
        .env("RUST_LOG", "error")
        .process_group(0)
        .with_file_size_limit(64 * 1024)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(s(&lake)) && err.contains("File too large"),
        "the error names the path and the cause: {err}"
    );
    // Nothing of the failed run is visible once the lake is opened again; a later run
    // continues from the last commit.
    let out = run_ok(&["replay", s(&two), "--out", s(&lake)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("continued from the lake's committed state: 8 tracked paths"),
        "{text}"
    );
    run_ok(&["replay", s(&one), "--out", s(&clean)]);
    assert_eq!(table_rows(&clean), committed);
    run_ok(&["replay", s(&two), "--out", s(&clean)]);
    assert_eq!(table_rows(&lake), table_rows(&clean));
    assert_eq!(stats_current(&lake), stats_current(&clean));
    assert_eq!(history_problems(&lake), Vec::<String>::new());
}

/// The directories under `_exoflow/` that hold a checkpoint.
fn checkpoints(lake: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(lake.join("_exoflow"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_restart_reads_the_checkpoint_and_the_rows_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one/tree"), tmp.path().join("two/tree"));
    tree_one(&one);
    tree_two(&two);
    let (plain, checkpointed) = (tmp.path().join("plain"), tmp.path().join("checkpointed"));
    let every = ["--checkpoint-rows", "1"];
    for tree in [&one, &two, &one] {
        run_ok(&["replay", s(tree), "--out", s(&plain)]);
        run_ok(&[&["replay", s(tree), "--out", s(&checkpointed)][..], &every].concat());
    }
    // 8 + 5 + 5 rows reach twice the 8 tracked paths in the third run's epoch.
    assert_eq!(checkpoints(&checkpointed), ["checkpoint-3"]);
    assert_eq!(checkpoints(&plain), Vec::<String>::new());
    assert_eq!(table_rows(&checkpointed), table_rows(&plain));
    assert_eq!(stats_current(&checkpointed), stats_current(&plain));
    // Restored from the checkpoint (8 rows: the current versions), not from the 8 + 5 + 5
    // rows of the history.
    let out = run_ok(&[&["replay", s(&one), "--out", s(&checkpointed)][..], &every].concat());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("8 tracked paths (8 rows read)"), "{text}");
    assert!(text.contains("0 upserts, 0 deletes"), "{text}");
    let out = run_ok(&["replay", s(&one), "--out", s(&plain)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("8 tracked paths (18 rows read)"), "{text}");
}

/// `dir` as a .tar.gz at `archive`.
fn tar_gz(dir: &Path, archive: &Path) {
    use std::io::Write;
    let out = std::process::Command::new("tar")
        .arg("-C")
        .arg(dir)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&out.stdout).unwrap();
    std::fs::write(archive, gz.finish().unwrap()).unwrap();
}

#[test]
fn an_interrupted_replay_of_snapshots_resumes_after_the_last_committed_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two, three) = (
        tmp.path().join("one/tree"),
        tmp.path().join("two/tree"),
        tmp.path().join("three/tree"),
    );
    tree_one(&one);
    tree_two(&two);
    tree_one(&three);
    big_tree(&three, 300);
    let archive = tmp.path().join("three.tar.gz");
    tar_gz(&three, &archive);
    let whole = std::fs::read(&archive).unwrap();
    // The third snapshot breaks off part way: the first two are committed, and the rows read
    // from the third before the error.
    std::fs::write(&archive, &whole[..whole.len() / 2]).unwrap();
    let (lake, reference) = (tmp.path().join("lake"), tmp.path().join("reference"));
    let args = ["replay", s(&one), s(&two), s(&archive), "--source", "tree"];
    let out = run(&[&args[..], &["--out", s(&lake)]].concat());
    assert_eq!(out.status.code(), Some(1));
    std::fs::write(&archive, &whole).unwrap();
    let out = run_ok(&[&args[..], &["--out", s(&lake)]].concat());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("resumed after snapshot 2"), "{text}");
    assert!(text.contains("replayed 1 snapshot of 'tree'"), "{text}");
    run_ok(&[&args[..], &["--out", s(&reference)]].concat());
    assert_eq!(current_versions(&lake), current_versions(&reference));
    assert_eq!(stats_current(&lake), stats_current(&reference));
    assert_eq!(stats_changes_sum(&lake), stats_current(&lake));
    assert_eq!(history_problems(&lake), Vec::<String>::new());
}

#[test]
fn an_idle_watch_commits_what_it_wrote_before_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("watched"), tmp.path().join("lake"));
    tree_one(&dir);
    let mut watching = Watching::start(&dir, &lake);
    write(&dir, "late.txt", "TODO written while watching\n");
    // Past the 300 ms commit interval, with nothing happening after the write.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    watching.kill();
    let committed = rows(&lake, "files", &[]);
    assert!(
        committed.iter().any(|r| r.contains("path=\"late.txt\"")),
        "the write was committed before the kill: {committed:#?}"
    );
    let again = Watching::start(&dir, &lake);
    std::thread::sleep(std::time::Duration::from_millis(300));
    again.stop();
    assert_eq!(
        rows(&lake, "files", &[]),
        committed,
        "nothing was lost or redone"
    );
    assert_same_as_replay(&dir, "watched", &lake, tmp.path());
}

#[test]
fn a_run_rewrites_a_stats_current_left_behind_by_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, dir) = (tmp.path().join("one/tree"), tmp.path().join("watched"));
    tree_one(&one);
    tree_two(&dir);
    let lake = tmp.path().join("lake");
    run_ok(&["replay", s(&one), "--out", s(&lake), "--source", "watched"]);
    let old = std::fs::read(lake.join("stats_current.parquet")).unwrap();
    run_ok(&["replay", s(&dir), "--out", s(&lake), "--source", "watched"]);
    let current = stats_current(&lake);
    // As if the second run had died between its commit record and replacing the file.
    std::fs::write(lake.join("stats_current.parquet"), old).unwrap();
    assert_ne!(stats_current(&lake), current);
    // A watch that finds nothing to change commits nothing, but rewrites the file.
    Watching::start(&dir, &lake).stop();
    assert_eq!(stats_current(&lake), current);
}

#[test]
fn a_restart_with_another_worker_count_continues_the_same_lake() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one/tree"), tmp.path().join("two/tree"));
    tree_one(&one);
    big_tree(&one, 200);
    tree_two(&two);
    big_tree(&two, 150);
    let (lake, reference) = (tmp.path().join("lake"), tmp.path().join("reference"));
    run_ok(&["replay", s(&one), "--out", s(&lake), "--workers", "1"]);
    let out = run_ok(&["replay", s(&two), "--out", s(&lake), "--workers", "4"]);
    let text = String::from_utf8_lossy(&out.stdout);
    // tree_two edits one file, adds one, renames one and deletes one; f150..f199 are gone.
    assert!(
        text.contains("3 upserts, 52 deletes, 155 unchanged"),
        "{text}"
    );
    run_ok(&[
        "replay",
        s(&one),
        s(&two),
        "--out",
        s(&reference),
        "--workers",
        "2",
    ]);
    assert_eq!(table_rows(&lake), table_rows(&reference));
    assert_eq!(stats_current(&lake), stats_current(&reference));
}

#[test]
fn a_finished_replay_of_snapshots_run_again_adds_no_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one/tree"), tmp.path().join("two/tree"));
    tree_one(&one);
    tree_two(&two);
    let lake = tmp.path().join("lake");
    let args = ["replay", s(&one), s(&two), "--out", s(&lake)];
    run_ok(&args);
    let before = table_rows(&lake);
    run_ok(&args);
    assert_eq!(table_rows(&lake), before, "the history was written again");
}

#[test]
fn an_archive_member_appended_again_is_a_later_version() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tree");
    write(&dir, "a.txt", "TODO once\n");
    write(&dir, "b.txt", "plain\n");
    let archive = tmp.path().join("tree.tar");
    let tar = |args: &[&str]| {
        let out = std::process::Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .args(args)
            .arg(&archive)
            .arg("a.txt")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    tar(&["-cf"]);
    write(&dir, "a.txt", "TODO TODO twice\n");
    tar(&["-rf"]);
    let (lake, other) = (tmp.path().join("lake"), tmp.path().join("other"));
    write(&other, "x.txt", "x\n");
    run_ok(&["replay", s(&archive), "--out", s(&lake)]);
    let stats = stats_current(&lake);
    // A restart on another source restores both sources' state; the archive's counts stay.
    run_ok(&["replay", s(&other), "--out", s(&lake), "--source", "other"]);
    let todo = |rows: &[String]| {
        rows.iter()
            .filter(|r| r.starts_with("rule  todo ") || r.starts_with("total  null matches"))
            .cloned()
            .collect::<Vec<_>>()
    };
    // The later member is the current version: 2 matches, not 1 + 2.
    assert_eq!(
        todo(&stats),
        [
            "rule  todo files 1",
            "rule  todo matches 2",
            "total  null matches 2"
        ]
    );
    assert_eq!(todo(&stats_current(&lake)), todo(&stats));
    assert_eq!(stats_changes_sum(&lake), stats_current(&lake));
    assert_eq!(history_problems(&lake), Vec::<String>::new());
}

/// Two near copies of one text and an unrelated file, plus `extra` files; a near-duplicate pack
/// with it.
fn near_duplicate_tree(dir: &Path, extra: usize) -> std::path::PathBuf {
    let text = |seed: u64, words: usize| -> String {
        let mut state = seed;
        (0..words)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                format!("{:x}", state & 0xfffff)
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let base = text(1, 2000);
    write(dir, "a.txt", &base);
    write(
        dir,
        "b.txt",
        format!("{base} and a few more words at the end"),
    );
    write(dir, "c.txt", text(2, 2000));
    for i in 0..extra {
        write(dir, &format!("more/{i}.txt"), format!("{base} {i}"));
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/dedupe.json")
}

#[test]
fn signatures_survive_a_restart_from_a_checkpoint_and_clusters_continue_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one/tree"), tmp.path().join("two/tree"));
    let pipeline = near_duplicate_tree(&one, 0);
    near_duplicate_tree(&two, 3);
    std::fs::remove_file(two.join("a.txt")).unwrap();
    let (plain, checkpointed) = (tmp.path().join("plain"), tmp.path().join("checkpointed"));
    let every = ["--checkpoint-rows", "1", "--pipeline", s(&pipeline)];
    for tree in [&one, &two, &one, &two] {
        run_ok(&[
            "replay",
            s(tree),
            "--out",
            s(&plain),
            "--pipeline",
            s(&pipeline),
        ]);
        run_ok(&[&["replay", s(tree), "--out", s(&checkpointed)][..], &every].concat());
    }
    assert!(!checkpoints(&checkpointed).is_empty());
    assert_eq!(table_rows(&checkpointed), table_rows(&plain));
    assert_eq!(stats_current(&checkpointed), stats_current(&plain));
    let clusters = near_duplicate_clusters(&plain);
    assert_eq!(clusters.len(), 1, "{clusters:?}");
    assert_eq!(clusters.iter().next().unwrap().len(), 4, "{clusters:?}");
    // Nothing is re-read to restore a signature: an unchanged tree writes no row.
    let before = table_rows(&checkpointed);
    let out = run_ok(&[&["replay", s(&two), "--out", s(&checkpointed)][..], &every].concat());
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 upserts, 0 deletes"));
    assert_eq!(table_rows(&checkpointed), before);
}
