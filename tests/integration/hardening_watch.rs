//! Watch (and replay) under awkward trees: the lake inside the input, a watched directory that is
//! removed or replaced, a large `rm -rf`, ignore files at every level. Each test runs the real
//! binary on a real directory and reads the lake back.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::util::*;

/// Waits until `done` holds, checking every 50 ms; false if it never did within `limit`.
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

/// The paths of every row of the lake's `files` table, as written (quoted).
fn file_row_paths(lake: &Path) -> Vec<String> {
    rows(lake, "files", &[])
        .iter()
        .map(|row| {
            row.split(' ')
                .find_map(|kv| kv.strip_prefix("path="))
                .unwrap()
                .to_string()
        })
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn keys(map: &BTreeMap<String, String>) -> Vec<&str> {
    map.keys().map(String::as_str).collect()
}

#[test]
fn a_replayed_tree_holding_its_own_lake_never_ingests_the_lake() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    write(&tree, "a.rs", "// TODO a\n");
    write(&tree, "sub/b.py", "# FIXME b\n");
    // The same lake named three ways: directly, through `..`, and through a symlink outside.
    let lake = tree.join("lake");
    let dotdot = tree.join("sub/../lake");
    let link = tmp.path().join("lake-link");
    std::fs::create_dir_all(&lake).unwrap();
    std::os::unix::fs::symlink(&lake, &link).unwrap();
    for out in [&lake, &dotdot, &link] {
        let run = run_ok(&["replay", s(&tree), "--out", s(out)]);
        let text = String::from_utf8_lossy(&run.stdout).into_owned();
        let paths = file_row_paths(&lake);
        assert!(
            paths.iter().all(|p| !p.contains("lake")),
            "the lake was ingested (--out {}): {paths:?}\n{text}",
            out.display()
        );
    }
    assert_eq!(
        keys(&current_versions(&lake)),
        ["\"a.rs\"", "\"sub/b.py\""],
        "current versions"
    );
    // Three replays of an unchanged tree: two rows, written once.
    assert_eq!(
        file_row_paths(&lake).len(),
        2,
        "{:?}",
        rows(&lake, "files", &[])
    );
}

#[test]
fn replaying_a_lake_or_a_directory_inside_it_into_itself_is_refused_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    write(&tree, "a.rs", "// TODO a\n");
    let lake = tmp.path().join("lake");
    run_ok(&["replay", s(&tree), "--out", s(&lake)]);
    let before = rows(&lake, "files", &[]);
    for input in [lake.clone(), lake.join("files"), lake.join("_exoflow")] {
        let out = run(&["replay", s(&input), "--out", s(&lake)]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("lake"),
            "the message names the lake: {}",
            stderr(&out)
        );
    }
    assert_eq!(rows(&lake, "files", &[]), before, "the lake was touched");
}

#[test]
fn a_watched_tree_holding_its_lake_commits_nothing_new_while_idle() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    write(&tree, "a.rs", "// TODO a\n");
    write(&tree, "sub/b.py", "# FIXME b\n");
    // The lake does not exist yet: the run creates it inside the watched tree.
    let lake = tree.join("lake");
    let watching = Watching::start(&tree, &lake);
    assert!(
        eventually(Duration::from_secs(20), || file_row_paths(&lake).len() >= 2),
        "the initial scan was never committed"
    );
    // Several commit intervals with nothing changing: no new rows.
    std::thread::sleep(Duration::from_millis(1500));
    let settled = rows(&lake, "files", &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let later = rows(&lake, "files", &[]);
    let summary = watching.stop();
    assert_eq!(settled, later, "new rows while nothing changed: {summary}");
    let paths = file_row_paths(&lake);
    assert!(
        paths.iter().all(|p| !p.starts_with("\"lake")),
        "rows under the lake: {paths:?}\n{summary}"
    );
    assert_eq!(
        keys(&current_versions(&lake)),
        ["\"a.rs\"", "\"sub/b.py\""],
        "{summary}"
    );
}

