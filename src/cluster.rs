//! Several processes, one timely dataflow: the hostfile, the connections between the
//! processes, the handshake that refuses a process whose peers run something else, and what
//! happens when a peer is lost.
//!
//! Process `i` listens on line `i` of the hostfile, connects to every process before it and
//! accepts every process after it, as timely's own cluster setup does; here each connection
//! also carries a [`Hello`] both ways before timely takes it over, and the whole setup has a
//! deadline. The connected sockets then become timely's cluster allocators
//! ([`Cluster::execute`]), so the dataflow and its progress tracking are timely's, unchanged.
//!
//! timely has no fault tolerance: once a connection drops, the dataflow cannot go on. The
//! process then exits with code 1 naming the lost peer ([`exit_on_lost_peer`]); nothing past the
//! last commit was committed, and a restart of every process continues from it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::dataflow::commit::ReplayPlan;
use crate::sink::commit::{LOG_DIR, write_atomically};
use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
use timely::communication::{Hooks, WorkerGuards};

/// The file under the lake's `_exoflow/` into which process 0 writes a mark of its run before it
/// listens: every other process must read the same mark there.
pub const LAKE_MARK: &str = "cluster";
/// Opens every connection, before and after the handshake.
const MAGIC: &[u8; 8] = b"EXOFLOW\x01";
/// A hello larger than this is not one.
const MAX_HELLO_BYTES: u64 = 1 << 20;
/// Between two attempts to connect to a peer that is not listening yet: the first wait, which
/// doubles up to the last.
const RETRY: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(500));
/// Between two looks for a connection from a peer.
const ACCEPT_POLL: Duration = Duration::from_millis(5);

/// Where this process is in its cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// This process's index, from 0.
    pub process: usize,
    /// One `host:port` per process, in process order: the hostfile.
    pub addresses: Vec<String>,
    /// The hostfile, for messages.
    pub hostfile: PathBuf,
    /// How long to wait for every peer to connect.
    pub connect_timeout: Duration,
    /// Set by Ctrl-C or SIGTERM: stop waiting for the peers.
    pub stop: Option<Arc<AtomicBool>>,
}

/// Why a cluster could not form.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read hostfile {path}")]
    Hostfile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("hostfile {path}: {reason}")]
    BadHostfile { path: PathBuf, reason: String },
    #[error("cannot listen on {address}, the address of process {process} in the hostfile")]
    Listen {
        address: String,
        process: usize,
        source: std::io::Error,
    },
    #[error(
        "process {process} did not connect within {waited}: waiting for {missing}; start every process of the hostfile, each with its own --process"
    )]
    Timeout {
        process: usize,
        waited: String,
        missing: String,
    },
    #[error("connection with process {peer} ({address}) failed during the handshake: {reason}")]
    Handshake {
        peer: usize,
        address: String,
        reason: String,
    },
    /// A peer runs something else: every process of the cluster refuses.
    #[error(
        "process {peer} ({address}) {what}: every process must run the same exoflow, command, pipeline, workers, lake and hostfile"
    )]
    Mismatch {
        peer: usize,
        address: String,
        what: String,
    },
    #[error("interrupted while waiting for the cluster's other processes; nothing was done")]
    Interrupted,
    #[error("cannot mark the lake for the cluster")]
    Mark(#[source] crate::sink::SinkError),
    #[error(
        "source name {name:?} is used by processes {first} and {second}: source names must be unique across the cluster (name them with --source NAME=DIR, or --source for replay)"
    )]
    DuplicateSource {
        name: String,
        first: usize,
        second: usize,
    },
}

impl ClusterError {
    /// A mistake in how the processes were started (exit code 2), as opposed to a peer that
    /// could not be reached (1).
    /// The exit code for this error: 2 for a usage error, 130 when interrupted, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClusterError::Interrupted => 130,
            e if e.is_usage() => 2,
            _ => 1,
        }
    }

    pub fn is_usage(&self) -> bool {
        !matches!(
            self,
            ClusterError::Timeout { .. }
                | ClusterError::Handshake { .. }
                | ClusterError::Mark(_)
                | ClusterError::Interrupted
        )
    }
}

