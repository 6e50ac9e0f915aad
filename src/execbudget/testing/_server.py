"""
Serving the app with uvicorn on a loopback socket we bind ourselves.

Binding first (port 0 → a free port) and handing uvicorn the socket avoids the race of
"find a free port, then hope nobody takes it". The uvicorn ``Server`` subclass adds two
things: an event that says "listening" (so callers poll readiness instead of sleeping), and
setting the app's ``closing`` event as shutdown begins, so hanging and stalled requests end
and never hold the server up.
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType

import uvicorn

from execbudget.testing._app import build_app
from execbudget.testing._config import FakeConfig
from execbudget.testing._state import ProviderState

__all__ = ["ProviderServer", "bind_loopback", "build_server", "serve"]

# Real providers keep idle connections open far longer than uvicorn's 5 s default; a short
# keep-alive makes pooled SDK connections race the server's close.
_KEEP_ALIVE_S = 120
_GRACEFUL_SHUTDOWN_S = 3


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_loopback(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on a loopback address (``port=0`` picks a free port)."""
    if not _is_loopback(host):
        raise ValueError(f"the fake provider only listens on loopback, not {host!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto is
    # IPPROTO_TCP, and without it every response waits ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


class ProviderServer(uvicorn.Server):
    """uvicorn's server, plus a readiness event and hang release on shutdown."""

    def __init__(
        self,
        config: uvicorn.Config,
        closing: asyncio.Event,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.ready = threading.Event()
        self._closing = closing
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.ready.set()
            if self._on_ready is not None:
                self._on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._closing.set()
        await super().shutdown(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn re-raises the signal once shut down, so the process dies by it; for us
        # SIGTERM / Ctrl-C is the normal way to stop, so a clean stop exits with status 0.
        # A second Ctrl-C still forces the exit.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def build_server(
    state: ProviderState,
    *,
    log_level: str = "warning",
    on_ready: Callable[[], None] | None = None,
) -> ProviderServer:
    """A server for ``state``; run it with ``server.run(sockets=[sock])``."""
    closing = asyncio.Event()
    config = uvicorn.Config(
        build_app(state, closing),
        log_config=None,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        ws="none",
        http="h11",
        loop="asyncio",
        timeout_keep_alive=_KEEP_ALIVE_S,
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
    )
    return ProviderServer(config, closing, on_ready)


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    config: FakeConfig | None = None,
    fd: int | None = None,
    log_level: str = "warning",
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """
    Run the fake provider in this thread until SIGINT / SIGTERM (blocking).

    ``fd`` serves an inherited, already listening socket (how ``FakeProvider(process=True)``
    hands its port to the child); otherwise ``host``/``port`` are bound here. ``on_ready``
    gets the port once the server accepts connections.
    """
    sock = socket.socket(fileno=fd) if fd is not None else bind_loopback(host, port)
    bound_port = int(sock.getsockname()[1])
    server = build_server(
        ProviderState(config),
        log_level=log_level,
        on_ready=(lambda: on_ready(bound_port)) if on_ready is not None else None,
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
