//! Near-duplicate clusters under a real watcher: files join, leave and move between clusters as they
//! are written, modified and deleted, a chain splits when its middle goes, and the lake ends equal to
//! a replay of what is left.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::util::*;

/// Deterministic text of random six-letter words.
struct Text {
    words: Vec<u64>,
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

impl Text {
    fn new(words: usize, seed: u64) -> Text {
        let mut state = seed;
        Text {
            words: (0..words).map(|_| xorshift(&mut state)).collect(),
        }
    }

    /// Each word replaced by a new one with probability `per_mille` / 1000.
    fn changed(&self, per_mille: u64, seed: u64) -> Text {
        let mut state = seed;
        let words = self
            .words
            .iter()
            .map(|&w| {
                if xorshift(&mut state) % 1000 < per_mille {
                    xorshift(&mut state)
                } else {
                    w
                }
            })
            .collect();
        Text { words }
    }

    fn bytes(&self) -> String {
        self.words
            .iter()
            .map(|w| {
                (0..6)
                    .map(|i| char::from(b'a' + (w >> (5 * i) & 31) as u8 % 26))
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn clusters(list: &[&[&str]]) -> BTreeSet<Vec<String>> {
    list.iter()
        .map(|c| c.iter().map(|p| format!("{p:?}")).collect())
        .collect()
}

#[test]
fn watched_files_join_leave_and_move_between_clusters_and_a_chain_splits() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("tree"), tmp.path().join("lake"));
    std::fs::create_dir(&dir).unwrap();
    // Long signatures: estimates within about 0.013 of the true similarities, so that the chain
    // below (ends at about 0.74, links at about 0.86) is what its contents say.
    let pipeline = tmp.path().join("pipeline.json");
    write(
        tmp.path(),
        "pipeline.json",
        r#"{"near_duplicates": {"signature": 1024, "bands": 128, "rows": 8}}"#,
    );
    let base = Text::new(3000, 7);
    write(&dir, "a.txt", base.bytes());
    write(&dir, "other.txt", Text::new(3000, 99).bytes());
    let watch = Watching::start_with(&dir, &lake, &["--pipeline", s(&pipeline)]);

    // The representative is the member with the least path id, so the expected sets below list
    // their members in any order: compare as sets of sets of sorted paths.
    let sorted = |c: BTreeSet<Vec<String>>| -> BTreeSet<BTreeSet<String>> {
        c.into_iter().map(|v| v.into_iter().collect()).collect()
    };
    let wait = |expected: &[&[&str]]| {
        let expected = sorted(clusters(expected));
        let started = Instant::now();
        loop {
            let found = sorted(near_duplicate_clusters(&lake));
            if found == expected {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "clusters {found:?}, expected {expected:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    wait(&[]);
    write(&dir, "b.txt", base.changed(10, 1).bytes());
    wait(&[&["a.txt", "b.txt"]]);
    // b moves out: its new content is like nothing else.
    write(&dir, "b.txt", Text::new(3000, 5).bytes());
    wait(&[]);
    // A near copy and an exact copy of it join a.
    let near = base.changed(10, 2);
    write(&dir, "c.txt", near.bytes());
    write(&dir, "d.txt", near.bytes());
    wait(&[&["a.txt", "c.txt", "d.txt"]]);
    // b moves in: now a copy of other.txt's near twin.
    write(&dir, "b.txt", Text::new(3000, 99).changed(10, 3).bytes());
    wait(&[&["a.txt", "c.txt", "d.txt"], &["b.txt", "other.txt"]]);
    // A chain x ~ y ~ z whose ends are not similar: y's removal splits it.
    let x = Text::new(3000, 11);
    let y = x.changed(60, 12);
    let z = y.changed(60, 13);
    write(&dir, "x.txt", x.bytes());
    write(&dir, "y.txt", y.bytes());
    write(&dir, "z.txt", z.bytes());
    wait(&[
        &["a.txt", "c.txt", "d.txt"],
        &["b.txt", "other.txt"],
        &["x.txt", "y.txt", "z.txt"],
    ]);
    std::fs::remove_file(dir.join("y.txt")).unwrap();
    std::fs::remove_file(dir.join("a.txt")).unwrap();
    wait(&[&["c.txt", "d.txt"], &["b.txt", "other.txt"]]);
    let summary = watch.stop();
    assert!(
        summary.contains("near-duplicates: 2 clusters of 4 files"),
        "{summary}"
    );

    // The same as a replay of what is left.
    let replayed = tmp.path().join("replay-lake");
    replay_ok(&dir, &replayed, &pipeline, &["--source", "tree"]);
    assert_eq!(
        sorted(near_duplicate_clusters(&lake)),
        sorted(near_duplicate_clusters(&replayed))
    );
    assert_eq!(stats_current(&lake), stats_current(&replayed));
    let stats = run_ok(&["stats", s(&lake)]);
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(
        text.contains("near-duplicates: 2 clusters of 4 files"),
        "{text}"
    );
    let rows = run_ok(&["stats", s(&lake), "--dimension", "near_duplicates"]);
    let text = String::from_utf8_lossy(&rows.stdout);
    assert!(
        text.contains("clusters") && text.contains("files"),
        "{text}"
    );
    // Restarted on the same tree, the watch restores the signatures and writes nothing new.
    let before = table_rows(&lake);
    let watch = Watching::start_with(&dir, &lake, &["--pipeline", s(&pipeline)]);
    std::thread::sleep(Duration::from_millis(1500));
    watch.stop();
    let after = table_rows(&lake);
    for ((table, a), (_, b)) in before.iter().zip(&after) {
        assert_eq!(a, b, "{table} changed on a restart over an unchanged tree");
    }
}
