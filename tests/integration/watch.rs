//! `exoflow watch` against `exoflow replay` of the final tree: random sequences of file actions on a
//! real directory while it is watched, then a graceful stop; the lake's current versions and
//! `stats_current` must equal those of a replay of what is left.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::util::*;

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
