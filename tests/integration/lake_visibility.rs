//! Readers see committed rows only: part files enter the table directories after the commit
//! record that covers them, and a restart finishes what a crash interrupted.

use crate::util::{parts, rows, run, run_ok, s, write};

/// A commit record that cannot be written (its temporary name is taken by a directory) stops
/// the run after every part file was closed: no table may show any of their rows.
#[test]
fn parts_closed_before_a_failed_commit_are_never_visible() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, lake) = (tmp.path().join("tree"), tmp.path().join("lake"));
    for i in 0..50 {
        write(
            &tree,
            &format!("d{}/f{i}.txt", i % 3),
            format!("TODO {i}\n"),
        );
    }
    let blocked = lake.join("_exoflow/commits/.00000000000000000001.json.tmp");
    std::fs::create_dir_all(&blocked).unwrap();
    let out = run(&["replay", s(&tree), "--out", s(&lake), "--workers", "2"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("00000000000000000001.json"), "{stderr}");
    for table in ["files", "file_rules", "matches", "stats_changes"] {
        assert_eq!(
            parts(&lake, table),
            Vec::<std::path::PathBuf>::new(),
            "{table}"
        );
    }
    assert!(!lake.join("stats_current.parquet").exists());
    // The next run removes what the failed one left pending and writes everything once.
    std::fs::remove_dir(&blocked).unwrap();
    run_ok(&["replay", s(&tree), "--out", s(&lake), "--workers", "2"]);
    assert_eq!(rows(&lake, "files", &[]).len(), 50);
    let pending = std::fs::read_dir(lake.join("_exoflow/pending/files")).unwrap();
    assert_eq!(pending.count(), 0, "nothing stays pending after a commit");
}
