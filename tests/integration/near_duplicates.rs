//! Near-duplicates checked against an independent Python reference (`tests/minhash_reference.py`,
//! written from the README's description of `exoflow-oph-1` and the clustering): signatures bit
//! for bit over edge-case contents and several parameter sets, clusters and their statistics after
//! every round of random changes on a continued lake, the overflow count of capped buckets, and
//! recall and precision on planted pairs of known Jaccard similarity.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::util::*;

/// SplitMix64: reproducible contents without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `n` random bytes without NUL, so that the content is not binary.
    fn text(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| 1 + (self.next() % 255) as u8).collect()
    }
}

/// Writes a pipeline with `near_duplicates` set to `params` and `extra` top-level fields.
fn pipeline(dir: &Path, name: &str, params: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(
        &path,
        format!(
            r#"{{ "name": "{name}", {extra} "near_duplicates": {params},
                 "rules": [{{ "id": "todo", "pattern": "TODO" }}] }}"#
        ),
    )
    .unwrap();
    path
}

/// Runs the reference's check of `lake` (and of `tree`'s files when given); panics with its
/// report on a difference.
fn reference_check(lake: &Path, pipeline: &Path, tree: Option<&Path>, extra: &[&str]) -> String {
    let mut args = vec!["check", s(lake), "--pipeline", s(pipeline)];
    if let Some(tree) = tree {
        args.extend(["--tree", s(tree)]);
    }
    args.extend_from_slice(extra);
    let (ok, report) = python("tests/minhash_reference.py", &args);
    assert!(ok, "the lake differs from the reference:\n{report}");
    println!("{report}");
    report
}

/// Edge cases for every parameter set: sizes around the shingle widths and `min_size`s, one
/// large file, repeated bytes, every byte value, NUL at and after the binary probe, a name that
/// is not UTF-8, an exact and a near copy, and entries that are skipped.
fn edge_corpus(root: &Path) {
    let mut rng = Rng(0x5EED);
    for n in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 63, 64, 65, 200] {
        write(root, &format!("size/{n:03}.txt"), rng.text(n));
    }
    let words: Vec<u8> = (0..6000)
        .map(|_| b"abcdefgh ijklmnop\n"[(rng.next() % 18) as usize])
        .collect();
    write(root, "words.txt", &words);
    write(root, "copy/words.txt", &words);
    let mut near = words.clone();
    for i in (0..near.len()).step_by(500) {
        near[i] = b'Z';
    }
    write(root, "near/words.txt", &near);
    write(root, "large.dat", rng.text(1 << 20));
    write(root, "repeated.txt", vec![b'a'; 5000]);
    write(root, "pattern.txt", b"abc".repeat(2000));
    let mut all = rng.text(9000);
    all.extend(0..=255u8);
    write(root, "all_bytes_late_nul.txt", &all);
    write(
        root,
        "all_bytes.bin",
        (0..=255u8).cycle().take(1024).collect::<Vec<u8>>(),
    );
    let mut early = rng.text(3000);
    early[10] = 0;
    write(root, "nul_early.bin", &early);
    for at in [8191, 8192] {
        let mut c = rng.text(9000);
        c[at] = 0;
        write(root, &format!("nul_at_{at}.txt"), &c);
    }
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    std::fs::write(root.join(odd), rng.text(500)).unwrap();
    std::os::unix::fs::symlink("words.txt", root.join("link.txt")).unwrap();
    mkfifo(&root.join("fifo"));
}

#[test]
fn near_signatures_equal_the_reference_for_every_parameter_set() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    edge_corpus(&corpus);
    let sets = [
        (
            "w1_k7",
            r#"{ "shingle": 1, "signature": 7, "bands": 7, "rows": 1, "min_size": 1 }"#,
            "",
        ),
        (
            "w5_k256",
            r#"{ "shingle": 5, "signature": 256, "min_size": 1 }"#,
            "",
        ),
        (
            "w8_k1024_binary",
            r#"{ "shingle": 8, "signature": 1024, "bands": 64, "rows": 16, "min_size": 1 }"#,
            r#""scan_binary": true,"#,
        ),
        (
            "w8_k1_small_limit",
            r#"{ "shingle": 8, "signature": 1, "bands": 1, "rows": 1 }"#,
            r#""max_file_bytes": 100000,"#,
        ),
        (
            "w3_k100_binary",
            r#"{ "shingle": 3, "signature": 100, "bands": 20, "rows": 5, "threshold": 0.5,
                 "min_size": 10 }"#,
            r#""scan_binary": true,"#,
        ),
    ];
    for (name, params, extra) in sets {
        let p = pipeline(tmp.path(), name, params, extra);
        let lake = tmp.path().join(format!("lake-{name}"));
        replay_ok(&corpus, &lake, &p, &[]);
        reference_check(&lake, &p, Some(&corpus), &[]);
    }
}

