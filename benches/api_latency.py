#!/usr/bin/env python3
"""API latency benchmark: how soon a file written into a watched directory shows in the live service.

Starts `exoflow watch TREE --out LAKE --http 127.0.0.1:PORT` on a free port, waits for `/readyz` 200,
then writes new files at a steady rate (each one written and closed; the time is taken right after
the close) and measures when each file's change is visible through the API:

- `/api/v1/stats?dimension=total&metric=files`, polled in a tight loop over one keep-alive
  connection (or every --poll-interval-ms; the time of a poll is when its answer arrived);
- one Server-Sent Events consumer of `/api/v1/stats/stream?dimension=total&metric=files`, summing
  the snapshot and the `diff` events (the push path: no polling granularity).

Attribution is count-based: the i-th file written is taken as visible once the total/files
statistic reaches (files before the run) + i. Every file is a new path, so the count only grows.

It prints p50/p99/max of both latencies, the watch's event-to-statistics latency histogram from
`/metrics` (`exoflow_event_to_stats_latency_seconds`, the observations of this run only) and its
own summary line, the watch's peak RSS (VmHWM) and the load average. With `--sse-clients N`, N
more stream clients (one process, non-blocking raw sockets, the unfiltered stream as a dashboard
reads it) are connected and read their streams continuously throughout the run.

The writer, the poller, the SSE consumer and the extra clients are separate processes (no shared
interpreter lock between them), on the same machine as the watch: they share its cores, and the
CPU seconds each used are printed. The watch's histogram starts at the event's receipt by the
watch; the external latencies also hold the time before that (the notification's delivery).

Usage:
  benches/api_latency.py [--rate 1000] [--writes 6000] [--sse-clients 0|200] [--commit-interval 100ms]
                         [--disk-pressure] [--exoflow PATH]
  benches/api_latency.py --compare [--repeat 2] [--sse-clients 200] ...
      runs without and with the extra stream clients, alternating (0, N, 0, N, ...), each run
      on a fresh watch, and prints the medians and the p99 growth in percent.
"""
import argparse
import json
import math
import multiprocessing as mp
import os
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import http.client

STATS_TOTAL = "/api/v1/stats?dimension=total&metric=files"
STREAM_TOTAL = "/api/v1/stats/stream?dimension=total&metric=files"
HISTOGRAM = "exoflow_event_to_stats_latency_seconds"
SUBDIRS = 20


# ---------------------------------------------------------------------------------------------
# The watch


