//! CLI entry: parse, run, print the error chain, map errors to exit codes (0 ok, 1 runtime, 2 usage).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use exoflow::kernels::device::Device;
use exoflow::pipeline::Pipeline;
use exoflow::replay::{ReplayError, ReplayOptions, replay};
use exoflow::source::watch::{WatchOptions, WatchRoot};
use exoflow::watch::WatchRun;

/// Turns file changes into exact, queryable analytics: a Parquet lake of per-file features and
/// rule matches.
#[derive(Debug, Parser)]
#[command(name = "exoflow", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay a directory tree or a .tar / .tar.gz / .tgz / .tar.zst archive into a lake; several
    /// PATHs are successive snapshots of one tree.
    Replay(ReplayArgs),
    /// Watch live directories and ingest every change until Ctrl-C or SIGTERM.
    Watch(WatchArgs),
    /// Print the current statistics of a lake: totals, languages, top rules and duplicate
    /// content in brief; --dimension lists one dimension in full, --json prints every row.
    Stats(StatsArgs),
    /// Merge small part files of a lake's tables into larger ones, atomically.
    ///
    /// Per table, the parts below --min-size are merged in epoch order into parts of about
    /// --target-size. Each table directory is replaced in one atomic swap, so a reader listing
    /// LAKE/<table>/*.parquet sees the old parts or the new ones, never both; a query that listed
    /// the old parts just before the swap can fail with a missing file, and succeeds when run
    /// again. A compaction killed at any moment leaves every table whole; the next exoflow command
    /// on the lake removes what it left. Takes the lake's lock: no replay or watch may write it
    /// meanwhile.
    Compact(CompactArgs),
    /// Serve a lake's statistics over HTTP, read-only, following the commits of a run that
    /// writes it, until Ctrl-C or SIGTERM.
    ///
    /// Never takes the lake's lock and never writes to it. Ready (/readyz 200) once the lake has
    /// a commit; each new commit's changes reach /api/v1/stats and the change stream.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct CompactArgs {
    /// The lake directory.
    #[arg(value_name = "LAKE")]
    lake: PathBuf,
    /// Only this table (repeatable) [default: all of them].
    #[arg(long, value_name = "TABLE", value_parser = clap::builder::PossibleValuesParser::new(exoflow::sink::commit::PART_TABLES))]
    table: Vec<String>,
    /// A merged part holds about this much, more than 0: bytes, or with a unit (KiB, MiB, GiB;
    /// kB, MB, GB).
    #[arg(long, value_name = "SIZE", default_value = "128MiB", value_parser = exoflow::sink::compact::parse_size)]
    target_size: u64,
    /// Parts at least this large are left as they are; at most --target-size [default: half of
    /// --target-size].
    #[arg(long, value_name = "SIZE", value_parser = exoflow::sink::compact::parse_size)]
    min_size: Option<u64>,
}

#[derive(Debug, clap::Args)]
struct WatchArgs {
    /// Directories to watch; each is a source named by its base name.
    #[arg(value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// A directory with a source name of its choosing (repeatable).
    #[arg(long = "source", value_name = "NAME=DIR")]
    named: Vec<String>,
    #[command(flatten)]
    run: RunArgs,
    /// An epoch closes (and the live statistics update) this many milliseconds after it opened,
    /// 0 to 3600000 (an hour); 0 closes an epoch as soon as it has changes.
    #[arg(long, value_name = "MS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=MAX_WAIT_MS))]
    latency_ms: u64,
    /// A file written without close-write is taken once quiet this many milliseconds, 0 to
    /// 3600000 (an hour); 0 takes it at its first event.
    #[arg(long, value_name = "MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=MAX_WAIT_MS))]
    debounce_ms: u64,
    /// Poll at this interval, at least 10ms, instead of using inotify (for network filesystems,
    /// or too many directories for fs.inotify.max_user_watches).
    #[arg(long, value_name = "DURATION", value_parser = parse_poll)]
    poll: Option<Duration>,
    /// Take every entry: ignore no .gitignore/.ignore rules and include .git/.
    #[arg(long)]
    no_ignore: bool,
    #[command(flatten)]
    http: HttpArgs,
}

