"""
What every scenario shares: the fake provider, the ledger, the provider's bill, the
simulator's safety cap and the provider load model.

The simulator measures spend where a real bill comes from: the fake provider's own log
(usage counted by *its* tokenizers, priced by the price book), never execbudget's ledger,
so a scenario cannot look contained because our own accounting under-counted. The ledger
is read separately, to check that every line stayed within its limit and no hold leaked.

Two things sit between the SDK clients and the provider, in an httpx transport every
client of a scenario shares:

* the **safety cap**: an unbudgeted run has, by definition, nothing that stops it, so the
  simulator stops it after a stated number of provider requests or seconds, and the report
  says so ("stopped by the simulator's safety cap"). It raises a ``BaseException`` so no
  SDK, framework or retry helper can swallow or retry it, like an operator pulling the
  plug. A budgeted run that reaches it counts as *not* contained.
* the **load model** (used by the cost-latency scenario): the provider answers more slowly
  the more of our requests it is serving, latency = base × (1 + in flight / capacity) ×
  a seeded log-normal jitter, sent as the fake provider's ``x-fake-latency-ms`` header.
  It is a stand-in for provider-side queueing, stated as such in the report.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import httpx

from ..enforcer import Enforcer
from ..errors import BudgetExceeded
from ..ledger import Ledger, LineState
from ..pricing import PriceBook, Usage
from .model import Point, Stop, Variant

if TYPE_CHECKING:
    import openai as openai_sdk

    from ..testing import FakeProvider, RequestRecord

__all__ = [
    "Harness",
    "LoadModel",
    "Probe",
    "Recording",
    "SafetyCap",
    "SafetyCapReached",
    "instructions",
    "stop_from_denial",
]

_API_KEY: Final = "fake-key"
#: how long to wait for requests still in flight when a variant ends
_DRAIN_S: Final = 15.0
_PLATFORM_KINDS: Final = frozenset({"org", "team", "key", "model", "tenant", "project"})
_ORCHESTRATION_DIMS: Final = frozenset({"fan_out", "concurrency", "time"})


class SafetyCapReached(BaseException):
    """
    The simulator stopped an unbounded run (a ``BaseException``: nothing may retry it).

    Derives from ``BaseException`` on purpose, like ``KeyboardInterrupt``: SDKs turn any
    ``Exception`` raised while sending into a retryable connection error, and agent
    frameworks feed tool errors back to the model; the cap must end the run instead.
    """


class SafetyCap:
    """At most ``max_requests`` provider requests and ``max_seconds`` of wall time."""

    def __init__(self, max_requests: int, max_seconds: float = 30.0) -> None:
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.started = time.monotonic()
        self.sent = 0
        self.tripped = False
        self._lock = threading.Lock()

    def check(self) -> None:
        """Count one request about to be sent; raise once the cap is reached (and after)."""
        with self._lock:
            late = time.monotonic() - self.started > self.max_seconds
            if self.tripped or self.sent >= self.max_requests or late:
                self.tripped = True
                raise SafetyCapReached(self.describe())
            self.sent += 1

    def describe(self) -> str:
        return f"{self.max_requests:,} requests or {self.max_seconds:g} s"


@dataclass(frozen=True, slots=True)
class LoadModel:
    """Provider latency that grows with the requests in flight (see the module docstring)."""

    base_ms: float
    capacity: float
    jitter_sigma: float = 0.35
    seed: int = 7

    def latency_ms(self, in_flight: int, rng: random.Random) -> float:
        jitter = math.exp(rng.gauss(0.0, self.jitter_sigma))
        return self.base_ms * (1.0 + in_flight / self.capacity) * jitter


class Probe:
    """
    Shared by the transports of one variant: the safety cap, the load model, and the
    latency of every request as the client saw it (until the response headers).
    """

    def __init__(self, cap: SafetyCap, load: LoadModel | None = None) -> None:
        self.cap = cap
        self.load = load
        self.in_flight = 0
        self.peak_in_flight = 0
        self.latencies_s: list[float] = []
        self._lock = threading.Lock()
        self._rng = random.Random(load.seed if load else 0)

    def before(self, request: httpx.Request) -> None:
        self.cap.check()
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            if self.load is not None:
                ms = self.load.latency_ms(self.in_flight, self._rng)
                request.headers["x-fake-latency-ms"] = f"{ms:.1f}"

    def after(self, started: float) -> None:
        elapsed = time.perf_counter() - started
        with self._lock:
            self.in_flight -= 1
            self.latencies_s.append(elapsed)

    def percentile_ms(self, q: float) -> float:
        """The ``q`` quantile (0–1) of request latency in milliseconds; 0 with no requests."""
        return percentile(self.latencies_s, q) * 1000


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank quantile: the smallest value with at least ``q`` of the values at or below."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


class _Transport(httpx.BaseTransport):
    def __init__(self, probe: Probe) -> None:
        self._probe = probe
        self._inner = httpx.HTTPTransport(limits=httpx.Limits(max_connections=256))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._probe.before(request)
        started = time.perf_counter()
        try:
            return self._inner.handle_request(request)
        finally:
            self._probe.after(started)

    def close(self) -> None:
        self._inner.close()


class _AsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, probe: Probe) -> None:
        self._probe = probe
        self._inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=256))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._probe.before(request)
        started = time.perf_counter()
        try:
            return await self._inner.handle_async_request(request)
        finally:
            self._probe.after(started)

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass(slots=True)
class Recording:
    """What the provider saw during one variant, read when the variant ends."""

    started_wall: float
    started: float = field(default_factory=time.perf_counter)
    records: list[RequestRecord] = field(default_factory=list)
    elapsed_s: float = 0.0


class Harness:
    """
    One simulation: a running fake provider, the ledger, the price book and a session tag
    that keeps this simulation's ledger lines apart from any earlier ones.
    """

    def __init__(self, provider: FakeProvider, ledger: Ledger, session: str) -> None:
        self.provider = provider
        self.ledger = ledger
        self.session = session
        self.book = PriceBook()
        self._enforcers: list[Enforcer] = []
        self._clients: list[httpx.Client] = []
        self._async_clients: list[httpx.AsyncClient] = []

    # -- clients -----------------------------------------------------------------------
    def http_client(self, probe: Probe) -> httpx.Client:
        """An httpx client through ``probe``; closed by ``close_clients``."""
        client = httpx.Client(transport=_Transport(probe), timeout=60.0)
        self._clients.append(client)
        return client

    def async_http_client(self, probe: Probe) -> httpx.AsyncClient:
        """The async twin; close it in its own event loop with ``aclose_clients``."""
        client = httpx.AsyncClient(transport=_AsyncTransport(probe), timeout=60.0)
        self._async_clients.append(client)
        return client

    def close_clients(self) -> None:
        """Close every sync client made so far (their pooled connections to the provider)."""
        clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    async def aclose_clients(self) -> None:
        """Close every async client made so far; await it in the loop that used them."""
        clients, self._async_clients = self._async_clients, []
        for client in clients:
            await client.aclose()

    def openai(self, probe: Probe, *, max_retries: int = 0) -> openai_sdk.OpenAI:
        """A real ``openai.OpenAI`` client pointed at the fake provider, through ``probe``."""
        import openai

        # An httpx (not httpx2) client: every openai release we support accepts one.
        http_client: Any = self.http_client(probe)
        return openai.OpenAI(
            base_url=self.provider.openai_base_url,
            api_key=_API_KEY,
            max_retries=max_retries,
            http_client=http_client,
        )

    def async_openai(self, probe: Probe, *, max_retries: int = 0) -> openai_sdk.AsyncOpenAI:
        import openai

        http_client: Any = self.async_http_client(probe)
        return openai.AsyncOpenAI(
            base_url=self.provider.openai_base_url,
            api_key=_API_KEY,
            max_retries=max_retries,
            http_client=http_client,
        )

    # -- budgets -----------------------------------------------------------------------
    def tag(self, scenario: str) -> str:
        """A scope instance unique to this simulation and scenario (``#`` suffix in keys)."""
        return f"{self.session}-{scenario}"

    def enforcer(self, policy: Mapping[str, Any]) -> Enforcer:
        """An enforcer for ``policy`` on the simulation's ledger."""
        enforcer = Enforcer(policy, self.ledger)
        self._enforcers.append(enforcer)
        return enforcer

    def lines(self, tag: str) -> list[LineState]:
        """Every ledger line of the scopes opened with instance ``tag`` (or ``tag.N``)."""
        found = []
        for line in self.ledger.lines(""):
            _, _, instance = line.key.scope.partition("#")
            if instance == tag or instance.startswith(f"{tag}."):
                found.append(line)
        return found

    def check_books(self, tag: str) -> list[str]:
        """
        Problems on the ledger lines of ``tag``: spent above the limit, an overrun, a
        blocked line, a hold still held after the variant ended. Empty when all is well.
        """
        problems = []
        for line in self.lines(tag):
            key = line.key
            where = f"{key.scope.split('#')[0]} {key.dimension} ({key.window})"
            if line.spent > line.limit:
                problems.append(f"{where}: spent {line.spent} above limit {line.limit}")
            if line.overrun:
                problems.append(f"{where}: overrun {line.overrun}")
            if line.blocked:
                problems.append(f"{where}: blocked ({line.blocked})")
            if line.held:
                problems.append(f"{where}: {line.held} still held")
        return problems

    def books(self, tag: str, scope: str, dimension: str) -> int:
        """
        What the ledger says was spent on ``dimension`` by the scopes of ``tag`` whose key
        starts with ``scope`` (a kind such as ``"run:"`` or a name such as ``"run:agent"``).
        """
        return sum(
            line.spent
            for line in self.lines(tag)
            if line.key.dimension == dimension and line.key.scope.startswith(scope)
        )

    # -- the provider's bill -----------------------------------------------------------
    @contextlib.contextmanager
    def recording(self) -> Iterator[Recording]:
        """Clear the provider's log, run the body, then read what it saw (in-flight drained)."""
        self.provider.clear_requests()
        rec = Recording(started_wall=time.time())
        try:
            yield rec
        finally:
            rec.elapsed_s = time.perf_counter() - rec.started
            with contextlib.suppress(TimeoutError):
                self.provider.wait_until(
                    lambda rs: all(r.status is not None for r in rs), timeout=_DRAIN_S
                )
            rec.records = self.provider.requests

    def cost_of(self, record: RequestRecord) -> Decimal:
        """What the provider bills for one request: its reported usage at list price."""
        if record.status != 200 or record.model is None:
            return Decimal(0)
        usage = Usage(
            input_tokens=record.input_tokens or 0, output_tokens=record.output_tokens or 0
        )
        return self.book.cost(record.model, usage)

    def bill(self, records: list[RequestRecord]) -> Decimal:
        return sum((self.cost_of(r) for r in records), Decimal(0))

    def timeline(self, rec: Recording, *, money: bool = True, capped: bool = False) -> list[Point]:
        """
        Cumulative spend (money, or requests) against seconds since the variant began, at
        the provider's arrival time of each request. A run the safety cap stopped ends at
        its last request; any other run at the end of the variant.
        """
        points: list[Point] = [(0.0, Decimal(0))]
        total = Decimal(0)
        for record in sorted(rec.records, key=lambda r: r.time):
            total += self.cost_of(record) if money else Decimal(1)
            points.append((max(0.0, record.time - rec.started_wall), total))
        if not capped:
            points.append((max(rec.elapsed_s, points[-1][0]), total))
        return points

    def variant(
        self,
        rec: Recording,
        mode: str,
        stop: Stop,
        *,
        capped: bool = False,
        money: bool = True,
        notes: Iterable[str] = (),
        books: Decimal | None = None,
        problems: Iterable[str] = (),
        metrics: Mapping[str, Any] | None = None,
    ) -> Variant:
        """A variant's result from what the provider saw (``money=False``: count requests)."""
        records = rec.records
        return Variant(
            mode=mode,
            spend=self.bill(records) if money else Decimal(len(records)),
            requests=len(records),
            answered=sum(1 for r in records if r.status == 200),
            elapsed_s=rec.elapsed_s,
            stop=stop,
            capped=capped,
            timeline=self.timeline(rec, money=money, capped=capped),
            notes=list(notes),
            books=books,
            problems=list(problems),
            metrics=dict(metrics or {}),
        )

    def close(self) -> None:
        self.close_clients()
        self._enforcers.clear()


def stop_from_denial(exc: BudgetExceeded) -> Stop:
    """Which layer and which budget a denial came from, for the report."""
    scope = exc.scope.split("#")[0]
    kind = scope.partition(":")[0]
    if exc.reason == "cap":
        layer = 1
    elif kind in _PLATFORM_KINDS:
        layer = 4
    elif exc.dimension in _ORCHESTRATION_DIMS or kind in ("workflow", "branch"):
        layer = 3
    else:
        layer = 2
    window = "" if exc.window == "total" else f"/{_window_name(exc.window)}"
    return Stop(layer, f"{exc.dimension} {exc.limit}{window} on {scope}")


def _window_name(window_id: str) -> str:
    return {"h": "hour", "d": "day", "w": "week", "m": "month"}.get(window_id[:1], window_id)


def instructions(tokens: int, topic: str) -> str:
    """
    Deterministic filler standing in for a real system prompt of about ``tokens`` tokens:
    production agents carry long instructions, and those input tokens dominate the bill of
    a runaway loop.
    """
    sentence = (
        f"You are the {topic} assistant of Acme. Follow the house style, cite the source of "
        "every figure, prefer the internal knowledge base over memory, never invent an "
        "account number, and escalate to a human when a request touches billing. "
    )
    words_per_sentence = len(sentence.split())
    # English prose runs about 1.3 tokens per word under the OpenAI encodings.
    repeats = max(1, round(tokens / (words_per_sentence * 1.3)))
    return sentence * repeats