class Watch:
    def __init__(self, exoflow, tree, lake, latency_ms, commit_interval, workdir):
        self.err_path = os.path.join(workdir, "watch.stderr")
        self.err = open(self.err_path, "w")
        cmd = [exoflow, "watch", tree, "--out", lake, "--http", "127.0.0.1:0"]
        if latency_ms is not None:
            cmd += ["--latency-ms", str(latency_ms)]
        if commit_interval is not None:
            cmd += ["--commit-interval", commit_interval]
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=self.err, stderr=self.err)
        self.host, self.port = "127.0.0.1", self._port()

    def _port(self):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"exoflow watch exited with {self.proc.returncode}:\n{self.stderr()}")
            m = re.search(r"serving on http://127\.0\.0\.1:(\d+)", self.stderr())
            if m:
                return int(m.group(1))
            time.sleep(0.05)
        sys.exit(f"exoflow watch did not say where it serves:\n{self.stderr()}")

    def stderr(self):
        with open(self.err_path) as f:
            return f.read()

    def get(self, path, timeout=10):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.get("/readyz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        sys.exit(f"/readyz was not 200 within {timeout} s:\n{self.stderr()}")

    def total_files(self):
        status, body = self.get(STATS_TOTAL)
        if status != 200:
            sys.exit(f"GET {STATS_TOTAL}: {status} {body[:200]!r}")
        return files_value(body)

    def memory(self):
        """(VmHWM, VmRSS) in KiB."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            text = f.read()
        get = lambda key: int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1))
        return get("VmHWM"), get("VmRSS")

    def cpu_seconds(self):
        """User and system CPU time of the watch so far (all its threads)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.err.close()
        return code


def files_value(body):
    rows = json.loads(body)["rows"]
    return sum(r["value"] for r in rows if r["dimension"] == "total" and r["metric"] == "files")


def parse_histogram(text, name=HISTOGRAM):
    """{le: cumulative count}, sum, count of one Prometheus histogram without labels."""
    buckets, total, count = {}, 0.0, 0
    for line in text.splitlines():
        m = re.match(rf'{name}_bucket\{{le="([^"]+)"\}} (\S+)', line)
        if m:
            buckets[float(m.group(1))] = float(m.group(2))
        elif line.startswith(f"{name}_sum "):
            total = float(line.split()[1])
        elif line.startswith(f"{name}_count "):
            count = float(line.split()[1])
    return buckets, total, count


def histogram_quantile(q, buckets):
    """Prometheus's histogram_quantile: linear within the bucket; None without observations."""
    bounds = sorted(buckets)
    count = buckets[bounds[-1]] if bounds else 0
    if count <= 0:
        return None
    rank, lower, below = q * count, 0.0, 0.0
    for le in bounds:
        if buckets[le] >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / max(buckets[le] - below, 1e-12)
        lower, below = le, buckets[le]
    return lower


# ---------------------------------------------------------------------------------------------
# The processes around it


def writer(tree, first, n, rate, go, out):
    """Writes n new files at `rate` per second from when `go` is set; sends the close times."""
    closed = [0.0] * n
    lag = 0.0
    go.wait()
    interval = 1.0 / rate
    start = next_at = time.monotonic()
    for i in range(n):
        k = first + i
        path = os.path.join(tree, f"d{k % SUBDIRS:02}", f"w{k}.txt")
        with open(path, "w") as f:
            f.write(f"TODO write {k}\n" if k % 3 == 0 else f"plain {k}\nline two {k * 7}\n")
        closed[i] = time.monotonic()
        lag = max(lag, closed[i] - next_at)
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    out.send((closed, start, time.monotonic(), lag, time.process_time()))


def poller(host, port, target, interval, ready, stop, out):
    """Polls total/files until it reaches `target`; sends its first value and every change."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    changes, polls, rtts, first, last = [], 0, [], None, None
    while not stop.is_set():
        sent = time.monotonic()
        conn.request("GET", STATS_TOTAL)
        resp = conn.getresponse()
        body = resp.read()
        t = time.monotonic()
        if resp.status != 200:
            out.send(("error", f"{resp.status} {body[:200]!r}"))
            return
        value = files_value(body)
        polls += 1
        if polls % 16 == 0:
            rtts.append(t - sent)
        if first is None:
            first = value
            ready.set()
        if value != last:
            changes.append((t, value))
            last = value
        if value >= target.value > 0:
            break
        if interval:
            time.sleep(interval)
    conn.close()
    out.send(("ok", first, changes, polls, rtts, time.process_time()))


class Dechunker:
    """Decodes an HTTP/1.1 chunked body incrementally."""

    def __init__(self):
        self.buf, self.left, self.done = b"", 0, False

    def feed(self, data):
        self.buf += data
        out = []
        while self.buf and not self.done:
            if self.left > 0:
                take = self.buf[: self.left]
                out.append(take)
                self.left -= len(take)
                self.buf = self.buf[len(take):]
                if self.left == 0:
                    self.left = -2  # the CRLF after the chunk
                continue
            if self.left < 0:
                if len(self.buf) < 2:
                    break
                self.buf, self.left = self.buf[2:], 0
                continue
            end = self.buf.find(b"\r\n")
            if end < 0:
                break
            size = int(self.buf[:end].split(b";")[0], 16)
            self.buf = self.buf[end + 2:]
            if size == 0:
                self.done = True
            self.left = size
        return b"".join(out)


def open_stream(host, port, path):
    """A raw socket with the request sent; returns (socket, leftover body bytes, chunked)."""
    s = socket.create_connection((host, port), timeout=30)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = s.recv(65536)
        if not data:
            raise ConnectionError("closed before the response head")
        head += data
    head, rest = head.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    if " 200 " not in lines[0] + " ":
        raise ConnectionError(f"stream answered {lines[0]}")
    chunked = any(l.lower().startswith("transfer-encoding:") and "chunked" in l.lower() for l in lines)
    return s, rest, chunked


def sse_consumer(host, port, target, ready, stop, out):
    """Sums the filtered stream's snapshot and diffs; sends the first value and every change."""
    try:
        s, rest, chunked = open_stream(host, port, STREAM_TOTAL)
    except (OSError, ConnectionError) as e:
        out.send(("error", str(e)))
        return
    s.settimeout(0.2)
    dechunk = Dechunker() if chunked else None
    text, value, first, changes, events, error = b"", None, None, [], 0, None
    data = rest
    while True:
        t = time.monotonic()
        text += dechunk.feed(data) if dechunk else data
        while b"\n\n" in text:
            block, text = text.split(b"\n\n", 1)
            kind, payload = "message", []
            for line in block.split(b"\n"):
                if line.startswith(b"event:"):
                    kind = line[6:].strip().decode()
                elif line.startswith(b"data:"):
                    payload.append(line[5:].lstrip(b" "))
            if not payload:
                continue
            body = b"\n".join(payload)
            if kind == "snapshot":
                value = first = files_value(body)
                changes.append((t, value))
                ready.set()
            elif kind == "diff":
                events += 1
                delta = files_value(body)
                if delta:
                    value += delta
                    changes.append((t, value))
            elif kind == "error":
                error = body.decode(errors="replace")
        if error or (value is not None and value >= target.value > 0) or stop.is_set():
            break
        try:
            data = s.recv(65536)
        except socket.timeout:
            data = b""
            continue
        if not data:
            error = error or "the server closed the stream"
            break
    s.close()
    out.send(("ok", first, changes, events, error, time.process_time()))


def sse_swarm(host, port, n, niceness, connected, ready, stop, out):
    """n unfiltered stream clients on raw non-blocking sockets, read continuously until `stop`."""
    if niceness:
        os.nice(niceness)
    sel = selectors.DefaultSelector()
    clients = {}
    failures = 0
    for _ in range(n):
        try:
            s = socket.create_connection((host, port), timeout=30)
            s.sendall(f"GET /api/v1/stats/stream HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      "Accept: text/event-stream\r\n\r\n".encode())
            s.setblocking(False)
            clients[s] = {"bytes": 0, "tail": b"", "snapshot": False, "diffs": 0, "errors": 0, "open": True}
            sel.register(s, selectors.EVENT_READ)
        except OSError:
            failures += 1
    connected.value = len(clients)
    pattern = re.compile(rb"event: (snapshot|diff|error)")
    with_snapshot = 0
    while not stop.is_set():
        for key, _ in sel.select(timeout=0.2):
            s, c = key.fileobj, clients[key.fileobj]
            try:
                data = s.recv(262144)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                c["open"] = False
                sel.unregister(s)
                s.close()
                continue
            c["bytes"] += len(data)
            joined = c["tail"] + data
            for m in pattern.finditer(joined):
                if m.end() <= len(c["tail"]):
                    continue
                kind = m.group(1)
                if kind == b"snapshot" and not c["snapshot"]:
                    c["snapshot"] = True
                    with_snapshot += 1
                    if with_snapshot == len(clients):
                        ready.set()
                elif kind == b"diff":
                    c["diffs"] += 1
                elif kind == b"error":
                    c["errors"] += 1
            c["tail"] = joined[-16:]
    still_open = sum(1 for c in clients.values() if c["open"])
    for s in list(clients):
        if clients[s]["open"]:
            s.close()
    diffs = [c["diffs"] for c in clients.values()]
    out.send({
        "clients": len(clients), "connect_failures": failures, "open_at_end": still_open,
        "bytes": sum(c["bytes"] for c in clients.values()),
        "diffs_min": min(diffs) if diffs else 0, "diffs_max": max(diffs) if diffs else 0,
        "errors": sum(c["errors"] for c in clients.values()),
        "cpu": time.process_time(),
    })


# ---------------------------------------------------------------------------------------------
# One run


def percentile(values, q):
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[k]


def attribute(closed, base, changes):
    """Latency of file i: the first change with value >= base + i + 1, minus its close time."""
    latencies, j = [], 0
    for i, c in enumerate(closed):
        need = base + i + 1
        while j < len(changes) and changes[j][1] < need:
            j += 1
        if j == len(changes):
            break
        latencies.append(changes[j][0] - c)
    return latencies


def summary(latencies):
    ms = [x * 1000 for x in latencies]
    return {"n": len(ms), "p50": percentile(ms, 0.5), "p99": percentile(ms, 0.99), "max": max(ms) if ms else float("nan")}


def disk_pressure(workdir, stop):
    """Writes 64 MiB files and fsyncs each, until stopped: every fsync of the watch then waits
    behind a disk that is busy, as on a machine that does other work."""
    path = os.path.join(workdir, "pressure.bin")
    block = b"\0" * (1 << 20)
    while not stop.is_set():
        with open(path, "wb") as f:
            for _ in range(64):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
    os.remove(path)


def run_once(args, sse_clients, label):
    ctx = mp.get_context("fork")
    workdir = tempfile.mkdtemp(prefix="exoflow-api-bench-")
    tree, lake = os.path.join(workdir, "tree"), os.path.join(workdir, "lake")
    for d in range(SUBDIRS):
        os.makedirs(os.path.join(tree, f"d{d:02}"))
    for k in range(args.seed_files):
        with open(os.path.join(tree, f"d{k % SUBDIRS:02}", f"seed{k}.txt"), "w") as f:
            f.write(f"seed {k}\n" + ("TODO seed\n" if k % 2 else ""))
    load_before = os.getloadavg()
    watch = Watch(args.exoflow, tree, lake, args.latency_ms, args.commit_interval, workdir)
    procs = []
    try:
        watch.wait_ready()
        deadline = time.monotonic() + 30
        while watch.total_files() < args.seed_files:
            if time.monotonic() > deadline:
                sys.exit("the seed files did not all show in /api/v1/stats")
            time.sleep(0.05)
        base = watch.total_files()

        stop = ctx.Event()
        target = ctx.Value("q", 0)
        swarm_pipe = None
        if sse_clients:
            connected, swarm_ready = ctx.Value("i", 0), ctx.Event()
            swarm_pipe, child = ctx.Pipe(duplex=False)
            p = ctx.Process(target=sse_swarm, args=(watch.host, watch.port, sse_clients, args.clients_nice, connected, swarm_ready, stop, child))
            p.start()
            procs.append(p)
            if not swarm_ready.wait(60):
                sys.exit(f"only {connected.value} of {sse_clients} stream clients connected and got a snapshot")
        if args.disk_pressure:
            p = ctx.Process(target=disk_pressure, args=(workdir, stop))
            p.start()
            procs.append(p)
        sse_ready, poll_ready, go = ctx.Event(), ctx.Event(), ctx.Event()
        sse_pipe, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=sse_consumer, args=(watch.host, watch.port, target, sse_ready, stop, child))
        p.start()
        procs.append(p)
        poll_pipe, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=poller, args=(watch.host, watch.port, target, args.poll_interval_ms / 1000, poll_ready, stop, child))
        p.start()
        procs.append(p)
        write_pipe, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=writer, args=(tree, 0, args.writes, args.rate, go, child))
        p.start()
        procs.append(p)
        if not (sse_ready.wait(30) and poll_ready.wait(30)):
            sys.exit("the stream consumer or the poller did not start")
        status, metrics_before = watch.get("/metrics")
        before, _, _ = parse_histogram(metrics_before.decode())
        target.value = base + args.writes
        time.sleep(0.2)
        cpu_start, wall_start = watch.cpu_seconds(), time.monotonic()
        go.set()
        closed, w_start, w_end, w_lag, w_cpu = write_pipe.recv()
        finish_by = time.monotonic() + args.drain
        results = {}
        for name, pipe in (("poll", poll_pipe), ("sse", sse_pipe)):
            while not pipe.poll(0.1):
                if time.monotonic() > finish_by:
                    stop.set()
            results[name] = pipe.recv()
        cpu_watch, wall = watch.cpu_seconds() - cpu_start, time.monotonic() - wall_start
        hwm, rss = watch.memory()
        status, metrics_after = watch.get("/metrics")
        after, h_sum, h_count = parse_histogram(metrics_after.decode())
        c_before, c_sum_before, c_count_before = parse_histogram(metrics_before.decode(), "exoflow_commit_duration_seconds")
        c_after, c_sum_after, c_count_after = parse_histogram(metrics_after.decode(), "exoflow_commit_duration_seconds")
        commits = (c_count_after - c_count_before, c_sum_after - c_sum_before,
                   min((le for le in c_after if c_after[le] - c_before.get(le, 0) >= c_count_after - c_count_before),
                       default=float("nan")))
        stop.set()
        swarm = swarm_pipe.recv() if swarm_pipe else None
        for p in procs:
            p.join(30)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        code = watch.stop()
    err = watch.stderr()
    load_after = os.getloadavg()
    own = re.search(r"latency over (\d+) events: p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms", err)
    if code != 0:
        print(err)
        sys.exit(f"exoflow watch exited with {code}")
    shutil.rmtree(workdir)

    out = {"label": label, "sse_clients": sse_clients, "base": base,
           "writes": args.writes, "write_seconds": w_end - w_start, "writer_max_lag_ms": w_lag * 1000,
           "hwm_mib": hwm / 1024, "rss_mib": rss / 1024, "load_before": load_before, "load_after": load_after,
           "swarm": swarm, "cmd": " ".join(watch.cmd), "commits": commits,
           "cpu": {"wall": wall, "watch": cpu_watch, "writer": w_cpu, "poller": results["poll"][-1],
                   "sse": results["sse"][-1], "clients": swarm["cpu"] if swarm else 0.0}}
    for name in ("poll", "sse"):
        r = results[name]
        if r[0] != "ok":
            sys.exit(f"the {name} consumer failed: {r[1]}")
        first, changes = r[1], r[2]
        if first != base:
            print(f"warning: the {name} consumer started at {first} files, not {base}")
        out[name] = summary(attribute(closed, first, changes))
        out[name]["final"] = changes[-1][1] if changes else first
        if name == "poll":
            out["polls"] = r[3]
            out["poll_rtt_ms"] = statistics.median(r[4]) * 1000 if r[4] else float("nan")
        else:
            out["sse_diff_events"] = r[3]
            out["sse_error"] = r[4]
    run_buckets = {le: after.get(le, 0) - before.get(le, 0) for le in after}
    out["hist"] = {
        "count": run_buckets.get(float("inf"), 0),
        "p50": (histogram_quantile(0.5, run_buckets) or float("nan")) * 1000,
        "p99": (histogram_quantile(0.99, run_buckets) or float("nan")) * 1000,
        "buckets": run_buckets,
    }
    out["own"] = own.groups() if own else None
    return out