#[test]
fn watching_a_lake_or_a_directory_inside_it_is_refused_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    write(&tree, "a.rs", "// TODO a\n");
    let lake = tmp.path().join("lake");
    run_ok(&["replay", s(&tree), "--out", s(&lake)]);
    let before = rows(&lake, "files", &[]);
    let alias = tmp.path().join("lake-link");
    std::os::unix::fs::symlink(&lake, &alias).unwrap();
    for dir in [lake.clone(), lake.join("files"), alias.join("_exoflow")] {
        let out = run_within(
            &["watch", s(&dir), "--out", s(&lake)],
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("watching {} ran on", dir.display()));
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("lake"), "{}", stderr(&out));
    }
    // The tree that holds the lake's parent is fine; the lake's own parent given as --out is not.
    let out = run_within(
        &["watch", s(&tree), "--out", s(&tree.join(".."))],
        Duration::from_secs(10),
    )
    .expect("watching a directory inside the lake ran on");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(rows(&lake, "files", &[]), before, "the lake was touched");
}

/// Starts a watch of `dir` (source "tree"), lets `change` act on it while watched, and checks
/// that the watch followed: the lake ends like a replay of the final tree, and the log says the
/// directory was watched again.
fn watch_through(change: impl FnOnce(&Path)) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tree");
    write(&dir, "before.rs", "// TODO before\n");
    write(&dir, "sub/kept.py", "# FIXME\n");
    let lake = tmp.path().join("lake");
    let watching = Watching::start(&dir, &lake);
    assert!(
        eventually(Duration::from_secs(20), || current_versions(&lake).len()
            == 2),
        "the initial scan was never committed"
    );
    change(&dir);
    // The directory is back: what is written in it now must be seen.
    write(&dir, "after.rs", "// TODO after\n");
    write(&dir, "new/deep.txt", "TODO deep\n");
    let seen = eventually(Duration::from_secs(30), || {
        keys(&current_versions(&lake)) == ["\"after.rs\"", "\"new/deep.txt\""]
    });
    let summary = watching.stop();
    assert!(
        seen,
        "the watch did not follow the directory: {:?}\n{summary}",
        current_versions(&lake)
    );
    assert!(
        summary.contains("watching it again"),
        "no log line says so: {summary}"
    );
    assert_same_as_replay(&dir, "tree", &lake, tmp.path());
}

#[test]
fn a_watched_directory_removed_and_created_again_is_watched_again() {
    watch_through(|dir| {
        std::fs::remove_dir_all(dir).unwrap();
        // Long enough for the watcher to notice that it is gone.
        std::thread::sleep(Duration::from_millis(1500));
        std::fs::create_dir(dir).unwrap();
    });
}

#[test]
fn a_watched_directory_removed_and_created_again_at_once_is_watched_again() {
    // Created again at once, the new directory often gets the old one's inode number: only the
    // event that the watched directory itself went away tells them apart.
    watch_through(|dir| {
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::create_dir(dir).unwrap();
    });
}

#[test]
fn a_watched_directory_renamed_away_and_replaced_is_watched_again() {
    watch_through(|dir| {
        std::fs::rename(dir, dir.with_file_name("tree.old")).unwrap();
        std::fs::create_dir(dir).unwrap();
        // Writes into the old directory, still carrying a watch, must not count as the new one.
        write(
            &dir.with_file_name("tree.old"),
            "stale.rs",
            "// TODO stale\n",
        );
    });
}

#[test]
fn a_watched_directory_replaced_by_a_file_then_by_a_directory_is_watched_again() {
    watch_through(|dir| {
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::write(dir, "not a directory\n").unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        std::fs::remove_file(dir).unwrap();
        std::fs::create_dir(dir).unwrap();
    });
}

#[test]
fn an_rm_rf_of_20000_watched_files_completes_quickly_and_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tree");
    for d in 0..20 {
        let sub = dir.join(format!("big/d{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..1000 {
            std::fs::write(sub.join(format!("f{f}")), b"x").unwrap();
        }
    }
    // Neighbours whose names share the removed directory's prefix must stay.
    write(&dir, "big.c", "int x;\n");
    write(&dir, "bigc/x.rs", "// TODO\n");
    write(&dir, "big0", "plain\n");
    let lake = tmp.path().join("lake");
    let watching = Watching::start(&dir, &lake);
    assert!(
        eventually(Duration::from_secs(120), || current_versions(&lake).len()
            == 20_003),
        "the initial scan was never committed"
    );
    let removed = Instant::now();
    std::fs::remove_dir_all(dir.join("big")).unwrap();
    let done = eventually(Duration::from_secs(15), || {
        current_versions(&lake).len() == 3
    });
    let took = removed.elapsed();
    let summary = watching.stop();
    assert!(
        done,
        "the deletes of 20,000 files were not committed within 15 s: {} current\n{summary}",
        current_versions(&lake).len()
    );
    println!("rm -rf of 20,000 files committed in {took:?}");
    assert_eq!(
        keys(&current_versions(&lake)),
        ["\"big.c\"", "\"big0\"", "\"bigc/x.rs\""],
        "{summary}"
    );
    assert!(
        history_problems(&lake).is_empty(),
        "{:?}",
        history_problems(&lake)
    );
}

