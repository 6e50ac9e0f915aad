"""The gateway's parts alone: SSE framing, the ledger gate, settlement retries, kill probes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from execbudget.enforcer import Enforcer
from execbudget.errors import ConfigurationError
from execbudget.gateway import Secret, parse_upstreams
from execbudget.gateway.admission import CallRecord, probe_line, settle, settle_hold
from execbudget.gateway.chain import gateway_line
from execbudget.gateway.gated import GatedStorage
from execbudget.gateway.keys import KeyRecord
from execbudget.gateway.killswitch import kill_scope, killed_among, revive_scope
from execbudget.gateway.streaming import SSEDecoder
from execbudget.ledger import AsyncLedger, LineKey, LineRequest, MemoryStorage
from execbudget.ledger._ledger import ThreadedStorage


def test_sse_decoder_frames_across_chunks_and_line_endings() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'event: message_start\r\ndata: {"a"') == []
    events = decoder.feed(b": 1}\r\n\r\n: a comment\n\ndata: line one\ndata: line two\n\ndata")
    assert [(e.event, e.data) for e in events] == [
        ("message_start", '{"a": 1}'),
        (None, None),  # a comment (a keep-alive ping): relayed as it is
        (None, "line one\nline two"),
    ]
    assert events[0].raw.endswith(b"\n\n")
    assert [(e.event, e.data) for e in decoder.flush()] == [(None, "")]
    with pytest.raises(UnicodeDecodeError):
        SSEDecoder().feed(b"data: \xff\xfe\n\n")


class _Slow:
    """An async storage whose operations take a while, counting how many overlap."""

    scheme = "memory"
    base_exceptions: tuple[type[BaseException], ...] = ()

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    async def now_ms(self) -> int:
        self.now += 1
        self.peak = max(self.peak, self.now)
        await asyncio.sleep(0.01)
        self.now -= 1
        return 0


async def test_gated_storage_bounds_operations_in_flight() -> None:
    inner = _Slow()
    gated = GatedStorage(inner, 3)
    await asyncio.gather(*(gated.now_ms() for _ in range(20)))
    assert inner.peak == 3


class _Spy:
    """An async storage that records which read operations the ledger used."""

    scheme = "memory"
    base_exceptions: tuple[type[BaseException], ...] = ()

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.used: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name == "read_lines" and not hasattr(self._inner, "read_lines"):
            raise AttributeError(name)
        self.used.append(name)
        return getattr(self._inner, name)


async def test_gated_storage_passes_on_the_exact_read_of_named_lines() -> None:
    # Without it the ledger lists each scope's lines instead: a key scan on Redis.
    spy = _Spy(ThreadedStorage(MemoryStorage()))
    ledger = AsyncLedger(GatedStorage(spy, 4), url="memory://")
    key = LineKey("org:a", "total", "cost")
    await ledger.try_reserve([LineRequest(key, 100, 7)], ttl_s=60)
    spy.used.clear()

    (state,) = await ledger.read_lines([key])

    assert state is not None and state.held == 7
    assert spy.used == ["read_lines"]


async def test_gated_storage_without_read_lines_falls_back_to_listing() -> None:
    class _NoExactRead:
        scheme = "memory"
        base_exceptions: tuple[type[BaseException], ...] = ()

        async def lines(self, scope_prefix: str = "") -> list[Any]:
            return []

    gated = GatedStorage(_NoExactRead(), 4)
    assert gated.read_lines is None
    ledger = AsyncLedger(gated, url="memory://")

    assert await ledger.read_lines([LineKey("org:a", "total", "cost")]) == [None]


class _Flaky:
    """An async storage whose first ``fail`` settlements fail like an unreachable server."""

    scheme = "memory"
    base_exceptions: tuple[type[BaseException], ...] = (ConnectionError,)

    def __init__(self, inner: Any, fail: int) -> None:
        self._inner = inner
        self.fail = fail

    async def reserve(self, *args: Any, **kwargs: Any) -> Any:
        return await self._inner.reserve(*args, **kwargs)

    async def settle(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("server went away")
        return await self._inner.settle(*args, **kwargs)


async def test_a_refused_settlement_is_retried_until_it_lands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import execbudget.gateway.admission as admission

    monkeypatch.setattr(admission, "SETTLE_RETRIES_S", (0.01, 0.01, 0.01))
    memory = MemoryStorage()
    ledger = AsyncLedger(_Flaky(ThreadedStorage(memory), fail=2))  # type: ignore[arg-type]
    enforcer = Enforcer({"scopes": [{"match": "org:a", "limits": {"cost": "1 USD"}}]}, ledger)
    with enforcer.scope("org", "a"):
        hold = await enforcer.ahold({"cost": "0.5 USD"})
    record = CallRecord(hold=hold, held=dict(hold.amounts))
    await settle(enforcer, hold, {"cost": "0.2 USD"}, record)
    assert record.charged == {"cost": 200_000_000}
    for _ in range(100):
        if not memory.holds():
            break
        await asyncio.sleep(0.01)
    assert memory.holds() == []
    assert [(s.spent, s.held) for s in memory.lines("org:a")] == [(200_000_000, 0)]
    # releases too
    with enforcer.scope("org", "a"):
        other = await enforcer.ahold({"cost": "0.1 USD"})
    assert await settle_hold(enforcer, other, None, release=True) is True


async def test_probe_reads_one_line_without_writing() -> None:
    ledger = AsyncLedger(MemoryStorage())
    key = LineKey("org:a", "total", "cost")
    await ledger.reserve([LineRequest(key, 100, 30)])
    books = await probe_line(ledger, LineRequest(key, 100, 0))
    assert (books.limit, books.spent, books.held, books.room) == (100, 0, 30, 70)
    fresh = await probe_line(ledger, LineRequest(LineKey("org:b", "total", "cost"), 50, 0))
    assert fresh.room == 50
    assert len(await ledger.events()) == 1  # only the real reserve
    await ledger.block(key, "killed")
    assert (await probe_line(ledger, LineRequest(key, 100, 0))).room == 0


async def test_kill_probe_finds_every_killed_scope() -> None:
    ledger = AsyncLedger(MemoryStorage())
    scopes = ["org:a", "team:a/x", "key:k", "run:a/w#1"]
    await ledger.reserve([gateway_line(s) for s in scopes])
    assert await killed_among(ledger, scopes) == set()
    await kill_scope(ledger, "team:a/x")
    await kill_scope(ledger, "run:a/w#1")
    assert await killed_among(ledger, scopes) == {"team:a/x", "run:a/w#1"}
    await revive_scope(ledger, "team:a/x")
    assert await killed_among(ledger, scopes) == {"run:a/w#1"}


def test_secrets_and_upstreams() -> None:
    secret = Secret("sk-123")
    assert "sk-123" not in repr(secret) and "sk-123" not in str(secret)
    assert secret.reveal() == "sk-123"
    upstreams = parse_upstreams(
        ["openai=http://h:1/v1", "anthropic=http://h:2"],
        env={"EXECBUDGET_UPSTREAM_OPENAI_KEY": "a", "ANTHROPIC_API_KEY": "b"},
    )
    assert upstreams["openai"].url("/v1/chat/completions") == "http://h:1/v1/chat/completions"
    assert upstreams["anthropic"].url("/v1/messages") == "http://h:2/v1/messages"
    assert upstreams["openai"].api_key.reveal() == "a"
    for bad in (["gemini=http://h"], ["openai=ftp://h"], ["openai=http://a", "openai=http://b"]):
        with pytest.raises(ConfigurationError):
            parse_upstreams(bad, env={})


def test_allow_list_patterns() -> None:
    record = KeyRecord("k", "sha256:" + "0" * 64, "o", models=("gpt-4o-mini", "claude-*"))
    assert record.allows("GPT-4o-mini") and record.allows("claude-3-5-haiku-latest")
    assert not record.allows("gpt-4o")
    assert KeyRecord("k", "sha256:" + "0" * 64, "o").allows("anything")


def test_serve_freezes_the_started_heap_and_an_embedded_app_does_not(tmp_path: Any) -> None:
    """``gc.freeze`` is process-wide: ``serve`` asks for it, ``create_app`` alone does not."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import asyncio, dataclasses, gc, sys
        sys.path.insert(0, sys.argv[1])
        from tests.gateway._harness import config
        from execbudget.gateway import create_app

        async def started(freeze):
            cfg = dataclasses.replace(
                config(None, {"scopes": []}), freeze_heap=freeze
            )
            app = create_app(cfg)
            async with app.router.lifespan_context(app):
                return gc.get_freeze_count()

        print(asyncio.run(started(False)), asyncio.run(started(True)))
        """
    )
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", script, root], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    unfrozen, frozen = map(int, out.stdout.split())
    assert unfrozen == 0 and frozen > 10_000
    from execbudget.gateway.cli import build_config

    policy = tmp_path / "policy.yaml"
    policy.write_text("scopes: []\n", encoding="utf-8")
    served = build_config(
        {"policy": str(policy), "upstream": ["openai=http://127.0.0.1:9"],
         "ledger": "memory://", "default_max_tokens": 256, "max_body_bytes": 8 << 20,
         "kill_poll": 1.0, "upstream_timeout": 30.0, "log_bodies": False}
    )  # fmt: skip
    assert served.freeze_heap is True
