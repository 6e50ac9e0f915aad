"""
Redis ledger throughput: reserve+commit pairs per second and reserve latency on a 4-line
chain with one hot org line, against a private redis-server this script starts.

    python -m bench.bench_redis [--seconds S] [--procs 4 8]

* no persistence (``appendonly no``, no RDB): target ≥ 8k pairs/s, p99 reserve ≤ 1 ms;
* ``appendonly yes`` + ``appendfsync always``: target ≥ 3.5k pairs/s.

Client and server share the machine (loopback), as in the reference figures.
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

    def __init__(self, mode: str, directory: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", directory, "--save", ""]
        self.proc = subprocess.Popen([binary, *args, *MODES[mode]], stdout=subprocess.DEVNULL)
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


def redis_procs(mode: str, procs: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(mode, tmp)
        try:
            url = f"redis://127.0.0.1:{server.port}/0?prefix=bench:"
            # one untimed pair per process connects and loads the function library
            figures = race_pairs(url, procs, seconds, start_delay=2.0, warmup=1)
            with redis.Redis(port=server.port) as client:
                stats = client.info("commandstats").get("cmdstat_fcall", {})
        finally:
            server.stop()
    return emit(
        f"ledger.redis.{mode}.{procs}procs",
        **figures,
        server_us_per_fcall=stats.get("usec_per_call"),
        load_avg_1m=round(os.getloadavg()[0], 2),
        redis=server.version,
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--procs", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--modes", nargs="+", default=["nopersist", "always"], choices=MODES)
    args = parser.parse_args(argv)
    emit("machine", **machine())
    return [redis_procs(m, p, args.seconds) for m in args.modes for p in args.procs]


if __name__ == "__main__":
    main()
