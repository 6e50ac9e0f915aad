"""
Two ways to steer a running fake provider: directly (same process) or over its admin API.

``FakeProvider`` talks to one of these and does not care which, so a test or benchmark can
move the server to another process without changing a line.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from typing import Any, Protocol

from execbudget.testing._config import FakeConfig
from execbudget.testing._state import ProviderState, RequestRecord, Stats

__all__ = ["Control", "HttpControl", "LocalControl"]

Predicate = Callable[[list[RequestRecord]], bool]


class Control(Protocol):
    def get_config(self) -> FakeConfig: ...
    def configure(self, changes: dict[str, Any]) -> FakeConfig: ...
    def reset(self) -> None: ...
    def records(self) -> list[RequestRecord]: ...
    def clear_records(self) -> None: ...
    def stats(self) -> Stats: ...
    def wait_for(self, predicate: Predicate, timeout: float) -> list[RequestRecord]: ...


class LocalControl:
    """The server runs on a thread of this process: read and change its state directly."""

    def __init__(self, state: ProviderState) -> None:
        self.state = state

    def get_config(self) -> FakeConfig:
        return self.state.config

    def configure(self, changes: dict[str, Any]) -> FakeConfig:
        return self.state.configure(**changes)

    def reset(self) -> None:
        self.state.reset()

    def records(self) -> list[RequestRecord]:
        return self.state.records

    def clear_records(self) -> None:
        self.state.clear_records()

    def stats(self) -> Stats:
        return self.state.stats

    def wait_for(self, predicate: Predicate, timeout: float) -> list[RequestRecord]:
        return self.state.wait_for(predicate, timeout)


class HttpControl:
    """The server runs in another process: use ``/_fake/*`` (stdlib HTTP, never a proxy)."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self._host = host
        self._port = port
        self._timeout = timeout

    def call(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout or self._timeout)
        try:
            payload = None if body is None else json.dumps(body)
            headers = {"content-type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if response.status >= 400:
            message = json.loads(data).get("error", data.decode()) if data else response.reason
            raise ValueError(f"fake provider {method} {path}: {response.status} {message}")
        return json.loads(data) if data else None

    def get_config(self) -> FakeConfig:
        return FakeConfig.from_dict(self.call("GET", "/_fake/config"))

    def configure(self, changes: dict[str, Any]) -> FakeConfig:
        return FakeConfig.from_dict(self.call("POST", "/_fake/config", changes))

    def reset(self) -> None:
        self.call("POST", "/_fake/reset")

    def records(self) -> list[RequestRecord]:
        return [RequestRecord.from_dict(r) for r in self.call("GET", "/_fake/requests")]

    def clear_records(self) -> None:
        self.call("DELETE", "/_fake/requests")

    def stats(self) -> Stats:
        return Stats.from_dict(self.call("GET", "/_fake/stats"))

    def wait_for(self, predicate: Predicate, timeout: float) -> list[RequestRecord]:
        # Another process cannot signal us; poll the log with a short back-off.
        deadline = time.monotonic() + timeout
        pause = 0.005
        while True:
            records = self.records()
            if predicate(records):
                return records
            if time.monotonic() >= deadline:
                raise TimeoutError(f"fake provider: condition not met within {timeout} s")
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
