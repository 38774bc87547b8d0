//! The crash harness (`tests/crash_harness.py`), short: replays and a watch killed with SIGKILL at
//! random moments, restarted each time, must end with the lake of an uninterrupted run: nothing
//! missing, nothing duplicated, the same `stats_current`. The full run (20,000 files, 20 kills)
//! is `python3 tests/crash_harness.py --exoflow target/release/exoflow --work DIR`.

use crate::util::{python, s};

#[test]
fn killed_runs_end_exactly_like_uninterrupted_ones() {
    let work = tempfile::tempdir().unwrap();
    let (ok, report) = python(
        "tests/crash_harness.py",
        &[
            "--exoflow",
            env!("CARGO_BIN_EXE_exoflow"),
            "--work",
            s(&work.path().join("crash")),
            "--files",
            "3000",
            "--replay-kills",
            "6",
            "--watch-kills",
            "4",
            "--compact-kills",
            "4",
        ],
    );
    println!("{report}");
    assert!(ok, "the crash harness found differences:\n{report}");
    assert!(report.contains("6 killed") && report.contains("4 watchers were killed"));
    assert!(report.contains("compaction: "), "{report}");
}
