//! Damaged archives and unlistable directories as later snapshots: a snapshot that cannot be read
//! whole is refused (exit 1, naming it) and changes nothing committed; a directory a replay cannot
//! list deletes nothing under it.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::util::*;

/// Members of the first snapshot; the second changes `b.txt`, drops `c.txt` and adds `d.txt`, so
/// a damaged second snapshot taken as complete would leave rows of its own and deletes.
const FIRST: &[(&str, &[u8])] = &[
    ("a.txt", b"alpha TODO\n"),
    ("b.txt", b"bravo\n"),
    ("c.txt", b"charlie FIXME\n"),
];

fn second() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("a.txt", b"alpha TODO\n".to_vec()),
        ("b.txt", noise(30_000)),
        ("d.txt", b"delta\n".to_vec()),
    ]
}

/// Bytes that do not compress, so that a cut in a compressed stream falls inside a member.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A tar of regular files with its end-of-archive marker, as tar-rs's builder writes it.
fn tar_of<C: AsRef<[u8]>>(members: &[(&str, C)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in members {
        let content = content.as_ref();
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, content).unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// zstd with the frame checksum that `zstd` writes by default.
fn zst(data: &[u8]) -> Vec<u8> {
    let mut e = zstd::Encoder::new(Vec::new(), 3).unwrap();
    e.include_checksum(true).unwrap();
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// What `gzip -t` / `zstd -t` check: the whole compressed stream decodes, checksums included.
fn decodes_whole(bytes: &[u8]) -> bool {
    let mut out = Vec::new();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .is_ok()
    } else {
        zstd::stream::read::Decoder::new(bytes)
            .and_then(|mut d| d.read_to_end(&mut out))
            .is_ok()
    }
}

/// Everything a reader of the lake can see: every row of every table, and the newest commit.
fn committed(lake: &Path) -> (BTreeMapRows, Option<String>) {
    let mut records: Vec<String> = std::fs::read_dir(lake.join("_exoflow/commits"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    records.sort();
    (lake_rows(lake), records.pop())
}

type BTreeMapRows = std::collections::BTreeMap<&'static str, Vec<String>>;

fn replay(inputs: &[&Path], lake: &Path) -> Output {
    let mut args = vec!["replay"];
    args.extend(inputs.iter().map(|p| s(p)));
    args.extend(["--source", "snap", "--out", s(lake), "--workers", "2"]);
    run(&args)
}

/// A lake holding the first snapshot, committed, and what it holds.
fn first_snapshot(tmp: &Path) -> (PathBuf, (BTreeMapRows, Option<String>)) {
    let good = tmp.join("snap-1.tar");
    std::fs::write(&good, tar_of(FIRST)).unwrap();
    let lake = tmp.join("lake");
    let out = replay(&[&good], &lake);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = committed(&lake);
    assert_eq!(state.0["files"].len(), 3, "{:?}", state.0);
    (lake, state)
}

/// Replays `bad` after the first snapshot, in a run of its own and in one run after it: each
/// must exit 1 naming `bad` (and `want`), with the lake exactly as the first snapshot left it.
fn assert_refused(tmp: &Path, bad: &Path, want: &str) {
    let name = bad.file_name().unwrap().to_string_lossy().into_owned();
    let (lake, before) = first_snapshot(tmp);
    let out = replay(&[bad], &lake);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
    assert!(
        stderr.contains(&name) && stderr.contains(want),
        "{name}: {stderr}"
    );
    assert_eq!(
        committed(&lake),
        before,
        "{name}: the lake changed\n{stderr}"
    );

    // The same two snapshots in one run.
    let one_run = tmp.join("lake-one-run");
    let out = replay(&[&tmp.join("snap-1.tar"), bad], &one_run);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
    assert!(stderr.contains(&name), "{name}: {stderr}");
    assert_eq!(
        committed(&one_run).0,
        before.0,
        "{name}: rows of the damaged snapshot were committed\n{stderr}"
    );
    std::fs::remove_dir_all(&lake).unwrap();
    std::fs::remove_dir_all(&one_run).unwrap();
}

#[test]
fn a_gzip_archive_with_a_bad_crc_commits_nothing_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = gzip(&tar_of(&second()));
    let n = bytes.len();
    bytes[n - 8] ^= 0x01; // the CRC32 of the gzip trailer
    assert!(!decodes_whole(&bytes), "the fixture must fail `gzip -t`");
    let bad = tmp.path().join("snap-2.tar.gz");
    std::fs::write(&bad, &bytes).unwrap();
    assert_refused(tmp.path(), &bad, "damaged");
}

#[test]
fn a_zstd_archive_with_a_bad_checksum_commits_nothing_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = zst(&tar_of(&second()));
    let n = bytes.len();
    bytes[n - 1] ^= 0x01; // the frame's content checksum
    assert!(!decodes_whole(&bytes), "the fixture must fail `zstd -t`");
    let bad = tmp.path().join("snap-2.tar.zst");
    std::fs::write(&bad, &bytes).unwrap();
    assert_refused(tmp.path(), &bad, "damaged");
}

#[test]
fn a_compressed_archive_cut_in_its_trailer_or_followed_by_garbage_commits_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = tar_of(&second());
    let (gz, zs) = (gzip(&tar), zst(&tar));
    for (name, bytes) in [
        ("cut-trailer.tar.gz", gz[..gz.len() - 4].to_vec()),
        ("garbage.tar.gz", [&gz[..], b"trailing garbage"].concat()),
        ("cut-trailer.tar.zst", zs[..zs.len() - 2].to_vec()),
    ] {
        assert!(!decodes_whole(&bytes), "{name}: the fixture is not damaged");
        let bad = tmp.path().join(name);
        std::fs::write(&bad, &bytes).unwrap();
        assert_refused(tmp.path(), &bad, "damaged");
    }
}

#[test]
fn a_tar_cut_inside_a_member_commits_nothing_of_it_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = tar_of(&second());
    // b.txt's data starts after a.txt's header and data block and its own header.
    let bad = tmp.path().join("snap-2.tar");
    std::fs::write(&bad, &tar[..3 * 512 + 10_000]).unwrap();
    assert_refused(tmp.path(), &bad, "cut short");
    // The same cut in a compressed archive.
    let bad = tmp.path().join("snap-2.tar.gz");
    std::fs::write(&bad, gzip(&tar[..3 * 512 + 10_000])).unwrap();
    assert_refused(tmp.path(), &bad, "cut short");
}

