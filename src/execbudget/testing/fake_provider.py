"""
``FakeProvider``: the fake OpenAI / Anthropic server as a context manager.

    with FakeProvider(output_tokens=100) as fp:
        client = openai.OpenAI(base_url=fp.openai_base_url, api_key="x", max_retries=0)
        client.chat.completions.create(model="gpt-4o", messages=[...], max_tokens=10)
        assert fp.requests[-1].body["max_tokens"] == 10

By default uvicorn runs on a background thread of this process, and the request log and
configuration are plain objects (``fp.state``). With ``process=True`` it runs in a child
process, off this process's GIL and core, which is what benchmarks want; the same methods
then go over the ``/_fake`` admin API. Either way it listens on a free loopback port that
we bind before the server starts, and ``start()`` returns once it answers.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from execbudget.testing._cli import main
from execbudget.testing._config import FakeConfig
from execbudget.testing._control import Control, HttpControl, LocalControl
from execbudget.testing._server import ProviderServer, bind_loopback, build_server
from execbudget.testing._state import ProviderState, RequestRecord, Stats
from execbudget.testing._tokenizers import warm_tokenizers

if TYPE_CHECKING:
    import anthropic as anthropic_sdk
    import openai as openai_sdk

__all__ = ["FakeProvider", "main"]  # main: `execbudget fake-provider`

_API_KEY = "fake-key"


class FakeProvider:
    """
    A running fake provider. Use as a context manager, or ``start()`` / ``stop()``.

    ``config`` is the starting :class:`FakeConfig`; keyword arguments change fields of it
    (``FakeProvider(output_tokens=500, tool_call_policy="always")``). ``reset()`` returns
    to that starting point.
    """

    def __init__(
        self,
        config: FakeConfig | None = None,
        *,
        process: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 30.0,
        **changes: Any,
    ) -> None:
        base = config or FakeConfig()
        self._initial = base.replace(**changes) if changes else base
        self._process_mode = process
        self._host = host
        self._requested_port = port
        self._startup_timeout = startup_timeout
        self._port: int | None = None
        self._control: Control | None = None
        self._state: ProviderState | None = None
        self._server: ProviderServer | None = None
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> Self:
        """Start serving; returns once the server answers. Idempotent."""
        if self._control is not None:
            return self
        if self._process_mode:
            self._start_process()
        else:
            self._start_thread()
        return self

    def _start_thread(self) -> None:
        warm_tokenizers()  # before serving: loading one inside a request stalls the loop
        sock = bind_loopback(self._host, self._requested_port)
        self._port = int(sock.getsockname()[1])
        self._state = ProviderState(self._initial)
        self._server = build_server(self._state)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"fake-provider-{self._port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not self._server.ready.wait(0.05):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError("the fake provider thread did not start")
        self._control = LocalControl(self._state)

    def _start_process(self) -> None:
        sock = bind_loopback(self._host, self._requested_port)
        self._port = int(sock.getsockname()[1])
        # Closed in stop(): it must outlive this method, so no `with`.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        command = [
            sys.executable,
            "-m",
            "execbudget.testing",
            "--fd",
            str(sock.fileno()),
            "--config",
            json.dumps(self._initial.to_dict()),
        ]
        try:
            self._proc = subprocess.Popen(
                command,
                pass_fds=(sock.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
            )
        finally:
            sock.close()  # the child holds its own copy of the listening socket
        control = HttpControl(self._host, self._port)
        deadline = time.monotonic() + self._startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"the fake provider process exited with {self._proc.returncode}:\n"
                    + self._child_stderr()
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise TimeoutError("the fake provider process did not answer in time")
            try:
                control.call("GET", "/_fake/health", timeout=min(1.0, remaining))
                break
            except (OSError, http.client.HTTPException):
                continue  # still starting: the connection waited in the backlog
        self._control = control

    def _child_stderr(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return str(self._stderr.read().decode(errors="replace"))

    def stop(self) -> None:
        """Stop serving. Hanging and stalled requests are released first. Idempotent."""
        self._control = None
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None
            self._thread = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._control is not None

    def _ctl(self) -> Control:
        if self._control is None:
            raise RuntimeError("the fake provider is not running; use it as a context manager")
        return self._control

    # -- addresses -------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the fake provider has not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``, the server root."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """What to pass as ``base_url`` to ``openai.OpenAI``: the root plus ``/v1``."""
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """What to pass as ``base_url`` to ``anthropic.Anthropic`` (it adds ``/v1`` itself)."""
        return self.base_url

    @property
    def pid(self) -> int:
        """The process serving requests (this one, or the child with ``process=True``)."""
        return self._proc.pid if self._proc is not None else os.getpid()

    # -- configuration, log, counters ------------------------------------------------
    @property
    def state(self) -> ProviderState:
        """The live state (thread mode only; in process mode use the methods below)."""
        if self._state is None or self._process_mode:
            raise RuntimeError("state is only reachable in thread mode")
        return self._state

    @property
    def config(self) -> FakeConfig:
        return self._ctl().get_config()

    def configure(self, **changes: Any) -> FakeConfig:
        """Change the server-wide configuration now; returns the new configuration."""
        return self._ctl().configure(changes)

    def reset(self) -> None:
        """Starting configuration, empty request log, zero counters, fresh fault RNG."""
        self._ctl().reset()

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the request log, oldest first."""
        return self._ctl().records()

    def clear_requests(self) -> None:
        self._ctl().clear_records()

    @property
    def stats(self) -> Stats:
        return self._ctl().stats()

    def wait_until(
        self, predicate: Callable[[list[RequestRecord]], bool], timeout: float = 5.0
    ) -> list[RequestRecord]:
        """Block until ``predicate(request log)`` holds (``TimeoutError`` otherwise)."""
        return self._ctl().wait_for(predicate, timeout)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RequestRecord]:
        """Block until ``count`` requests have *finished* (status known)."""
        return self.wait_until(
            lambda rs: sum(1 for r in rs if r.status is not None) >= count, timeout
        )

    # -- SDK clients -----------------------------------------------------------------
    def openai(self, **kwargs: Any) -> openai_sdk.OpenAI:
        """An ``openai.OpenAI`` pointed here; ``max_retries=0`` unless given."""
        import openai

        kwargs.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=self.openai_base_url, api_key=_API_KEY, **kwargs)

    def async_openai(self, **kwargs: Any) -> openai_sdk.AsyncOpenAI:
        import openai

        kwargs.setdefault("max_retries", 0)
        return openai.AsyncOpenAI(base_url=self.openai_base_url, api_key=_API_KEY, **kwargs)

    def anthropic(self, **kwargs: Any) -> anthropic_sdk.Anthropic:
        """An ``anthropic.Anthropic`` pointed here; ``max_retries=0`` unless given."""
        import anthropic

        kwargs.setdefault("max_retries", 0)
        return anthropic.Anthropic(base_url=self.anthropic_base_url, api_key=_API_KEY, **kwargs)

    def async_anthropic(self, **kwargs: Any) -> anthropic_sdk.AsyncAnthropic:
        import anthropic

        kwargs.setdefault("max_retries", 0)
        return anthropic.AsyncAnthropic(
            base_url=self.anthropic_base_url, api_key=_API_KEY, **kwargs
        )