impl ClusterSpec {
    /// Reads the hostfile: one `host:port` a line, `#` comments and blank lines ignored; it must
    /// name `processes` processes, and `process` must be one of them.
    pub fn from_hostfile(
        processes: usize,
        process: usize,
        hostfile: &Path,
        connect_timeout: Duration,
    ) -> Result<ClusterSpec, ClusterError> {
        let text = std::fs::read_to_string(hostfile).map_err(|source| ClusterError::Hostfile {
            path: hostfile.to_path_buf(),
            source,
        })?;
        let bad = |reason: String| ClusterError::BadHostfile {
            path: hostfile.to_path_buf(),
            reason,
        };
        // (line number, address) of each line that names one.
        let mut named: Vec<(usize, &str)> = Vec::new();
        for (i, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
            let address = line.split('#').next().unwrap_or("").trim();
            if address.is_empty() {
                continue;
            }
            let valid = address.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
            });
            if !valid {
                let shown: String = address.chars().take(60).collect();
                let more = if shown.len() < address.len() {
                    "…"
                } else {
                    ""
                };
                return Err(bad(format!(
                    "line {} ({shown:?}{more}) is not host:port, with a port from 1 to 65535",
                    i + 1
                )));
            }
            named.push((i + 1, address));
        }
        let addresses: Vec<String> = named.iter().map(|(_, a)| a.to_string()).collect();
        if addresses.len() != processes {
            return Err(bad(format!(
                "names {} processes, and --processes is {processes}",
                addresses.len()
            )));
        }
        if process >= processes {
            return Err(bad(format!(
                "--process {process} is not one of its processes 0..{processes}"
            )));
        }
        let mut sorted = named.clone();
        sorted.sort_by_key(|(_, address)| *address);
        if let Some(pair) = sorted.windows(2).find(|w| w[0].1 == w[1].1) {
            return Err(bad(format!(
                "{} is named twice (lines {} and {})",
                pair[0].1,
                pair[0].0.min(pair[1].0),
                pair[0].0.max(pair[1].0)
            )));
        }
        Ok(ClusterSpec {
            process,
            addresses,
            hostfile: hostfile.to_path_buf(),
            connect_timeout,
            stop: None,
        })
    }

    /// The same, stopping its wait for the peers once `stop` is set.
    pub fn stopped_by(mut self, stop: Option<Arc<AtomicBool>>) -> ClusterSpec {
        self.stop = stop;
        self
    }

    fn stopped(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Acquire))
    }

    pub fn processes(&self) -> usize {
        self.addresses.len()
    }

    /// Whether this process coordinates the cluster: it holds the lake's lock, restores its
    /// state and writes the commit records.
    pub fn is_first(&self) -> bool {
        self.process == 0
    }
}

/// What each process tells every other before the dataflow starts; all must agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub exoflow: String,
    pub process: usize,
    pub addresses: Vec<String>,
    /// `replay` or `watch`.
    pub command: String,
    pub workers: usize,
    /// The pipeline's fingerprint.
    pub pipeline: String,
    /// The lake's last committed epoch as this process reads it: the same lake, in the same
    /// state, for every process.
    pub lake_epoch: u64,
    /// The names of this process's sources.
    pub sources: Vec<String>,
    /// This process's replay, for the commit records of the first.
    pub replay: Option<ReplayPlan>,
    /// In a greeting between process 0 and another: the mark process 0 wrote into the lake
    /// (see [`LAKE_MARK`]), as the sender reads it; None in the others.
    pub lake_mark: Option<String>,
}