/// The HTTP server's options, which watch, replay and serve share.
#[derive(Debug, clap::Args)]
struct HttpArgs {
    /// Serve the live statistics, health checks and metrics over HTTP on this address (like
    /// 127.0.0.1:8484). A non-loopback address needs a token.
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
    /// Bearer tokens the server accepts, one a line (`name:token` or a bare token); the
    /// EXOFLOW_TOKEN environment variable adds one. /healthz and /readyz need none.
    #[arg(long, value_name = "FILE", requires = "http")]
    token_file: Option<PathBuf>,
    /// Append one JSON line per API request to this file: time, remote address, token name
    /// (never the token), method, route, status, duration_ms, bytes.
    #[arg(long, value_name = "FILE", requires = "http")]
    audit_log: Option<PathBuf>,
    /// Let browsers call the API from this origin (like https://ops.example.com); CORS is off
    /// without it.
    #[arg(long, value_name = "ORIGIN", requires = "http")]
    cors: Option<String>,
}

#[derive(Debug, clap::Args)]
#[command(mut_arg("http", |a| a.required(true)))]
struct ServeArgs {
    /// The lake directory. It is only read: a watch or replay may be writing it meanwhile.
    #[arg(value_name = "LAKE")]
    lake: PathBuf,
    #[command(flatten)]
    http: HttpArgs,
    /// The pipeline file the lake was written with, for the rules' patterns in /api/v1/rules
    /// [default: the built-in pack, when the lake was written with it].
    #[arg(long, value_name = "FILE")]
    pipeline: Option<PathBuf>,
}

/// What replay and watch share: where the lake is, which rules, how many workers.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The lake directory (created if missing).
    #[arg(long, value_name = "LAKE")]
    out: PathBuf,
    /// Pipeline file (JSON); the built-in default pack when absent.
    #[arg(long, value_name = "FILE")]
    pipeline: Option<PathBuf>,
    /// Worker threads, from 1 to 64 or to the number of cores where that is more [default: the
    /// number of cores]. Every worker exchanges progress with every other, so coordination grows
    /// with the square of N; workers beyond the cores only help reads that wait on the disk.
    #[arg(long, value_name = "N", value_parser = parse_workers)]
    workers: Option<usize>,
    /// Commit (part files, a commit record, stats_current.parquet) at least this often, from
    /// 10ms to 7days; a run stopped or killed continues from its last commit.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_commit_interval)]
    commit_interval: Duration,
    /// Checkpoint the tracked state once this many rows (and at least twice as many as there are
    /// tracked paths) were committed after the last checkpoint, so a restart reads a bounded
    /// amount.
    #[arg(long, value_name = "ROWS", default_value_t = 100_000)]
    checkpoint_rows: u64,
    /// Do not compact the lake's tables in the background while running.
    #[arg(long)]
    no_auto_compact: bool,
    /// Background compaction merges parts below 64 MiB by size tier: a tier (sizes within a
    /// factor of N) is merged once it holds N parts, so each table keeps fewer than N small
    /// parts per tier however long the run.
    #[arg(long, value_name = "N", default_value_t = exoflow::sink::compact::DEFAULT_AUTO_FANOUT as u16, value_parser = clap::value_parser!(u16).range(2..=1024))]
    compact_fanout: u16,
    /// Where the batch kernels run: auto (CUDA where its driver, a device and NVRTC are present,
    /// else the CPU), cpu, or cuda (refused where CUDA cannot start). The rows are the same.
    #[arg(long, value_name = "DEVICE", default_value = "auto", value_parser = clap::builder::PossibleValuesParser::new(exoflow::kernels::device::DEVICE_NAMES))]
    device: String,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Running as one of several processes that form one dataflow.
