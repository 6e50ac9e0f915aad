"""
Redis ledger throughput: reserve+commit pairs per second and reserve latency on a 4-line
chain with one hot org line, against a private redis-server this script starts.

    python -m bench.bench_redis [--seconds S] [--procs 4 8]

* no persistence (``appendonly no``, no RDB): target ≥ 8k pairs/s, p99 reserve ≤ 1 ms;
* ``appendonly yes`` + ``appendfsync always``: target ≥ 3.5k pairs/s.

Client and server share the machine (loopback), as in the reference figures.

Besides pairs/s and reserve latency each record says where the server's time went:
``server_us_per_fcall`` (Redis's own timing of the script), ``server_cpu_us_per_call``
and ``server_runq_wait_us_per_call`` (its main thread's CPU, and time it was runnable but
waiting for a CPU behind the client processes, from /proc/<pid>/schedstat), and with
persistence ``aof_bytes_per_pair`` and ``aof_rewrites`` (a rewrite during the run would
stall it). ``--trace`` adds ``fsyncs_per_pair`` (perf counting fdatasync): with
``appendfsync always`` Redis fsyncs once per event-loop pass, so this says how many
commands share one. ``--server-nice -10`` runs the server ahead of the clients, which
shows how much of the tail is CPU contention on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

import redis

from ._common import emit, machine, race_pairs

MODES = {
    "nopersist": ["--appendonly", "no"],
    "always": ["--appendonly", "yes", "--appendfsync", "always"],
    "everysec": ["--appendonly", "yes", "--appendfsync", "everysec"],
}


class Server:
    """A private redis-server on a free port, stopped on exit (never the shared one)."""

    def __init__(self, mode: str, directory: str, nice: int = 0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", directory, "--save", ""]
        self.proc = subprocess.Popen([binary, *args, *MODES[mode]], stdout=subprocess.DEVNULL)
        if nice:
            # the main thread (the one that runs commands and fsyncs); < 0 needs root
            os.setpriority(os.PRIO_PROCESS, self.proc.pid, nice)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with redis.Redis(port=self.port, socket_connect_timeout=0.2) as client:
                    client.ping()
                    self.version = str(client.info("server")["redis_version"])
                    return
            except redis.RedisError:
                time.sleep(0.02)
        raise SystemExit("redis-server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def schedstat(pid: int) -> tuple[int, int]:
    """(CPU ns, run-queue wait ns) of a process's main thread, from /proc."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            cpu, wait, _slices = f.read().split()
        return int(cpu), int(wait)
    except OSError:
        return 0, 0


PERF_ARGS = ("stat", "-x,", "-e", "syscalls:sys_enter_fdatasync")


def fsync_counter(pid: int, seconds: float) -> subprocess.Popen[str] | None:
    """``perf stat`` counting the server's fdatasync calls for ``seconds`` (None: no perf)."""
    perf = shutil.which("perf")
    if perf is None:
        return None
    return subprocess.Popen(
        [perf, *PERF_ARGS, "-p", str(pid), "--", "sleep", f"{seconds:.3f}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def fsyncs(counter: subprocess.Popen[str] | None) -> int | None:
    if counter is None:
        return None
    _, err = counter.communicate(timeout=60)
    for line in err.splitlines():
        head = line.split(",", 1)[0]
        if head.isdigit():
            return int(head)
    return None


def redis_procs(
    mode: str, procs: int, seconds: float, trace: bool, nice: int = 0
) -> dict[str, Any]:
    start_delay = 2.0 + procs * 0.15
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(mode, tmp, nice)
        try:
            url = f"redis://127.0.0.1:{server.port}/0?prefix=bench:"
            with redis.Redis(port=server.port) as client:
                aof_before = int(client.info("persistence").get("aof_current_size", 0))
            cpu0, wait0 = schedstat(server.proc.pid)
            counter = None
            if trace:
                # counts over the timed window only (it starts start_delay from now)
                counter = fsync_counter(server.proc.pid, start_delay + seconds)
            # one untimed pair per process connects and loads the function library
            figures = race_pairs(url, procs, seconds, start_delay=start_delay, warmup=1)
            cpu1, wait1 = schedstat(server.proc.pid)
            fsync_count = fsyncs(counter)
            with redis.Redis(port=server.port) as client:
                stats = client.info("commandstats").get("cmdstat_fcall", {})
                persistence = client.info("persistence")
        finally:
            server.stop()
    calls = int(stats.get("calls", 0)) or 1
    aof_bytes = int(persistence.get("aof_current_size", 0)) - aof_before
    extra: dict[str, Any] = {}
    if mode != "nopersist":
        extra = {
            "aof_bytes_per_pair": round(aof_bytes / max(1, calls / 2)),
            "aof_rewrites": persistence.get("aof_rewrites"),
            "fsyncs_per_pair": None
            if fsync_count is None
            else round(fsync_count / max(1, figures["pairs"]), 3),
        }
    return emit(
        f"ledger.redis.{mode}.{procs}procs",
        **figures,
        server_us_per_fcall=stats.get("usec_per_call"),
        # the server's main thread: CPU, and time it was runnable but waiting for a CPU
        server_cpu_us_per_call=round((cpu1 - cpu0) / 1000 / calls, 1),
        server_runq_wait_us_per_call=round((wait1 - wait0) / 1000 / calls, 1),
        **extra,
        **({"server_nice": nice} if nice else {}),
        load_avg_1m=round(os.getloadavg()[0], 2),
        redis=server.version,
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--procs", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--modes", nargs="+", default=["nopersist", "always"], choices=MODES)
    parser.add_argument(
        "--trace", action="store_true", help="count the server's fdatasync calls (perf stat)"
    )
    parser.add_argument(
        "--server-nice",
        type=int,
        default=0,
        help="run redis-server's main thread at this nice value (< 0 needs root): how much "
        "of the latency is the server waiting for a CPU behind the clients",
    )
    args = parser.parse_args(argv)
    emit("machine", **machine())
    return [
        redis_procs(m, p, args.seconds, args.trace, args.server_nice)
        for m in args.modes
        for p in args.procs
    ]


if __name__ == "__main__":
    main()