impl Hello {
    /// What differs between `self` (ours) and a peer's hello, if anything.
    fn differs(&self, peer: &Hello) -> Option<String> {
        if peer.exoflow != self.exoflow {
            return Some(format!(
                "runs exoflow {}; this process runs {}",
                peer.exoflow, self.exoflow
            ));
        }
        if peer.addresses != self.addresses {
            return Some(format!(
                "has another hostfile ({}); this process's is {}",
                peer.addresses.join(", "),
                self.addresses.join(", ")
            ));
        }
        if peer.command != self.command {
            return Some(format!(
                "runs {}; this process runs {}",
                peer.command, self.command
            ));
        }
        if peer.pipeline != self.pipeline {
            return Some(format!(
                "runs another pipeline (fingerprint {}); this process's is {}",
                peer.pipeline, self.pipeline
            ));
        }
        if peer.workers != self.workers {
            return Some(format!(
                "runs {} workers; this process runs {}",
                peer.workers, self.workers
            ));
        }
        if peer.lake_epoch != self.lake_epoch {
            return Some(format!(
                "reads the lake at commit epoch {}; this process reads it at {} (is the lake one directory that every process sees?)",
                peer.lake_epoch, self.lake_epoch
            ));
        }
        None
    }
}

/// The connected cluster, before timely takes over its connections.
pub struct Cluster {
    pub spec: ClusterSpec,
    /// The connection to each other process; None at this process's index.
    sockets: Vec<Option<TcpStream>>,
    /// Every process's hello, in process order.
    pub hellos: Vec<Hello>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

/// Joins the cluster of `spec`, if any, for a run of `command` with `sources` on `workers`
/// workers of each process, writing to `lake`: None for a run alone.
pub fn join(
    spec: Option<ClusterSpec>,
    command: &str,
    workers: usize,
    pipeline: &crate::pipeline::Pipeline,
    lake: &crate::sink::commit::Lake,
    sources: Vec<String>,
    replay: Option<ReplayPlan>,
) -> Result<Option<Cluster>, ClusterError> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    let mark_path = lake.root().join(LOG_DIR).join(LAKE_MARK);
    let lake_mark = match spec.is_first() {
        true => {
            let mark = format!("{}\n", crate::api::live::run_id());
            write_atomically(&mark_path, mark.as_bytes()).map_err(ClusterError::Mark)?;
            Some(mark)
        }
        false => None,
    };
    let hello = Hello {
        exoflow: env!("CARGO_PKG_VERSION").to_string(),
        process: spec.process,
        addresses: spec.addresses.clone(),
        command: command.to_string(),
        workers,
        pipeline: pipeline.fingerprint.clone(),
        lake_epoch: lake.committed(),
        sources,
        replay,
        lake_mark,
    };
    tracing::info!(
        process = spec.process,
        processes = spec.processes(),
        "connecting with the cluster's other processes"
    );
    connect(spec, hello, mark_path).map(Some)
}

/// Connects this process with every other of `spec`, greeting each with `hello` as soon as it
/// is connected, and checks that every process runs the same thing with its own sources. A
/// peer that differs is refused at once, whichever process connected first.
pub fn connect(spec: ClusterSpec, hello: Hello, mark: PathBuf) -> Result<Cluster, ClusterError> {
    let deadline = Instant::now() + spec.connect_timeout;
    let me = spec.process;
    let listener =
        TcpListener::bind(spec.addresses[me].as_str()).map_err(|source| ClusterError::Listen {
            address: spec.addresses[me].clone(),
            process: me,
            source,
        })?;
    let greeter = Greeter {
        spec: &spec,
        ours: &hello,
        mark,
        deadline,
        refused: AtomicBool::new(false),
    };
    // Connect to the processes before this one while accepting those after it: in a thread of
    // its own, so that no start order can deadlock.
    let (dialed, accepted) = std::thread::scope(|scope| {
        let dialer = scope.spawn(|| greeter.dial_earlier());
        let accepted = greeter.accept_later(&listener);
        let dialed = dialer.join().expect("the dialer does not panic");
        (dialed, accepted)
    });
    let (dialed, accepted) = (dialed?, accepted?);
    if spec.stopped() {
        return Err(ClusterError::Interrupted);
    }
    let mut sockets: Vec<Option<TcpStream>> = (0..spec.processes()).map(|_| None).collect();
    let mut hellos: Vec<Option<Hello>> = (0..spec.processes()).map(|_| None).collect();
    hellos[me] = Some(hello.clone());
    let mut missing = Vec::new();
    for (peer, greeted) in dialed.into_iter().chain(accepted) {
        match greeted {
            Some((stream, theirs)) => {
                sockets[peer] = Some(stream);
                hellos[peer] = Some(theirs);
            }
            None => missing.push(format!("process {peer} ({})", spec.addresses[peer])),
        }
    }
    if !missing.is_empty() {
        return Err(ClusterError::Timeout {
            process: me,
            waited: humantime::format_duration(spec.connect_timeout).to_string(),
            missing: missing.join(", "),
        });
    }
    let hellos: Vec<Hello> = hellos
        .into_iter()
        .map(|h| h.expect("every hello"))
        .collect();
    unique_sources(&hellos)?;
    Ok(Cluster {
        spec,
        sockets,
        hellos,
    })
}