#[test]
fn a_tar_cut_between_members_deletes_nothing_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    // The first snapshot again with d.txt appended, cut after a.txt and b.txt: taken as the end
    // of the archive, this would delete c.txt.
    let mut members: Vec<(&str, &[u8])> = FIRST.to_vec();
    members.push(("d.txt", b"delta\n"));
    let tar = tar_of(&members);
    let bad = tmp.path().join("snap-2.tar");
    std::fs::write(&bad, &tar[..4 * 512]).unwrap();
    assert_refused(tmp.path(), &bad, "end-of-archive marker");
    // Every member there, the marker missing.
    std::fs::write(&bad, &tar[..tar.len() - 1024]).unwrap();
    assert_refused(tmp.path(), &bad, "end-of-archive marker");
}

#[test]
fn a_too_large_member_cut_short_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = tmp.path().join("small.json");
    std::fs::write(
        &pipeline,
        r#"{"name": "small", "max_file_bytes": 1000, "rules": [{"id": "todo", "pattern": "TODO"}]}"#,
    )
    .unwrap();
    let tar = tar_of(&second());
    let bad = tmp.path().join("snap.tar");
    std::fs::write(&bad, &tar[..3 * 512 + 10_000]).unwrap();
    let lake = tmp.path().join("lake");
    let out = run(&[
        "replay",
        s(&bad),
        "--out",
        s(&lake),
        "--pipeline",
        s(&pipeline),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("snap.tar") && stderr.contains("b.txt"),
        "{stderr}"
    );
}

#[test]
fn a_zero_byte_tar_as_a_later_snapshot_is_refused_and_deletes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("snap-2.tar");
    std::fs::write(&bad, b"").unwrap();
    assert_refused(tmp.path(), &bad, "does not look like a tar archive");
}

#[test]
fn a_file_that_is_not_a_tar_archive_as_a_later_snapshot_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("random.tar", noise(5000)),
        (
            "text.tar",
            b"this is a text file, not an archive\n".repeat(30),
        ),
        ("tiny.tar", b"x".to_vec()),
        ("text.tar.gz", gzip(&b"plain text, gzipped\n".repeat(50))),
        ("nothing.tar.gz", gzip(b"")),
        ("nothing.tar.zst", zst(b"")),
    ] {
        let bad = tmp.path().join(name);
        std::fs::write(&bad, &bytes).unwrap();
        assert_refused(tmp.path(), &bad, "does not look like a tar archive");
    }
}

#[test]
fn a_valid_empty_archive_is_an_empty_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let (lake, _) = first_snapshot(tmp.path());
    let empty = tmp.path().join("empty.tar");
    let out = std::process::Command::new("tar")
        .args(["-cf", s(&empty), "--files-from", "/dev/null"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = replay(&[&empty], &lake);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = current(&lake);
    assert!(left.is_empty(), "{left:?}");
    // A plain tar named .tar.gz reads by its content.
    let misnamed = tmp.path().join("plain.tar.gz");
    std::fs::write(&misnamed, tar_of(FIRST)).unwrap();
    let out = replay(&[&misnamed], &lake);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(current(&lake).len(), 3);
}

/// The current version of each path, keyed by the path as written.
fn current(lake: &Path) -> std::collections::BTreeMap<String, String> {
    current_versions(lake)
        .into_iter()
        .map(|(path, version)| (path.trim_matches('"').to_string(), version))
        .collect()
}

/// Runs exoflow as a user that a chmod binds: as root, the nobody user (root lists any directory).
fn run_unprivileged(args: &[&str]) -> Output {
    let mut command = exoflow();
    command.args(args).env("RUST_LOG", "warn");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // std drops the supplementary groups too when it sets the uid of a root child.
        command.uid(65534).gid(65534);
    }
    command.output().expect("exoflow runs")
}