#[derive(Debug, clap::Args)]
#[group(requires_all = ["processes", "process", "hostfile"], multiple = true)]
struct ClusterArgs {
    /// Run as one of P processes (1 to 1024) that form one dataflow over TCP, each reading its
    /// own sources into the one lake given by --out, which every process must see. Every process
    /// gets the same --processes, --hostfile, --workers and pipeline, and its own --process;
    /// process 0 holds the lake's lock and writes the commit records (and serves --http).
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u16).range(1..=1024))]
    processes: Option<u16>,
    /// This process's index in the hostfile, from 0 to P-1.
    #[arg(long, value_name = "I")]
    process: Option<usize>,
    /// One host:port per line, line I being the address process I listens on; the same file
    /// for every process.
    #[arg(long, value_name = "FILE")]
    hostfile: Option<PathBuf>,
    /// How long a process waits for every other to connect, from 1s to 1day.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_connect_timeout)]
    connect_timeout: Duration,
}

impl ClusterArgs {
    /// The cluster this process is part of, or None; a bad hostfile is a usage error.
    fn spec(&self) -> Result<Option<exoflow::cluster::ClusterSpec>, ExitCode> {
        let (Some(processes), Some(process), Some(hostfile)) =
            (self.processes, self.process, &self.hostfile)
        else {
            return Ok(None);
        };
        exoflow::cluster::ClusterSpec::from_hostfile(
            usize::from(processes),
            process,
            hostfile,
            self.connect_timeout,
        )
        .map(Some)
        .map_err(|e| fail(&anyhow::Error::new(e), 2))
    }
}

fn parse_connect_timeout(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_secs(1) || duration > Duration::from_secs(86_400) {
        return Err(format!("{text} is not between 1s and 1day"));
    }
    Ok(duration)
}

impl RunArgs {
    /// The cluster, if any; only its first process serves HTTP (it alone has the live state).
    fn cluster(&self, http: &HttpArgs) -> Result<Option<exoflow::cluster::ClusterSpec>, ExitCode> {
        let spec = self.cluster.spec()?;
        if let Some(spec) = spec.as_ref().filter(|s| !s.is_first())
            && let Some(addr) = http.http
        {
            return Err(fail(
                &anyhow::anyhow!(
                    "--http {addr}: process {} of a cluster serves nothing; give --http to process 0",
                    spec.process
                ),
                2,
            ));
        }
        Ok(spec)
    }

    /// The pipeline file, or the default pack; a bad file is a usage error.
    fn pipeline(&self) -> Result<Pipeline, ExitCode> {
        match &self.pipeline {
            Some(path) => Pipeline::load(path).map_err(|e| fail(&anyhow::Error::new(e), 2)),
            None => Ok(Pipeline::default_pack()),
        }
    }

    /// The background compaction policy, or None with --no-auto-compact.
    fn auto_compact(&self) -> Option<exoflow::sink::compact::AutoCompact> {
        (!self.no_auto_compact).then(|| exoflow::sink::compact::AutoCompact {
            fanout: usize::from(self.compact_fanout),
            ..Default::default()
        })
    }

    fn workers(&self) -> usize {
        self.workers.unwrap_or_else(cores)
    }

    /// The device the kernels run on; `--device cuda` where CUDA cannot start is a usage error.
    fn device(&self) -> Result<Device, ExitCode> {
        let choice = self
            .device
            .parse()
            .map_err(|e: String| fail(&anyhow::anyhow!(e), 2))?;
        Device::select(choice).map_err(|e| fail(&anyhow::Error::new(e), 2))
    }
}