#[test]
fn near_clusters_follow_random_rounds_of_changes_on_a_continued_lake() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, report) = python(
        "tests/near_dup_rounds.py",
        &[
            env!("CARGO_BIN_EXE_exoflow"),
            s(tmp.path()),
            "--seed",
            "7",
            "--rounds",
            "12",
        ],
    );
    assert!(ok, "{report}");
    println!("{report}");
}

#[test]
fn near_a_second_run_on_an_unchanged_tree_changes_no_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, lake) = (tmp.path().join("tree"), tmp.path().join("lake"));
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/dedupe.json");
    let mut rng = Rng(3);
    let base = rng.text(4000);
    for i in 0..6 {
        let mut c = base.clone();
        c[i * 100] = b'!';
        write(&tree, &format!("copies/{i}.txt"), &c);
    }
    write(&tree, "other.txt", rng.text(4000));
    replay_ok(&tree, &lake, &p, &["--checkpoint-rows", "1"]);
    let tables = ["files", "signatures", "near_duplicates", "stats_changes"];
    let before: Vec<_> = tables.iter().map(|t| rows(&lake, t, &[])).collect();
    let stats = stats_current(&lake);
    assert!(!before[2].is_empty(), "the copies make a cluster");
    let out = replay_ok(&tree, &lake, &p, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0 upserts, 0 deletes, 7 unchanged"), "{text}");
    let after: Vec<_> = tables.iter().map(|t| rows(&lake, t, &[])).collect();
    assert_eq!(
        after, before,
        "a second replay of an unchanged tree wrote rows"
    );
    assert_eq!(stats_current(&lake), stats);
    reference_check(&lake, &p, Some(&tree), &[]);
    // The restored signatures of the unchanged files still cluster a new copy.
    let mut c = base.clone();
    c[3999] = b'?';
    write(&tree, "copies/new.txt", &c);
    std::fs::remove_file(tree.join("copies/0.txt")).unwrap();
    replay_ok(&tree, &lake, &p, &[]);
    reference_check(&lake, &p, Some(&tree), &[]);
}

#[test]
fn near_overflowing_buckets_are_counted_like_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, lake) = (tmp.path().join("tree"), tmp.path().join("lake"));
    let mut rng = Rng(11);
    let prefix = rng.text(3000);
    for i in 0..12 {
        let mut c = prefix.clone();
        c.extend(rng.text(20 + i));
        write(&tree, &format!("boiler/{i:02}.txt"), &c);
    }
    let lone = rng.text(2000);
    write(&tree, "pair/a.txt", &lone);
    write(&tree, "pair/b.txt", [&lone[..], b"tail"].concat());
    let p = pipeline(
        tmp.path(),
        "capped",
        r#"{ "shingle": 5, "signature": 64, "bands": 16, "rows": 4, "max_bucket": 3 }"#,
        "",
    );
    let out = replay_ok(&tree, &lake, &p, &[]);
    let report = reference_check(&lake, &p, Some(&tree), &["--min-overflow", "1"]);
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(report.contains("overflowing"), "{report}");
    // Deleting most of the boilerplate files brings buckets under the cap: they are expanded.
    for i in 3..12 {
        std::fs::remove_file(tree.join(format!("boiler/{i:02}.txt"))).unwrap();
    }
    replay_ok(&tree, &lake, &p, &[]);
    reference_check(&lake, &p, Some(&tree), &[]);
}

#[test]
fn near_recall_and_precision_on_planted_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, report) = python(
        "benches/near_dup_quality.py",
        &[
            "--pairs",
            "20",
            "--size",
            "3000",
            "--exoflow",
            env!("CARGO_BIN_EXE_exoflow"),
            "--workdir",
            s(tmp.path()),
        ],
    );
    assert!(ok, "{report}");
    println!("{report}");
}

#[test]
fn every_pipeline_file_replays_the_sample() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let mut found = 0;
    for entry in std::fs::read_dir(root.join("pipelines")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        found += 1;
        let lake = tmp.path().join(path.file_stem().unwrap());
        let out = replay_ok(&root.join("examples/sample"), &lake, &path, &[]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("24 upserts"), "{}: {text}", path.display());
        if path.file_stem().unwrap() == "dedupe" {
            reference_check(&lake, &path, Some(&root.join("examples/sample")), &[]);
        }
    }
    assert!(found >= 2, "pipelines/ has {found} pipelines");
}

