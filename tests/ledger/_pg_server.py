"""
A private PostgreSQL instance for fault tests, on a free port in a temporary directory,
and a TCP proxy that can lose a server's answer.

PostgreSQL refuses to run as root, so ``initdb`` and the postmaster run as the
``postgres`` user (``subprocess`` with ``user=``, as runuser would). The shared cluster on
5432 is never touched: only the postmaster started here is signalled, by its own pid.
Readiness is a bounded poll, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

from ..conftest import need_service

READY_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), reverse=True)
    if found:
        return found[0].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PrivatePostgres:
    """One postmaster we own: start, stop (fast or immediate = a crash), restart, kill."""

    def __init__(self, root: Path) -> None:
        bindir = _bindir()
        if bindir is None:
            need_service("PostgreSQL binaries", "no postgres under /usr/lib/postgresql/*/bin")
        try:
            self.user = pwd.getpwnam("postgres")
        except KeyError:
            need_service("PostgreSQL", "there is no postgres user to run a private server as")
        if os.geteuid() != 0:
            need_service("PostgreSQL", "starting a private server as postgres needs root")
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._initdb()

    def _as_postgres(self) -> dict[str, object]:
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _initdb(self) -> None:
        os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
             "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            cwd=self.root,
            **self._as_postgres(),  # type: ignore[arg-type]
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        args = [
            str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
            "-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "max_connections=40",
            "-c", "shared_buffers=16MB", "-c", "logging_collector=off",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=log,
                cwd=self.root,
                **self._as_postgres(),  # type: ignore[arg-type]
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"postgres exited with {self.proc.returncode}: {tail}")
            try:
                with psycopg.connect(self.url, connect_timeout=1) as conn:
                    conn.execute("SELECT 1")
                    return
            except psycopg.OperationalError:
                time.sleep(0.02)  # polling for readiness, bounded by the deadline
        raise RuntimeError(f"private postgres on {self.port} not ready in {READY_TIMEOUT_S}s")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: SIGINT, a clean shutdown. ``immediate``: SIGQUIT, a crash (WAL replay)."""
        sig = {"fast": signal.SIGINT, "immediate": signal.SIGQUIT, "kill": signal.SIGKILL}[mode]
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None
        if mode == "kill":  # children outlive a SIGKILLed postmaster until they notice
            pid_file = self.data / "postmaster.pid"
            pid_file.unlink(missing_ok=True)

    def restart(self, mode: str = "immediate") -> None:
        self.stop(mode)
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A fresh, started instance; stopped and deleted afterwards."""
    root = Path(tempfile.mkdtemp(prefix="execbudget-pg-"))
    server: PrivatePostgres | None = None
    try:
        server = PrivatePostgres(root)
        server.start()
        yield server
    finally:
        if server is not None:
            server.stop("fast")
        shutil.rmtree(root, ignore_errors=True)


class LossyProxy:
    """
    A TCP proxy to a server that, when armed, forwards the next request but swallows its
    whole answer (up to ReadyForQuery) and closes the connection: the client's call fails
    although the server committed it, which is what a timeout after the fact looks like.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.armed = threading.Event()
        self.swallowed = threading.Event()
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._spawn(self._accept)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            self._spawn(self._pump, client, server, False)
            self._spawn(self._pump, server, client, True)

    def _pump(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        held = b""
        try:
            while data := src.recv(65536):
                if answers and self.armed.is_set():
                    held += data
                    # ReadyForQuery ('Z', length 5, status) ends the answer: it was committed.
                    if len(held) >= 6 and held[-6:-1] == b"Z\x00\x00\x00\x05":
                        self.armed.clear()
                        self.swallowed.set()
                        break
                    continue
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._closing = True
        # shutdown() wakes a thread blocked in accept() or recv(); close() alone does not.
        for sock in (self.listener, *self._sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)