/// A temp dir that the unprivileged child can write its lake into.
fn shared_tempdir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    tmp
}

#[test]
fn an_unlistable_directory_in_a_replayed_tree_deletes_nothing_under_it() {
    let tmp = shared_tempdir();
    let tree = tmp.path().join("tree");
    write(&tree, "keep.txt", "keep\n");
    write(&tree, "sub/a.txt", "a TODO\n");
    write(&tree, "sub/deep/b.txt", "b\n");
    write(&tree, "other/c.txt", "c\n");
    let lake = tmp.path().join("lake");
    let replay = || {
        let out = run_unprivileged(&["replay", s(&tree), "--out", s(&lake), "--workers", "3"]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    };
    replay();
    let first = current(&lake);
    assert_eq!(first.len(), 4, "{first:?}");

    // sub/ cannot be listed; elsewhere, a change and a delete that must still be taken.
    std::fs::set_permissions(tree.join("sub"), std::fs::Permissions::from_mode(0o000)).unwrap();
    write(&tree, "keep.txt", "keep, changed\n");
    std::fs::remove_file(tree.join("other/c.txt")).unwrap();
    let (stdout, stderr) = replay();
    std::fs::set_permissions(tree.join("sub"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        stderr.contains("cannot list directory") && stderr.contains("sub"),
        "{stderr}"
    );
    assert!(stdout.contains("unreadable 1"), "{stdout}");
    let second = current(&lake);
    let paths: Vec<&str> = second.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        ["keep.txt", "sub/", "sub/a.txt", "sub/deep/b.txt"],
        "{second:?}"
    );
    // What was under sub/ is still its committed version; the directory is reported unreadable.
    assert_eq!(second["sub/a.txt"], first["sub/a.txt"]);
    assert_eq!(second["sub/deep/b.txt"], first["sub/deep/b.txt"]);
    assert_ne!(second["keep.txt"], first["keep.txt"]);
    let skips = files_column(&lake, "skip_reason");
    assert_eq!(skips["sub/"], "\"unreadable\"", "{skips:?}");

    // Listable again: the directory's row goes, its files are unchanged.
    replay();
    let third = current(&lake);
    let paths: Vec<&str> = third.keys().map(String::as_str).collect();
    assert_eq!(paths, ["keep.txt", "sub/a.txt", "sub/deep/b.txt"]);
    assert_eq!(third["sub/a.txt"], first["sub/a.txt"]);
}

#[test]
fn an_unlistable_replay_root_is_refused_and_deletes_nothing() {
    let tmp = shared_tempdir();
    let tree = tmp.path().join("tree");
    write(&tree, "a.txt", "a\n");
    write(&tree, "b/c.txt", "c\n");
    let lake = tmp.path().join("lake");
    let args = ["replay", s(&tree), "--out", s(&lake)];
    let out = run_unprivileged(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = committed(&lake);
    std::fs::set_permissions(&tree, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = run_unprivileged(&args);
    std::fs::set_permissions(&tree, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot list") && stderr.contains(s(&tree)),
        "{stderr}"
    );
    assert_eq!(committed(&lake).0, before.0, "{stderr}");
}

#[test]
fn a_strip_components_that_leaves_nothing_of_a_later_snapshot_deletes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (lake, before) = first_snapshot(tmp.path());
    let good = tmp.path().join("snap-1.tar");
    let out = run(&[
        "replay",
        s(&good),
        "--source",
        "snap",
        "--out",
        s(&lake),
        "--strip-components",
        "9",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("snap-1.tar") && stderr.contains("--strip-components 9"),
        "{stderr}"
    );
    assert_eq!(committed(&lake), before, "the lake changed\n{stderr}");
}

#[test]
fn a_directory_that_cannot_even_be_stat_ed_deletes_nothing_under_it() {
    let tmp = shared_tempdir();
    let tree = tmp.path().join("tree");
    write(&tree, "src/lib/a.txt", "a TODO\n");
    write(&tree, "src/lib/deep/b.txt", "b\n");
    write(&tree, "top.txt", "top\n");
    let lake = tmp.path().join("lake");
    let replay = || {
        let out = run_unprivileged(&["replay", s(&tree), "--out", s(&lake)]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    replay();
    let first = current(&lake);
    // src/ can be read but not searched: its entries are listed, src/lib can neither be listed
    // nor stat'ed.
    std::fs::set_permissions(tree.join("src"), std::fs::Permissions::from_mode(0o644)).unwrap();
    replay();
    std::fs::set_permissions(tree.join("src"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let second = current(&lake);
    assert_eq!(
        second["src/lib/a.txt"], first["src/lib/a.txt"],
        "{second:?}"
    );
    assert_eq!(second["src/lib/deep/b.txt"], first["src/lib/deep/b.txt"]);
    assert!(second.contains_key("src/lib/"), "{second:?}");
}