/// The longest `--latency-ms` and `--debounce-ms`: an hour. Longer, the statistics or a file
/// written without close-write would wait for the stop.
const MAX_WAIT_MS: u64 = 3_600_000;
/// `--workers` goes up to this, or to the number of cores where that is more.
const MAX_WORKERS_FLOOR: usize = 64;
/// Commits closer than this would write a part file per worker and table for a handful of rows
/// (a replay stamps a new epoch on every file); further apart than this, a crash loses more than
/// any run is worth, and the interval's arithmetic stays far from overflowing.
const COMMIT_INTERVAL_RANGE: (Duration, Duration) = (
    Duration::from_millis(10),
    Duration::from_secs(7 * 24 * 3600),
);
/// A poll interval below this rescans the directories without pause.
const MIN_POLL: Duration = Duration::from_millis(10);

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// `--workers`: 1 up to the larger of [`MAX_WORKERS_FLOOR`] and the number of cores. Timely
/// connects every worker with every other: on two cores, a debug build replays two files in 4 s
/// with 64 workers, 27 s with 128 and 74 s with 256, with nothing to gain.
fn parse_workers(text: &str) -> Result<usize, String> {
    let max = MAX_WORKERS_FLOOR.max(cores());
    let n: usize = text
        .parse()
        .map_err(|e| format!("{text:?} is not a number of workers: {e}"))?;
    if !(1..=max).contains(&n) {
        return Err(format!(
            "{n} is not in 1..={max} (64, or the number of cores where that is more: \
             coordination between workers grows with the square of their number)"
        ));
    }
    Ok(n)
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration (like 5s or 100ms): {e}"))
}

