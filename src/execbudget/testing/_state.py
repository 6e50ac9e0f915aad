"""
The fake provider's mutable state: configuration, request log, counters, fault RNG.

The server runs on its own event-loop thread (or in another process) while tests read the
log from theirs, so every access goes through one lock, and a condition variable lets a
test wait for "the server has seen N requests" without sleeping.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from execbudget.testing._config import FakeConfig, RequestPlan

__all__ = ["ProviderState", "RequestRecord", "Stats"]

_KEPT_HEADERS = frozenset(
    {"anthropic-version", "anthropic-beta", "user-agent", "content-type", "idempotency-key"}
)
_SECRET_HEADERS = frozenset({"x-api-key", "authorization", "x-goog-api-key"})


def selected_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers worth logging: ``x-*`` (fault knobs, SDK retry counter) and a few more.

    Credentials are never logged.
    """
    return {
        k: v
        for k, v in headers.items()
        if (k.startswith("x-") or k in _KEPT_HEADERS) and k not in _SECRET_HEADERS
    }


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """
    One request as the fake provider saw it.

    ``status`` and ``outcome`` are filled in when the request ends: ``"ok"``, ``"error"``
    (an injected fault), ``"invalid"`` (a 4xx the real API would give too), ``"hang"``,
    ``"stalled"``, ``"disconnected"`` (the client left first) or ``"crash"`` (a bug in the
    fake provider: its traceback is on stderr). ``output_tokens`` is what
    the provider generated and sent, which it bills even when usage is omitted.
    """

    seq: int
    time: float
    method: str
    path: str
    model: str | None
    body: Any
    headers: dict[str, str]
    stream: bool
    status: int | None = None
    outcome: str = "pending"
    input_tokens: int | None = None
    output_tokens: int | None = None

    @property
    def retry_count(self) -> int:
        """The SDK's ``x-stainless-retry-count``: 0 for a first attempt."""
        try:
            return int(self.headers.get("x-stainless-retry-count", "0"))
        except ValueError:
            return 0

    @property
    def read_timeout(self) -> float | None:
        """The SDK's read timeout for this attempt (``x-stainless-read-timeout``), if sent.

        This is how a test sees that a run's remaining deadline became the request timeout.
        """
        try:
            return float(self.headers["x-stainless-read-timeout"])
        except (KeyError, ValueError):
            return None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RequestRecord:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class Stats:
    """Counters since the last reset."""

    requests: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    errors_injected: int = 0
    invalid: int = 0
    hangs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stats:
        return cls(**data)


class ProviderState:
    """Everything the routes share. Thread-safe; the routes hold no state of their own."""

    def __init__(self, config: FakeConfig | None = None) -> None:
        self._initial = config or FakeConfig()
        self._cond = threading.Condition(threading.Lock())
        self._config = self._initial
        self._records: list[RequestRecord] = []
        self._seq = 0
        self._stats = Stats()
        self._rng = random.Random(self._initial.seed)

    # -- configuration ---------------------------------------------------------------
    @property
    def config(self) -> FakeConfig:
        return self._config

    def configure(self, **changes: Any) -> FakeConfig:
        """Apply ``changes`` to the server-wide config; a new seed restarts the fault RNG."""
        with self._cond:
            self._config = self._config.replace(**changes)
            if "seed" in changes:
                self._rng = random.Random(self._config.seed)
            return self._config

    def reset(self, config: FakeConfig | None = None) -> None:
        """Back to the initial (or given) config, an empty log, zero counters, fresh RNG."""
        with self._cond:
            self._config = config or self._initial
            self._records.clear()
            self._stats = Stats()
            self._rng = random.Random(self._config.seed)
            self._cond.notify_all()

    # -- request log -----------------------------------------------------------------
    def begin(
        self,
        *,
        method: str,
        path: str,
        body: Any,
        headers: Mapping[str, str],
    ) -> int:
        """Log a request as it arrives; returns its sequence number."""
        model = body.get("model") if isinstance(body, Mapping) else None
        stream = bool(body.get("stream")) if isinstance(body, Mapping) else False
        with self._cond:
            self._seq += 1
            record = RequestRecord(
                seq=self._seq,
                time=time.time(),
                method=method,
                path=path,
                model=model if isinstance(model, str) else None,
                body=body,
                headers=selected_headers(headers),
                stream=stream,
            )
            self._records.append(record)
            by_path = dict(self._stats.by_path)
            by_path[path] = by_path.get(path, 0) + 1
            self._stats = dataclasses.replace(
                self._stats, requests=self._stats.requests + 1, by_path=by_path
            )
            self._cond.notify_all()
            return record.seq

    def finish(
        self,
        seq: int,
        *,
        status: int,
        outcome: str,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> None:
        """Record how a request ended and count what it billed."""
        with self._cond:
            for i in range(len(self._records) - 1, -1, -1):
                if self._records[i].seq == seq:
                    self._records[i] = dataclasses.replace(
                        self._records[i],
                        status=status,
                        outcome=outcome,
                        input_tokens=input_tokens,
                        output_tokens=output_tokens,
                    )
                    break
            s = self._stats
            self._stats = dataclasses.replace(
                s,
                errors_injected=s.errors_injected + (outcome == "error"),
                invalid=s.invalid + (outcome == "invalid"),
                hangs=s.hangs + (outcome in ("hang", "stalled")),
                input_tokens=s.input_tokens + (input_tokens or 0),
                output_tokens=s.output_tokens + (output_tokens or 0),
            )
            self._cond.notify_all()

    @property
    def records(self) -> list[RequestRecord]:
        with self._cond:
            return list(self._records)

    def clear_records(self) -> None:
        with self._cond:
            self._records.clear()
            self._cond.notify_all()

    @property
    def stats(self) -> Stats:
        with self._cond:
            return self._stats

    def wait_for(
        self, predicate: Callable[[list[RequestRecord]], bool], timeout: float
    ) -> list[RequestRecord]:
        """Block until ``predicate(records)`` holds; ``TimeoutError`` after ``timeout`` s."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self._records), timeout):
                raise TimeoutError(f"fake provider: condition not met within {timeout} s")
            return list(self._records)

    # -- faults ----------------------------------------------------------------------
    def should_fail(self, plan: RequestPlan) -> bool:
        """Decide whether this request gets an injected error (consumes ``fail_next``)."""
        if plan.forced_error or plan.retry_count < plan.fail_attempts:
            return True
        with self._cond:
            if self._config.fail_next > 0:
                self._config = dataclasses.replace(
                    self._config, fail_next=self._config.fail_next - 1
                )
                return True
            rate = plan.config.error_rate
            if rate <= 0.0:
                return False
            if rate >= 1.0:
                return True
            return self._rng.random() < rate
