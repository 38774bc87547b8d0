//! `exoflow watch` against `exoflow replay` of the final tree: random sequences of file actions on a
//! real directory while it is watched, then a graceful stop; the lake's current versions and
//! `stats_current` must equal those of a replay of what is left.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// A running `exoflow watch`.
struct Watching {
    child: Child,
}

impl Watching {
    fn start(dir: &Path, lake: &Path) -> Watching {
        let child = exoflow()
            .args([
                "watch",
                s(dir),
                "--out",
                s(lake),
                "--commit-interval",
                "300ms",
            ])
            .args(["--workers", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("exoflow watch starts");
        // The initial scan runs after the watches exist, so nothing done from now on is missed;
        // a short pause only keeps the first actions out of the scan itself.
        std::thread::sleep(Duration::from_millis(300));
        Watching { child }
    }

    /// SIGTERM, then the summary it printed.
    fn stop(mut self) -> String {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let out = self.child.wait_with_output().unwrap();
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(status.success(), "watch exited with {status}: {text}");
                return text;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "watch did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Current versions in a lake: path -> (size, hash, skip_reason), from the latest row per path.
fn current_versions(lake: &Path) -> BTreeMap<String, String> {
    let mut latest: BTreeMap<String, (u64, Option<String>)> = BTreeMap::new();
    for row in rows(lake, "files", &[]) {
        let field = |name: &str| {
            row.split(' ')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .unwrap()
                .to_string()
        };
        let path = field("path");
        let epoch: u64 = field("epoch").parse().unwrap();
        let value = (field("op") == "\"upsert\"").then(|| {
            format!(
                "size={} hash={} skip={}",
                field("size"),
                field("hash"),
                field("skip_reason")
            )
        });
        if latest.get(&path).is_none_or(|(e, _)| *e < epoch) {
            latest.insert(path, (epoch, value));
        }
    }
    latest
        .into_iter()
        .filter_map(|(path, (_, value))| value.map(|v| (path, v)))
        .collect()
}

fn stats_current(lake: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    for batch in read_batches(&lake.join("stats_current.parquet")) {
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = ["dimension", "key", "rule", "metric", "value"]
                .iter()
                .map(|c| {
                    let col = batch.column_by_name(c).unwrap();
                    if arrow_array::Array::is_null(col.as_ref(), row) {
                        "null".to_string()
                    } else {
                        arrow_cast_value(col.as_ref(), row)
                    }
                })
                .collect();
            rows.push(cells.join(" "));
        }
    }
    rows.sort();
    rows
}

fn arrow_cast_value(col: &dyn arrow_array::Array, row: usize) -> String {
    if let Some(a) = col.as_any().downcast_ref::<arrow_array::StringArray>() {
        return a.value(row).to_string();
    }
    if let Some(a) = col.as_any().downcast_ref::<arrow_array::Int64Array>() {
        return a.value(row).to_string();
    }
    panic!("unexpected column type")
}

/// Replays `dir` as source `source` and checks the watch lake against it.
fn assert_same_as_replay(dir: &Path, source: &str, watch_lake: &Path, tmp: &Path) {
    let replay_lake = tmp.join("replay-lake");
    run_ok(&[
        "replay",
        s(dir),
        "--out",
        s(&replay_lake),
        "--source",
        source,
    ]);
    let watched = current_versions(watch_lake);
    let replayed = current_versions(&replay_lake);
    let differences: Vec<String> = replayed
        .iter()
        .filter(|(path, v)| watched.get(*path) != Some(*v))
        .map(|(path, v)| format!("{path}: watched {:?}, replayed {v}", watched.get(path)))
        .chain(
            watched
                .keys()
                .filter(|path| !replayed.contains_key(*path))
                .map(|path| format!("{path}: watched only")),
        )
        .collect();
    assert!(
        differences.is_empty(),
        "{} current versions differ, the first: {:#?}",
        differences.len(),
        &differences[..differences.len().min(10)]
    );
    assert_eq!(
        stats_current(watch_lake),
        stats_current(&replay_lake),
        "stats_current differ"
    );
}

/// A small deterministic generator of file actions.
struct Actions {
    state: u64,
    dir: PathBuf,
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    counter: u32,
}

impl Actions {
    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn content(&mut self) -> Vec<u8> {
        let words = ["TODO ", "FIXME ", "plain ", "aa ", "\n", "x"];
        (0..(self.next() % 12))
            .map(|_| words[(self.next() % words.len() as u64) as usize])
            .collect::<String>()
            .into_bytes()
    }

    fn new_path(&mut self, ext: &str) -> PathBuf {
        self.counter += 1;
        let parent = if self.dirs.is_empty() || self.next().is_multiple_of(3) {
            self.dir.clone()
        } else {
            let i = (self.next() % self.dirs.len() as u64) as usize;
            self.dirs[i].clone()
        };
        parent.join(format!("f{}{ext}", self.counter))
    }

    fn pick_file(&mut self) -> Option<PathBuf> {
        self.files.retain(|f| f.exists());
        if self.files.is_empty() {
            return None;
        }
        let i = (self.next() % self.files.len() as u64) as usize;
        Some(self.files[i].clone())
    }

    /// One random action on the tree.
    fn act(&mut self) {
        self.dirs.retain(|d| d.is_dir());
        match self.next() % 10 {
            0 | 1 => {
                let ext = [".rs", ".py", ".txt", ""][(self.next() % 4) as usize];
                let path = self.new_path(ext);
                let content = self.content();
                std::fs::write(&path, content).unwrap();
                self.files.push(path);
            }
            2 => {
                if let Some(path) = self.pick_file() {
                    let content = self.content();
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .unwrap();
                    f.write_all(&content).unwrap();
                }
            }
            3 => {
                if let Some(path) = self.pick_file() {
                    let content = self.content();
                    std::fs::write(&path, content).unwrap();
                }
            }
            4 => {
                // Written slowly, in pieces, before it is closed.
                let path = self.new_path(".md");
                let mut f = std::fs::File::create(&path).unwrap();
                for _ in 0..4 {
                    let piece = self.content();
                    f.write_all(&piece).unwrap();
                    f.flush().unwrap();
                    std::thread::sleep(Duration::from_millis(15));
                }
                drop(f);
                self.files.push(path);
            }
            5 => {
                if let Some(path) = self.pick_file() {
                    let to = self.new_path(".txt");
                    std::fs::rename(&path, &to).unwrap();
                    self.files.push(to);
                }
            }
            6 => {
                if let Some(path) = self.pick_file() {
                    std::fs::remove_file(&path).unwrap();
                }
            }
            7 => {
                // A new directory with files written into it at once.
                self.counter += 1;
                let dir = self.dir.join(format!("d{}", self.counter));
                std::fs::create_dir(&dir).unwrap();
                for i in 0..3 {
                    let content = self.content();
                    std::fs::write(dir.join(format!("in{i}.rs")), content).unwrap();
                    self.files.push(dir.join(format!("in{i}.rs")));
                }
                self.dirs.push(dir);
            }
            8 => {
                if !self.dirs.is_empty() {
                    let i = (self.next() % self.dirs.len() as u64) as usize;
                    self.counter += 1;
                    let to = self.dir.join(format!("moved{}", self.counter));
                    std::fs::rename(&self.dirs[i], &to).unwrap();
                    self.dirs[i] = to;
                }
            }
            _ => {
                if !self.dirs.is_empty() {
                    let i = (self.next() % self.dirs.len() as u64) as usize;
                    std::fs::remove_dir_all(&self.dirs[i]).unwrap();
                }
            }
        }
    }
}

#[test]
fn watching_random_actions_ends_like_a_replay_of_the_final_tree() {
    for seed in [
        0x9e37_79b9_7f4a_7c15u64,
        0x2545_f491_4f6c_dd1d,
        0xdead_beef_cafe_f00d,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tree");
        std::fs::create_dir(&dir).unwrap();
        write(&dir, "present.rs", "// TODO present before the watch\n");
        write(&dir, "sub/old.py", "# FIXME\n");
        let lake = tmp.path().join("lake");
        let watching = Watching::start(&dir, &lake);
        let mut actions = Actions {
            state: seed,
            dir: dir.clone(),
            files: vec![dir.join("present.rs"), dir.join("sub/old.py")],
            dirs: vec![dir.join("sub")],
            counter: 0,
        };
        for _ in 0..60 {
            actions.act();
            if actions.next().is_multiple_of(4) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // Let the last writes settle past the debounce interval, as a user would.
        std::thread::sleep(Duration::from_millis(300));
        let summary = watching.stop();
        assert!(summary.contains("latency"), "{summary}");
        assert_same_as_replay(&dir, "tree", &lake, tmp.path());
    }
}

#[test]
fn a_burst_larger_than_the_kernel_queue_still_ends_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("burst");
    std::fs::create_dir(&dir).unwrap();
    let lake = tmp.path().join("lake");
    // The watcher drains the kernel queue faster than one thread can create files, so the
    // queue is made small for the watcher's inotify instance where the machine allows it
    // (the limit is read when the instance is created; it is restored at once).
    const LIMIT: &str = "/proc/sys/fs/inotify/max_queued_events";
    /// Puts the saved limit back even if starting the watcher fails.
    struct Restore(Option<String>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(saved) = self.0.take() {
                let _ = std::fs::write(LIMIT, saved.trim());
            }
        }
    }
    let saved = std::fs::read_to_string(LIMIT).ok();
    let lowered = saved.is_some() && std::fs::write(LIMIT, "128").is_ok();
    let restore = Restore(saved.filter(|_| lowered));
    let watching = Watching::start(&dir, &lake);
    drop(restore);
    // Far more events than fs.inotify.max_queued_events (16,384 by default): each file is a
    // create, a modify and a close-write, plus the watcher's own reads.
    for d in 0..20 {
        let sub = dir.join(format!("d{d}"));
        std::fs::create_dir(&sub).unwrap();
        for f in 0..1000 {
            std::fs::write(sub.join(format!("f{f}.txt")), format!("TODO {d} {f}\n")).unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let summary = watching.stop();
    println!("{summary}");
    if lowered {
        assert!(
            !summary.contains(" 0 rescans"),
            "the queue never overflowed: {summary}"
        );
    } else {
        println!("could not lower {LIMIT}: the overflow may not have happened");
    }
    assert_same_as_replay(&dir, "burst", &lake, tmp.path());
}