fn parse_commit_interval(text: &str) -> Result<Duration, String> {
    let (min, max) = COMMIT_INTERVAL_RANGE;
    let duration = parse_duration(text)?;
    if duration < min || duration > max {
        return Err(format!(
            "{text} is not between {} and {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(duration)
}

fn parse_poll(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < MIN_POLL {
        return Err(format!(
            "{text} is shorter than {}: the directories would be rescanned without pause",
            humantime::format_duration(MIN_POLL)
        ));
    }
    Ok(duration)
}

#[derive(Debug, clap::Args)]
struct StatsArgs {
    /// The lake directory.
    lake: PathBuf,
    /// Print every row (of --dimension, when given) as JSON, an array of objects, instead of the
    /// summary.
    #[arg(long)]
    json: bool,
    /// Print every row of this dimension instead of the summary.
    #[arg(long, value_name = "DIMENSION", value_parser = clap::builder::PossibleValuesParser::new(exoflow::query::DIMENSIONS))]
    dimension: Option<String>,
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// A directory, or a .tar, .tar.gz/.tgz or .tar.zst archive; several are successive
    /// snapshots of one tree, each the complete tree at later epochs than the one before.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
    /// Source name [default: the base name of the first PATH without archive suffixes].
    #[arg(long, value_name = "NAME")]
    source: Option<String>,
    /// Drop this many leading path components of archive members, like tar (a member with no
    /// more components is left out); directories are taken as they are.
    #[arg(long, value_name = "N", default_value_t = 0)]
    strip_components: usize,
    /// Take every entry: ignore no .gitignore/.ignore rules and include .git/.
    #[arg(long)]
    no_ignore: bool,
    #[command(flatten)]
    http: HttpArgs,
    /// Once the replay is done, print its summary and keep serving its final statistics until
    /// Ctrl-C or SIGTERM (exit 0); without it the server stops with the replay.
    #[arg(long, requires = "http")]
    serve: bool,
}

/// glibc's malloc hands large freed blocks back to the kernel (munmap, heap trimming) and maps
/// them again for the next batch, a page fault per 4 KiB each time; every batch, part writer and
/// arrangement batch allocates such blocks. Keeping them costs little memory (the blocks are
/// reused) and saves about 5% of the CPU time of a replay of many small files. A replay only: a
/// watch runs for weeks, and the transient peaks of its background checkpoints and compactions
/// must go back to the system, not stay in the process.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// Log lines are coloured only on a terminal, and never with NO_COLOR set (https://no-color.org):
/// escape codes in a log file or a pipe are noise to whoever reads or greps it.
fn colour_logs() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A write past the file size limit (`ulimit -f`) raises SIGXFSZ, whose default action kills the
/// process without a word. Ignored, the write fails with EFBIG instead, and the run stops like on
/// any other write error: exit 1, the file named, the lake at its last commit.
fn fail_writes_past_the_file_size_limit() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_IGN is async-signal-safe and is done before
    // any other thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

fn main() -> ExitCode {
    fail_writes_past_the_file_size_limit();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour_logs())
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Replay(args) => {
            keep_freed_memory();
            run_replay(args)
        }
        Command::Watch(args) => run_watch(args),
        Command::Stats(args) => run_stats(args),
        Command::Compact(args) => run_compact(args),
        Command::Serve(args) => run_serve(args),
    }
}

fn run_watch(args: WatchArgs) -> ExitCode {
    let pipeline = match args.run.pipeline() {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut roots: Vec<WatchRoot> = args
        .dirs
        .iter()
        .map(|dir| WatchRoot {
            source: exoflow::source::default_source_name(dir),
            dir: dir.clone(),
        })
        .collect();
    for named in &args.named {
        let Some((name, dir)) = named.split_once('=') else {
            return fail(&anyhow::anyhow!("--source {named}: expected NAME=DIR"), 2);
        };
        roots.push(WatchRoot {
            source: name.to_string(),
            dir: PathBuf::from(dir),
        });
    }
    let mut names = std::collections::HashSet::new();
    if let Some(root) = roots.iter().find(|r| !names.insert(r.source.clone())) {
        return fail(
            &anyhow::anyhow!(
                "two directories have the source name '{}': name one with --source NAME=DIR",
                root.source
            ),
            2,
        );
    }
    if roots.is_empty() {
        return fail(
            &anyhow::anyhow!("nothing to watch: give at least one DIR"),
            2,
        );
    }
    for root in &roots {
        if !root.dir.is_dir() {
            return fail(
                &anyhow::anyhow!("{} is not a directory", root.dir.display()),
                2,
            );
        }
    }
    let device = match args.run.device() {
        Ok(device) => device,
        Err(code) => return code,
    };
    let cluster = match args.run.cluster(&args.http) {
        Ok(cluster) => cluster,
        Err(code) => return code,
    };
    let rules = exoflow::api::RuleInfo::of(&pipeline.rules);
    let server = match start_server(&args.http, &args.run.out, rules) {
        Ok(server) => server,
        Err(code) => return code,
    };
    let stop = match stop_on_signals() {
        Ok(stop) => stop,
        Err(code) => return code,
    };
    let config = WatchRun {
        roots,
        lake: args.run.out.clone(),
        pipeline,
        device,
        workers: args.run.workers(),
        options: WatchOptions {
            no_ignore: args.no_ignore,
            poll: args.poll,
            debounce: Duration::from_millis(args.debounce_ms),
            latency: Duration::from_millis(args.latency_ms.max(1)),
            commit_interval: args.run.commit_interval,
        },
        commit_interval: args.run.commit_interval,
        checkpoint_rows: args.run.checkpoint_rows,
        auto_compact: args.run.auto_compact(),
        live: server.as_ref().map(|(_, live)| live.clone()),
        cluster,
    };
    eprintln!("watching; Ctrl-C or SIGTERM stops, commits and prints the summary");
    match exoflow::watch::run(config, stop) {
        Ok(summary) => {
            print(&summary.to_string());
            ExitCode::SUCCESS
        }
        Err(exoflow::watch::WatchError::Lake(e)) => {
            let code = if e.is_usage() { 2 } else { 1 };
            fail(&anyhow::Error::new(e), code)
        }
        Err(exoflow::watch::WatchError::Cluster(e)) => {
            let code = e.exit_code();
            fail(&anyhow::Error::new(e), code)
        }
        Err(e @ exoflow::watch::WatchError::Input(_)) => fail(&anyhow::Error::new(e), 2),
        Err(e) => fail(&anyhow::Error::new(e), 1),
    }
}

/// A server and the snapshot it serves.
type Serving = (exoflow::api::server::Server, Arc<exoflow::api::live::Live>);

/// Starts the server when `--http` is given, or says why not: a configuration error is a usage
/// error (exit 2).
fn start_server(
    args: &HttpArgs,
    lake: &std::path::Path,
    rules: Vec<exoflow::api::RuleInfo>,
) -> Result<Option<Serving>, ExitCode> {
    let Some(addr) = args.http else {
        return Ok(None);
    };
    let fail_api = |e: exoflow::api::ApiError| {
        let code = if e.is_usage() { 2 } else { 1 };
        fail(&anyhow::Error::new(e), code)
    };
    let env = std::env::var(exoflow::api::TOKEN_ENV).ok();
    let tokens = exoflow::api::load_tokens(args.token_file.as_deref(), env).map_err(fail_api)?;
    let mut config = exoflow::api::ServeConfig::new(addr, tokens).map_err(fail_api)?;
    config.lake = Some(lake.to_path_buf());
    config.audit_log = args.audit_log.clone();
    config.cors = args.cors.clone();
    config.rules = rules;
    let live = Arc::new(exoflow::api::live::Live::default());
    let server = exoflow::api::server::Server::start(config, live.clone()).map_err(fail_api)?;
    eprintln!("serving on http://{}", server.addr());
    Ok(Some((server, live)))
}

fn run_serve(args: ServeArgs) -> ExitCode {
    use exoflow::api::follow;
    if let Err(e) = follow::check_lake(&args.lake) {
        return fail(&anyhow::Error::new(e), 2);
    }
    let pipeline = match &args.pipeline {
        Some(path) => match Pipeline::load(path) {
            Ok(pipeline) => Some(pipeline),
            Err(e) => return fail(&anyhow::Error::new(e), 2),
        },
        None => None,
    };
    let rules = match follow::rules(&args.lake, pipeline.as_ref()) {
        Ok(rules) => rules,
        Err(e) => return fail(&anyhow::Error::new(e), 2),
    };
    let (server, live) = match start_server(&args.http, &args.lake, rules) {
        Ok(Some(serving)) => serving,
        Ok(None) => unreachable!("--http is required"),
        Err(code) => return code,
    };
    let stop = match stop_on_signals() {
        Ok(stop) => stop,
        Err(code) => return code,
    };
    let follower = follow::follow(args.lake.clone(), live, stop.clone());
    eprintln!(
        "serving {} read-only; Ctrl-C or SIGTERM stops",
        args.lake.display()
    );
    wait_for(&stop);
    follower.thread().unpark();
    let _ = follower.join();
    drop(server);
    ExitCode::SUCCESS
}

/// Waits until Ctrl-C or SIGTERM sets `stop`.
fn wait_for(stop: &AtomicBool) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_compact(args: CompactArgs) -> ExitCode {
    let options = exoflow::sink::compact::CompactOptions {
        tables: args.table,
        min_bytes: args.min_size.unwrap_or(args.target_size / 2),
        target_bytes: args.target_size,
    };
    match exoflow::sink::compact::compact(&args.lake, &options) {
        Ok(report) => {
            print(report.to_string().trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let code = if e.is_usage() { 2 } else { 1 };
            fail(&anyhow::Error::new(e), code)
        }
    }
}

fn run_stats(args: StatsArgs) -> ExitCode {
    let mut rows = match exoflow::query::current_stats(&args.lake) {
        Ok(rows) => rows,
        Err(e @ exoflow::query::QueryError::NoStatistics { .. }) => {
            return fail(&anyhow::Error::new(e), 2);
        }
        Err(e) => return fail(&anyhow::Error::new(e), 1),
    };
    if let Some(dimension) = &args.dimension {
        rows.retain(|r| &r.dimension == dimension);
    }
    if args.json {
        match serde_json::to_string_pretty(&rows) {
            Ok(text) => print(&text),
            Err(e) => return fail(&anyhow::Error::new(e), 1),
        }
    } else if args.dimension.is_some() {
        print(&exoflow::query::format_table(&rows));
    } else {
        print(&exoflow::query::format_summary(&rows));
    }
    ExitCode::SUCCESS
}

fn run_replay(args: ReplayArgs) -> ExitCode {
    let pipeline = match args.run.pipeline() {
        Ok(p) => p,
        Err(code) => return code,
    };
    let workers = args.run.workers();
    let device = match args.run.device() {
        Ok(device) => device,
        Err(code) => return code,
    };
    let cluster = match args.run.cluster(&args.http) {
        Ok(cluster) => cluster,
        Err(code) => return code,
    };
    let rules = exoflow::api::RuleInfo::of(&pipeline.rules);
    let server = match start_server(&args.http, &args.run.out, rules) {
        Ok(server) => server,
        Err(code) => return code,
    };
    let stop = match stop_on_signals() {
        Ok(stop) => stop,
        Err(code) => return code,
    };
    let auto_compact = args.run.auto_compact();
    let options = ReplayOptions {
        paths: args.paths,
        lake: args.run.out,
        pipeline,
        device,
        workers,
        source: args.source,
        strip_components: args.strip_components,
        no_ignore: args.no_ignore,
        progress_bar: std::io::stderr().is_terminal(),
        commit_interval: args.run.commit_interval,
        checkpoint_rows: args.run.checkpoint_rows,
        auto_compact,
        stop: Some(stop.clone()),
        live: server.as_ref().map(|(_, live)| live.clone()),
        cluster,
    };
    match replay(options) {
        Ok(summary) => {
            print(&summary.to_string());
            match summary.source_error {
                Some(e) => fail(
                    &anyhow::Error::new(e).context(
                        "the replay stopped early; nothing of the failed snapshot was committed",
                    ),
                    1,
                ),
                None if summary.interrupted => {
                    eprintln!(
                        "error: interrupted; what was read is committed, nothing was deleted, and running the same replay again continues it"
                    );
                    ExitCode::from(130)
                }
                None => {
                    if let Some((_, live)) = server.as_ref().filter(|_| args.serve) {
                        // The replay is over: its statistics are final, and ready.
                        let snapshot = live.snapshot();
                        live.advance(snapshot.epoch, snapshot.committed_epoch, true);
                        eprintln!("serving the final statistics; Ctrl-C or SIGTERM stops");
                        wait_for(&stop);
                    }
                    ExitCode::SUCCESS
                }
            }
        }
        Err(ReplayError::Input(e)) => fail(&anyhow::Error::new(e), 2),
        Err(ReplayError::Lake(e)) => {
            let code = if e.is_usage() { 2 } else { 1 };
            fail(&anyhow::Error::new(e), code)
        }
        Err(ReplayError::Cluster(e)) => {
            let code = e.exit_code();
            fail(&anyhow::Error::new(e), code)
        }
        Err(e) => fail(&anyhow::Error::new(e), 1),
    }
}

/// A flag that Ctrl-C or SIGTERM sets, so that a run stops gracefully; a second signal ends
/// the process at once (exit 130), as a user pressing Ctrl-C twice expects.
fn stop_on_signals() -> Result<Arc<AtomicBool>, ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let registered =
            signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())
                .and_then(|_| signal_hook::flag::register(signal, stop.clone()));
        if let Err(e) = registered {
            return Err(fail(
                &anyhow::Error::new(e).context("cannot handle signals"),
                1,
            ));
        }
    }
    Ok(stop)
}

/// Prints to stdout; a closed pipe (`| head`) is not an error.
fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

fn fail(error: &anyhow::Error, code: u8) -> ExitCode {
    eprintln!("error: {error:#}");
    ExitCode::from(code)
}
