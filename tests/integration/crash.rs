//! The crash harness (`tests/crash_harness.py`), short: replays and a watch killed with SIGKILL at
//! random moments, restarted each time, must end with the lake of an uninterrupted run: nothing
//! missing, nothing duplicated, the same `stats_current`. The full run (20,000 files, 20 kills)
//! is `python3 tests/crash_harness.py --exoflow target/release/exoflow --work DIR`.

use std::path::Path;
use std::process::Command;

use crate::util::s;

#[test]
fn killed_runs_end_exactly_like_uninterrupted_ones() {
    let work = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/crash_harness.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["--exoflow", env!("CARGO_BIN_EXE_exoflow")])
        .args(["--work", s(&work.path().join("crash"))])
        .args([
            "--files",
            "3000",
            "--replay-kills",
            "6",
            "--watch-kills",
            "4",
        ])
        .output()
        .expect("python3 runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(
        out.status.success(),
        "the crash harness found differences:\n{report}"
    );
    assert!(report.contains("6 killed") && report.contains("4 watchers were killed"));
}