/// A connection and the peer's hello.
type Greeted = Option<(TcpStream, Hello)>;

/// What connecting needs: our hello, and whether a peer was refused (which stops the other
/// side's loop too).
struct Greeter<'a> {
    spec: &'a ClusterSpec,
    ours: &'a Hello,
    /// Where process 0 marks the lake.
    mark: PathBuf,
    deadline: Instant,
    refused: AtomicBool,
}

impl Greeter<'_> {
    fn going(&self) -> bool {
        Instant::now() < self.deadline
            && !self.refused.load(Ordering::Acquire)
            && !self.spec.stopped()
    }

    fn refuse<T>(&self, error: ClusterError) -> Result<T, ClusterError> {
        self.refused.store(true, Ordering::Release);
        Err(error)
    }

    /// Connects to every process before this one, retrying until the deadline, says which
    /// process we are, and greets it.
    fn dial_earlier(&self) -> Result<Vec<(usize, Greeted)>, ClusterError> {
        let me = self.spec.process;
        let mut greeted = Vec::with_capacity(me);
        for (peer, address) in self.spec.addresses.iter().enumerate().take(me) {
            let mut connection = None;
            let mut logged = false;
            let mut wait = RETRY.0;
            while connection.is_none() && self.going() {
                match connect_once(address) {
                    Ok(mut stream) => {
                        let mut intro = MAGIC.to_vec();
                        intro.extend_from_slice(&(me as u64).to_be_bytes());
                        if stream.write_all(&intro).is_ok() {
                            connection = Some(self.greet(stream, peer)?);
                        }
                    }
                    Err(error) => {
                        if !logged {
                            tracing::info!(peer, %address, %error, "waiting for a peer to listen");
                            logged = true;
                        }
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(RETRY.1);
                    }
                }
            }
            greeted.push((peer, connection));
        }
        Ok(greeted)
    }

    /// Accepts a connection from every process after this one until the deadline, and greets
    /// it; a connection that does not introduce itself as one of them is dropped.
    fn accept_later(&self, listener: &TcpListener) -> Result<Vec<(usize, Greeted)>, ClusterError> {
        let me = self.spec.process;
        let mut greeted: Vec<(usize, Greeted)> =
            (me + 1..self.spec.processes()).map(|p| (p, None)).collect();
        listener
            .set_nonblocking(true)
            .expect("a listener can be non-blocking");
        while greeted.iter().any(|(_, g)| g.is_none()) && self.going() {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    // A peer introduces itself as soon as it connects.
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                    let mut intro = [0u8; 16];
                    if stream.read_exact(&mut intro).is_err() || &intro[..8] != MAGIC {
                        continue;
                    }
                    let peer = u64::from_be_bytes(intro[8..].try_into().expect("8 bytes")) as usize;
                    if let Some(slot) = greeted.iter_mut().find(|(p, g)| *p == peer && g.is_none())
                    {
                        let _ = stream.set_nodelay(true);
                        if let Err(error) = watch_link(&stream) {
                            tracing::warn!(peer, %error, "cannot bound the connection's silence");
                        }
                        slot.1 = Some(self.greet(stream, peer)?);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(ACCEPT_POLL)
                }
                Err(error) => tracing::warn!(%error, "accepting a peer failed"),
            }
        }
        Ok(greeted)
    }

    /// Sends our hello to `peer` and reads its own; refuses it if it differs.
    fn greet(
        &self,
        mut stream: TcpStream,
        peer: usize,
    ) -> Result<(TcpStream, Hello), ClusterError> {
        let address = &self.spec.addresses[peer];
        let failed = |reason: String| ClusterError::Handshake {
            peer,
            address: address.clone(),
            reason,
        };
        // Process 0 marked the lake before it listened: a peer connected to it reads the mark
        // now, and both see whether it is the same lake.
        let mut ours = self.ours.clone();
        if peer == 0 {
            ours.lake_mark = Some(std::fs::read_to_string(&self.mark).unwrap_or_default());
        } else if self.spec.process != 0 {
            ours.lake_mark = None;
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        let wait =
            Duration::from_secs(left.as_secs_f64().ceil() as u64).max(Duration::from_secs(1));
        let body = serde_json::to_vec(&ours).expect("a hello serializes");
        let mut message = (body.len() as u64).to_be_bytes().to_vec();
        message.extend_from_slice(&body);
        let theirs = (|| -> std::io::Result<Result<Hello, String>> {
            stream.write_all(&message)?;
            // Every process sends its hello as soon as it is connected.
            stream.set_read_timeout(Some(wait))?;
            let mut len = [0u8; 8];
            stream.read_exact(&mut len)?;
            let len = u64::from_be_bytes(len);
            if len > MAX_HELLO_BYTES {
                return Ok(Err(format!(
                    "it announced {len} bytes where a hello was expected: is another program listening there?"
                )));
            }
            let mut body = vec![0u8; len as usize];
            stream.read_exact(&mut body)?;
            stream.set_read_timeout(None)?;
            Ok(serde_json::from_slice(&body).map_err(|e| format!("not an exoflow hello: {e}")))
        })();
        let theirs = match theirs {
            Ok(Ok(hello)) => hello,
            Ok(Err(reason)) => return self.refuse(failed(reason)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                let reason = format!(
                    "it sent no hello within {}: is another program listening there?",
                    humantime::format_duration(wait)
                );
                return self.refuse(failed(reason));
            }
            Err(e) => return self.refuse(failed(e.to_string())),
        };
        let what = match ours.differs(&theirs) {
            None if theirs.process != peer => {
                Some(format!("says it is process {}", theirs.process))
            }
            None if ours.lake_mark != theirs.lake_mark => Some(format!(
                "does not see the lake this process sees: {} differs between them (the lake must be one directory that every process sees)",
                self.mark.display()
            )),
            differs => differs,
        };
        match what {
            Some(what) => self.refuse(ClusterError::Mismatch {
                peer,
                address: address.clone(),
                what,
            }),
            None => Ok((stream, theirs)),
        }
    }
}