#[test]
fn watch_applies_nested_ignore_files_like_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tree");
    // A git work tree: `.gitignore` files count, at every level.
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    write(&dir, ".gitignore", "*.log\nbuild/\n");
    write(&dir, "sub/.gitignore", "!keep.log\n*.tmp\n");
    write(&dir, "sub/deeper/.ignore", "*.md\n");
    write(&dir, "a.rs", "// TODO a\n");
    let lake = tmp.path().join("lake");
    let watching = Watching::start(&dir, &lake);
    let pause = || std::thread::sleep(Duration::from_millis(60));
    // Files each rule decides, written while watched.
    write(&dir, "x.log", "TODO ignored by the root\n");
    write(&dir, "sub/keep.log", "TODO whitelisted by sub\n");
    write(&dir, "sub/drop.log", "TODO ignored by the root\n");
    write(&dir, "sub/t.tmp", "TODO ignored by sub\n");
    write(&dir, "top.tmp", "TODO sub's rule does not reach here\n");
    write(&dir, "sub/deeper/n.md", "TODO ignored by .ignore\n");
    write(&dir, "sub/deeper/n.rs", "// TODO kept\n");
    write(&dir, "sub/deeper/keep.log", "TODO whitelisted by sub\n");
    pause();
    // A directory ignored by a parent's rule, whose own ignore file would whitelist: still out.
    write(&dir, "build/.gitignore", "!*\n");
    write(&dir, "build/out.o", "TODO ignored by the root\n");
    write(
        &dir,
        "sub/build/x.rs",
        "// TODO ignored by the root's build/\n",
    );
    // A directory moved in with its own ignore file.
    let outside = tmp.path().join("incoming");
    write(&outside, ".gitignore", "*.bak\n");
    write(&outside, "a.bak", "TODO ignored by its own file\n");
    write(&outside, "a.rs", "// TODO kept\n");
    std::fs::rename(&outside, dir.join("moved")).unwrap();
    // A nested repository: the root's `.gitignore` stops at it.
    std::fs::create_dir_all(dir.join("vendor/.git")).unwrap();
    write(&dir, "vendor/v.log", "TODO a nested repository\n");
    pause();
    // Rules changed while watched: what they now ignore goes, what they no longer ignore comes.
    write(&dir, "sub/.gitignore", "*.rs\n");
    std::fs::remove_file(dir.join("sub/deeper/.ignore")).unwrap();
    write(&dir, "other/.ignore", "secret/\n");
    write(
        &dir,
        "other/secret/s.txt",
        "TODO ignored by other/.ignore\n",
    );
    write(&dir, "other/open.txt", "TODO kept\n");
    pause();
    write(&dir, "late.log", "TODO ignored\n");
    write(&dir, "sub/late.rs", "// TODO ignored by the new rule\n");
    std::thread::sleep(Duration::from_millis(800));
    let summary = watching.stop();
    println!("{summary}");
    assert_same_as_replay(&dir, "tree", &lake, tmp.path());
    // Not vacuous: both kinds of decision are in the final tree.
    let current = current_versions(&lake);
    for kept in [
        "\"sub/t.tmp\"",
        "\"sub/deeper/n.md\"",
        "\"moved/a.rs\"",
        "\"other/open.txt\"",
    ] {
        assert!(
            current.contains_key(kept),
            "{kept} missing: {:?}",
            keys(&current)
        );
    }
    for ignored in [
        "\"x.log\"",
        "\"sub/keep.log\"",
        "\"build/out.o\"",
        "\"moved/a.bak\"",
        "\"sub/late.rs\"",
        "\"other/secret/s.txt\"",
    ] {
        assert!(!current.contains_key(ignored), "{ignored} ingested");
    }
}