def fmt(x):
    return f"{x:8.1f}" if x == x else "       -"


def print_run(r, args):
    print()
    print(f"== {r['label']}: {r['writes']} new files at {args.rate}/s "
          f"(took {r['write_seconds']:.2f} s, {r['writes'] / r['write_seconds']:.0f}/s; writer at most "
          f"{r['writer_max_lag_ms']:.1f} ms behind schedule), {r['sse_clients']} extra stream clients")
    print(f"   {r['cmd']}")
    print(f"   files before the run: {r['base']}; load average before {r['load_before'][0]:.2f}, "
          f"after {r['load_after'][0]:.2f} (1 min), {os.cpu_count()} cores shared with the load generators")
    rate = r['writes'] / r['write_seconds']
    if rate < 0.95 * args.rate:
        print(f"   warning: the writer did not hold {args.rate}/s (CPU-starved?): it wrote in bursts to catch up")
    print("   attribution: count-based (file i is visible once total/files >= files before + i)")
    print(f"   {'close -> visible (ms)':44} {'p50':>8} {'p99':>8} {'max':>8} {'files':>7}")
    for name, title in (("poll", f"/api/v1/stats polled ({r['polls']} polls, rtt p50 {r['poll_rtt_ms']:.2f} ms)"),
                        ("sse", f"/api/v1/stats/stream ({r['sse_diff_events']} diff events)")):
        s = r[name]
        missing = "" if s["n"] == r["writes"] else f"  ({r['writes'] - s['n']} never seen; last value {s['final']})"
        print(f"   {title:44} {fmt(s['p50'])} {fmt(s['p99'])} {fmt(s['max'])} {s['n']:7}{missing}")
    h = r["hist"]
    print(f"   {HISTOGRAM} (this run, {h['count']:.0f} events): p50 ~{h['p50']:.1f} ms, p99 ~{h['p99']:.1f} ms "
          "(interpolated in buckets)")
    prev, parts = 0, []
    for le in sorted(h["buckets"]):
        n = h["buckets"][le] - prev
        prev = h["buckets"][le]
        if n:
            parts.append(f"<= {le * 1000:g} ms: {n:.0f}" if le != float("inf") else f"more: {n:.0f}")
    print(f"     buckets: {', '.join(parts)}")
    if r["own"]:
        n, p50, p99, mx = r["own"]
        print(f"   the watch's own summary (whole run, {n} events): p50 {p50} ms, p99 {p99} ms, max {mx} ms")
    n, total, bound = r["commits"]
    print(f"   lake commits during the run: {n:.0f}, {total * 1000:.0f} ms in all, the longest <= {bound * 1000:g} ms "
          "(exoflow_commit_duration_seconds)")
    c = r["cpu"]
    print(f"   CPU seconds from the first write until every file showed ({c['wall']:.2f} s): watch "
          f"{c['watch']:.2f}, writer {c['writer']:.2f}, poller {c['poller']:.2f}, stream consumer {c['sse']:.2f}"
          + (f", extra stream clients {c['clients']:.2f}" if r["swarm"] else "")
          + " (the last four over their whole life)")
    print(f"   watch peak RSS (VmHWM) {r['hwm_mib']:.1f} MiB, RSS at the end {r['rss_mib']:.1f} MiB")
    if r["sse_error"]:
        print(f"   the stream consumer ended with: {r['sse_error']}")
    if r["swarm"]:
        w = r["swarm"]
        print(f"   extra stream clients: {w['clients']} connected ({w['connect_failures']} failed), "
              f"{w['open_at_end']} still open at the end, {w['bytes'] / 2**20:.1f} MiB read, "
              f"{w['diffs_min']}..{w['diffs_max']} diff events each, {w['errors']} error events")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--rate", type=int, default=1000, help="file writes per second (default 1000)")
    ap.add_argument("--writes", type=int, default=6000, help="new files written (default 6000)")
    ap.add_argument("--sse-clients", type=int, default=0,
                    help="extra stream clients reading throughout (default 0; with --compare 200)")
    ap.add_argument("--compare", action="store_true",
                    help="run without and with --sse-clients (200 unless given), alternating")
    ap.add_argument("--repeat", type=int, default=None,
                    help="runs of each configuration (default 1, with --compare 2)")
    ap.add_argument("--clients-nice", type=int, default=0,
                    help="niceness of the extra stream clients' process (default 0; on a small machine a "
                         "positive value keeps their own CPU use from delaying the writer and the observers)")
    ap.add_argument("--poll-interval-ms", type=float, default=0.0,
                    help="pause between two polls of /api/v1/stats (default 0: a tight loop)")
    ap.add_argument("--seed-files", type=int, default=100, help="files in the tree before the watch starts")
    ap.add_argument("--latency-ms", type=int, default=None, help="the watch's --latency-ms (default: its own)")
    ap.add_argument("--commit-interval", default=None, help="the watch's --commit-interval (default: its own)")
    ap.add_argument("--disk-pressure", action="store_true",
                    help="while writing, another process writes 64 MiB files with an fsync each, so that "
                         "the watch's fsyncs (its commits) wait for a busy disk")
    ap.add_argument("--drain", type=float, default=30.0,
                    help="seconds to wait after the last write for every file to show (default 30)")
    ap.add_argument("--exoflow", default="target/release/exoflow")
    args = ap.parse_args()
    if not os.path.exists(args.exoflow):
        sys.exit(f"{args.exoflow} not found: build it with cargo build --release")
    repeat = args.repeat or (2 if args.compare else 1)
    if args.compare:
        clients = args.sse_clients or 200
        plan = [c for _ in range(repeat) for c in (0, clients)]
    else:
        plan = [args.sse_clients] * repeat
    runs = []
    for k, c in enumerate(plan):
        r = run_once(args, c, f"run {k + 1}/{len(plan)}")
        print_run(r, args)
        runs.append(r)
        sys.stdout.flush()

    print()
    print(f"== summary: medians over runs ({repeat} per configuration), milliseconds; "
          f"load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    header = f"{'extra SSE clients':>17} {'runs':>4} {'poll p50':>8} {'poll p99':>8} {'poll max':>8} " \
             f"{'sse p50':>8} {'sse p99':>8} {'sse max':>8} {'hist p99':>8} {'RSS MiB':>8}"
    print(header)
    med = {}
    for c in sorted(set(plan)):
        rs = [r for r in runs if r["sse_clients"] == c]
        m = lambda f: statistics.median(f(r) for r in rs)
        med[c] = {"poll_p99": m(lambda r: r["poll"]["p99"]), "sse_p99": m(lambda r: r["sse"]["p99"]),
                  "hist_p99": m(lambda r: r["hist"]["p99"])}
        print(f"{c:17} {len(rs):4} {fmt(m(lambda r: r['poll']['p50']))} {fmt(med[c]['poll_p99'])} "
              f"{fmt(m(lambda r: r['poll']['max']))} {fmt(m(lambda r: r['sse']['p50']))} {fmt(med[c]['sse_p99'])} "
              f"{fmt(m(lambda r: r['sse']['max']))} {fmt(med[c]['hist_p99'])} {fmt(m(lambda r: r['hwm_mib']))}")
    if args.compare:
        clients = max(med)
        growth = lambda key: (med[clients][key] / med[0][key] - 1) * 100
        print(f"p99 growth with {clients} extra stream clients: /api/v1/stats polled {growth('poll_p99'):+.1f}%, "
              f"stream {growth('sse_p99'):+.1f}%, watch histogram {growth('hist_p99'):+.1f}% (target <= +10%)")
    print("target: p99 from close to visible in /api/v1/stats <= 50 ms")


if __name__ == "__main__":
    main()