fn connect_once(address: &str) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::other(format!("{address} resolves to no address"));
    for addr in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                watch_link(&stream)?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// How long a connection may go without an answer from its peer (keepalive probes while it is
/// idle, unacknowledged data while it is not) before it counts as dropped.
const LINK_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes a connection whose peer's host is gone (no reset ever comes: a host down, a network
/// cut) fail within about [`LINK_TIMEOUT`], as a closed one does at once.
fn watch_link(stream: &TcpStream) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(LINK_TIMEOUT / 3)
        .with_interval(LINK_TIMEOUT / 6)
        .with_retries(3);
    socket.set_tcp_keepalive(&keepalive)?;
    socket.set_tcp_user_timeout(Some(LINK_TIMEOUT))
}

/// Refuses two processes that name the same source: their paths would be one path's.
fn unique_sources(hellos: &[Hello]) -> Result<(), ClusterError> {
    let mut named: Vec<(&str, usize)> = hellos
        .iter()
        .flat_map(|h| h.sources.iter().map(move |s| (s.as_str(), h.process)))
        .collect();
    named.sort();
    match named.windows(2).find(|w| w[0].0 == w[1].0) {
        Some(pair) => Err(ClusterError::DuplicateSource {
            name: pair[0].0.to_string(),
            first: pair[0].1,
            second: pair[1].1,
        }),
        None => Ok(()),
    }
}