#[test]
fn near_clusters_of_successive_snapshots_in_one_run_match_each_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(
        tmp.path(),
        "chains",
        r#"{ "shingle": 4, "signature": 256, "bands": 64, "rows": 4, "threshold": 0.5,
             "min_size": 32 }"#,
        "",
    );
    let mut rng = Rng(5);
    let text = rng.text(4000);
    let window = |at: usize| text[at..at + 1200].to_vec();
    let snaps: Vec<PathBuf> = (1..=4).map(|i| tmp.path().join(format!("s{i}"))).collect();
    // A ~ B ~ C; then B deleted (A and C apart); then B back with D, a copy of C; then A moved
    // along the chain to B's place and C deleted.
    write(&snaps[0], "a.txt", window(0));
    write(&snaps[0], "b.txt", window(270));
    write(&snaps[0], "c.txt", window(540));
    write(&snaps[1], "a.txt", window(0));
    write(&snaps[1], "c.txt", window(540));
    write(&snaps[2], "a.txt", window(0));
    write(&snaps[2], "b.txt", window(270));
    write(&snaps[2], "c.txt", window(540));
    write(&snaps[2], "d.txt", window(540));
    write(&snaps[3], "a.txt", window(300));
    write(&snaps[3], "b.txt", window(270));
    write(&snaps[3], "d.txt", window(540));
    let lake = tmp.path().join("lake");
    let mut args = vec!["replay"];
    args.extend(snaps.iter().map(|p| s(p)));
    args.extend(["--out", s(&lake), "--pipeline", s(&p), "--source", "chains"]);
    let out = run_ok(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("epochs 1..=4"), "{text}");
    for (i, snap) in snaps.iter().enumerate() {
        let epoch = (i + 1).to_string();
        let report = reference_check(
            &lake,
            &p,
            Some(snap),
            &["--source", "chains", "--epoch", &epoch],
        );
        let expected = [
            "1 of 3 files",
            "0 of 0 files",
            "1 of 4 files",
            "1 of 3 files",
        ][i];
        assert!(report.contains(expected), "epoch {epoch}: {report}");
    }
    reference_check(&lake, &p, Some(&snaps[3]), &["--source", "chains"]);
}

#[test]
fn near_clusters_of_a_watch_match_the_files_it_ends_with() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, lake) = (tmp.path().join("watched"), tmp.path().join("lake"));
    std::fs::create_dir_all(&dir).unwrap();
    let p = pipeline(
        tmp.path(),
        "chains",
        r#"{ "shingle": 4, "signature": 256, "bands": 64, "rows": 4, "threshold": 0.5,
             "min_size": 32 }"#,
        "",
    );
    let mut rng = Rng(9);
    let text = rng.text(4000);
    let window = |at: usize| text[at..at + 1200].to_vec();
    let watch = Watching::start_with(&dir, &lake, &["--pipeline", s(&p)]);
    write(&dir, "a.txt", window(0));
    write(&dir, "b.txt", window(270));
    write(&dir, "c.txt", window(540));
    write(&dir, "e.txt", window(2000));
    write(&dir, "f.txt", window(2000));
    std::thread::sleep(std::time::Duration::from_millis(800));
    std::fs::remove_file(dir.join("b.txt")).unwrap();
    write(&dir, "f.txt", window(2100));
    std::thread::sleep(std::time::Duration::from_millis(800));
    watch.stop();
    let report = reference_check(&lake, &p, Some(&dir), &[]);
    assert!(report.contains("clusters: 1 of 2 files"), "{report}");
}

#[test]
fn near_a_member_whose_signature_changes_in_place_writes_no_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, lake) = (tmp.path().join("tree"), tmp.path().join("lake"));
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/dedupe.json");
    let base = Rng(21).text(3000);
    write(&tree, "x.txt", &base);
    write(&tree, "y.txt", &base);
    replay_ok(&tree, &lake, &p, &[]);
    let before = rows(&lake, "near_duplicates", &[]);
    assert_eq!(before.len(), 2, "{before:#?}");
    // Both copies change the same way: new signatures, the same cluster, representative and
    // similarity 1.0, so the table has nothing to say.
    let changed = [&base[..1500], &[b'#'; 100], &base[1600..]].concat();
    write(&tree, "x.txt", &changed);
    write(&tree, "y.txt", &changed);
    replay_ok(&tree, &lake, &p, &[]);
    assert_eq!(rows(&lake, "near_duplicates", &[]), before);
    reference_check(&lake, &p, Some(&tree), &[]);
}