impl Cluster {
    /// The replays of the other processes.
    pub fn peer_replays(&self) -> impl Iterator<Item = ReplayPlan> + '_ {
        (self.hellos.iter())
            .filter(|h| h.process != self.spec.process)
            .filter_map(|h| h.replay.clone())
    }

    /// Runs `func` on `threads` workers of this process, as part of the cluster's dataflow.
    /// A lost peer ends the process (see [`exit_on_lost_peer`]).
    pub fn execute<T, F>(self, threads: usize, func: F) -> Result<WorkerGuards<T>, String>
    where
        T: Send + 'static,
        F: Fn(&mut timely::worker::Worker) -> T + Send + Sync + 'static,
    {
        exit_on_lost_peer(self.spec.addresses.clone());
        let hooks = Hooks::default();
        let process =
            ProcessBuilder::new_typed_vector(threads, hooks.refill.clone(), hooks.spill.clone());
        let (builders, guard) = initialize_networking_from_sockets(
            process,
            self.sockets,
            self.spec.process,
            threads,
            hooks,
        )
        .map_err(|e| format!("cannot start the cluster's connections: {e}"))?;
        let builders = builders.into_iter().map(AllocatorBuilder::Tcp).collect();
        timely::execute::execute_from(
            builders,
            Box::new(guard),
            timely::WorkerConfig::default(),
            func,
        )
    }
}

/// How long a process that lost a peer waits before it exits: the peers that lose it next
/// must see the first loss before they see this one, so that each names the process that was
/// really lost.
const LOST_PEER_GRACE: Duration = Duration::from_secs(1);

/// Once a connection to a peer fails (timely's threads for it panic, named after the peer),
/// waits [`LOST_PEER_GRACE`], prints which peers were lost, first the first, and exits with
/// code 1: the dataflow cannot go on, and nothing past the last commit is committed. Other
/// panics keep the default hook.
pub fn exit_on_lost_peer(addresses: Vec<String>) {
    let lost: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let reporting = AtomicBool::new(false);
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("");
        let Some(peer) = name
            .strip_prefix("timely:recv-")
            .or_else(|| name.strip_prefix("timely:send-"))
            .and_then(|p| p.parse::<usize>().ok())
        else {
            return default(info);
        };
        let reason = (info.payload().downcast_ref::<String>().map(String::as_str))
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("connection failed")
            .to_string();
        {
            let mut lost = lost.lock().unwrap_or_else(|e| e.into_inner());
            if !lost.iter().any(|(p, _)| *p == peer) {
                lost.push((peer, reason));
            }
        }
        if reporting.swap(true, Ordering::AcqRel) {
            // The first loss's thread reports and exits; this one waits for it.
            loop {
                std::thread::park();
            }
        }
        std::thread::sleep(LOST_PEER_GRACE);
        let lost = lost.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let named: Vec<String> = lost
            .iter()
            .map(|(peer, _)| {
                let address = addresses.get(*peer).map_or("?", String::as_str);
                format!("process {peer} ({address})")
            })
            .collect();
        eprintln!(
            "error: lost {} of the cluster: {}; stopping. Nothing past the last commit was committed: restart every process to continue from it",
            named.join(", and then "),
            lost[0].1
        );
        std::process::exit(1);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_of(text: &str, processes: usize, process: usize) -> Result<ClusterSpec, ClusterError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.txt");
        std::fs::write(&path, text).unwrap();
        ClusterSpec::from_hostfile(processes, process, &path, Duration::from_secs(1))
    }

    #[test]
    fn a_hostfile_must_name_the_processes_once_each() {
        let spec = spec_of("# cluster\n127.0.0.1:7000\n\nlocalhost:7001  # b\n", 2, 1).unwrap();
        assert_eq!(spec.addresses, ["127.0.0.1:7000", "localhost:7001"]);
        for (text, processes, process, says) in [
            ("a:1\nb:2\n", 3, 0, "names 2 processes"),
            ("a:1\nb:2\n", 2, 2, "not one of its processes"),
            ("a:1\nb\n", 2, 0, "line 2 (\"b\") is not host:port"),
            (
                "# x\n\na:1\nb:0\n",
                2,
                0,
                "line 4 (\"b:0\") is not host:port",
            ),
            ("a:1\na:1\n", 2, 0, "named twice"),
        ] {
            let error = spec_of(text, processes, process).unwrap_err().to_string();
            assert!(error.contains(says), "{error}");
        }
    }
}
