"""
Streaming proxy with in-stream enforcement: count output as it flows, cut, settle once.

Every server-sent event from the provider goes through the invocation layer's
``StreamMeter`` (the same one that guards SDK streams) before the client sees it:

* **deliver**: the event is forwarded byte for byte;
* **hide**: the usage chunk the gateway asked for (``stream_options.include_usage``) when
  the client did not;
* **cut**: the provider wrote past the ``max_tokens`` it was sent (the output's *lower*
  count passed the hold). The event is not forwarded, the upstream connection is closed
  and the client gets a proper end in its own dialect: ``finish_reason: "length"``
  (chat), ``stop_reason: "max_tokens"`` (messages), ``response.incomplete`` (responses),
  each carrying ``"execbudget": {"cut": "output_past_hold", ...}``. Exactly what a provider
  honouring ``max_tokens`` would have sent, with a machine-readable reason.

A **kill switch** ends the stream with an error event instead (both SDKs raise it), even if
the upstream is silent at that moment: the ``KillWatch`` cancels the read. A client that
goes away is noticed while the upstream is silent too (``http.disconnect`` is watched
concurrently), and the upstream request is closed at once.

Whatever ends the stream (the end, a cut, a kill, a disconnect, an upstream error, a
garbled event), the hold settles exactly once: reported usage when the provider sent it,
else the meter's local count, and the whole hold when the stream cannot be read.
Streams that outlive the hold's TTL extend it as they go.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..enforcer import Enforcer, Hold
from ..errors import BudgetExceeded, LedgerUnavailable
from ..invocation.engine import CHAT, MESSAGES, RESPONSES, Api, StreamMeter, Verdict, shielded
from .admission import killed_denial, settle_hold
from .killswitch import KillWatch
from .replies import Dialect, dumps
from .upstream import UpstreamStream

__all__ = ["GuardedStream", "SSEDecoder", "SSEEvent", "StreamOutcome"]

log = logging.getLogger("execbudget.gateway")

StreamOutcome = Literal["end", "cut", "killed", "disconnect", "upstream_error", "garbled"]

_MAX_EVENT_BYTES: Final = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SSEEvent:
    raw: bytes
    event: str | None
    data: str | None


class SSEDecoder:
    """Incremental server-sent-events framing; keeps each event's bytes for forwarding."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *blocks, rest = buffer.split(b"\n\n")
        if len(rest) > _MAX_EVENT_BYTES:
            raise ValueError("an upstream stream event is larger than 16 MiB")
        self._buffer = rest
        return [self._parse(block) for block in blocks if block.strip()]

    def flush(self) -> list[SSEEvent]:
        rest, self._buffer = self._buffer, b""
        return [self._parse(rest)] if rest.strip() else []

    @staticmethod
    def _parse(block: bytes) -> SSEEvent:
        event: str | None = None
        data: list[str] = []
        text = block.decode("utf-8")
        for line in text.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
        return SSEEvent(block + b"\n\n", event, "\n".join(data) if data else None)


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + dumps(data) + b"\n\n"


class _Terminal:
    """What the client sees when the gateway ends a stream, per API and dialect."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.last: dict[str, Any] = {}
        self.response: dict[str, Any] | None = None
        self.open_blocks: set[int] = set()
        self.include_usage = False

    def observe(self, data: dict[str, Any]) -> None:
        if self.api is CHAT:
            for key in ("id", "created", "model", "system_fingerprint"):
                if key in data:
                    self.last[key] = data[key]
        elif self.api is MESSAGES:
            kind = data.get("type")
            index = data.get("index")
            if kind == "content_block_start" and isinstance(index, int):
                self.open_blocks.add(index)
            elif kind == "content_block_stop" and isinstance(index, int):
                self.open_blocks.discard(index)
        elif self.api is RESPONSES:
            response = data.get("response")
            if isinstance(response, dict):
                self.response = response

    def cut(self, info: dict[str, Any], output_tokens: int) -> bytes:
        """The end a provider honouring max_tokens would have sent, plus our reason."""
        if self.api is CHAT:
            chunk = {
                **self.last,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}],
                "execbudget": info,
            }
            return _sse(chunk) + b"data: [DONE]\n\n"
        if self.api is MESSAGES:
            out = b"".join(
                _sse({"type": "content_block_stop", "index": i}, "content_block_stop")
                for i in sorted(self.open_blocks)
            )
            delta = {
                "type": "message_delta",
                "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
                "execbudget": info,
            }
            out += _sse(delta, "message_delta")
            return out + _sse({"type": "message_stop"}, "message_stop")
        response = dict(self.response or {})
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
        response["execbudget"] = info
        return _sse({"type": "response.incomplete", "response": response}, "response.incomplete")

    def error(self, dialect: Dialect, error: dict[str, Any]) -> bytes:
        """A terminal error event; both SDKs raise it as an API error."""
        if dialect == "anthropic":
            return _sse({"type": "error", "error": error}, "error")
        if self.api is RESPONSES:
            return _sse({"type": "error", "error": error, **error}, "error")
        return _sse({"error": error})


@dataclass(slots=True)
class StreamContext:
    """Everything a guarded stream needs besides the upstream bytes."""

    api: Api
    dialect: Dialect
    meter: StreamMeter
    hold: Hold
    enforcer: Enforcer
    kill_watch: KillWatch
    scopes: tuple[str, ...]
    ttl_s: float
    headers: dict[str, str]
    #: Called once after the hold settled: outcome, kill denial, ledger units charged.
    on_done: Callable[
        [StreamOutcome, BudgetExceeded | None, dict[str, int] | None], Awaitable[None]
    ]


class GuardedStream(Response):
    """An ASGI response that relays an upstream SSE stream under the meter (module doc)."""

    def __init__(self, upstream: UpstreamStream, ctx: StreamContext) -> None:
        # A Response for the router's sake; __call__ below does all the sending.
        self.status_code = 200
        self.background = None
        self.init_headers(ctx.headers)
        self.upstream = upstream
        self.ctx = ctx
        self.terminal = _Terminal(ctx.api)
        self.killed_by: str | None = None
        self.sent = 0

    # -- the relay ---------------------------------------------------------------------
    async def _pump(self, send: Send) -> StreamOutcome:
        ctx = self.ctx
        decoder = SSEDecoder()
        meter = ctx.meter
        extend_every = ctx.ttl_s / 3
        last_extend = time.monotonic()
        async for chunk in self.upstream.aiter_bytes():
            try:
                events = decoder.feed(chunk)
            except (ValueError, UnicodeDecodeError):
                return "garbled"
            for event in events:
                outcome = await self._relay(event, meter, send)
                if outcome is not None:
                    return outcome
            if time.monotonic() - last_extend > extend_every:
                last_extend = time.monotonic()
                try:
                    await ctx.enforcer.aledger.extend(ctx.hold.rid, ctx.ttl_s)
                except LedgerUnavailable as exc:  # a blip: the hold still has ttl/3 × 2 left
                    log.warning("renewing stream hold %s failed: %s", ctx.hold.rid, exc)
        try:
            tail = decoder.flush()
        except UnicodeDecodeError:
            return "garbled"
        for event in tail:
            outcome = await self._relay(event, meter, send)
            if outcome is not None:
                return outcome
        return "end"

    async def _relay(self, event: SSEEvent, meter: StreamMeter, send: Send) -> StreamOutcome | None:
        if event.data is None or event.data == "[DONE]":
            await self._send(send, event.raw)
            return None
        try:
            data = json.loads(event.data)
        except ValueError:
            return "garbled"
        if not isinstance(data, dict):
            return "garbled"
        try:
            verdict = meter.observe(data)
        except Exception:  # a chunk the adapters cannot read (wrong types): not countable
            return "garbled"
        if verdict is Verdict.CUT:
            return "cut"
        self.terminal.observe(data)
        if verdict is Verdict.DELIVER:
            await self._send(send, event.raw)
        return None

    async def _send(self, send: Send, body: bytes) -> None:
        self.sent += 1
        await send({"type": "http.response.body", "body": body, "more_body": True})

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return

    # -- ASGI --------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = self.ctx
        outcome: StreamOutcome = "disconnect"  # until the relay says otherwise
        denial: BudgetExceeded | None = None
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in ctx.headers.items()]
        pump: asyncio.Task[StreamOutcome] | None = None
        watch: asyncio.Task[None] | None = None
        ticket = None
        try:
            try:
                await send({"type": "http.response.start", "status": 200, "headers": headers})
            except OSError:
                return  # the client left before the first byte (settled in finally)
            pump = asyncio.ensure_future(self._pump(send))
            watch = asyncio.ensure_future(self._watch(receive))

            def on_kill(scope_key: str) -> None:
                self.killed_by = scope_key
                if pump is not None and not pump.done():
                    pump.cancel()

            ticket = ctx.kill_watch.register(ctx.scopes, on_kill)
            ctx.kill_watch.start()
            done, _ = await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
            if pump in done:
                if pump.cancelled():
                    outcome = "killed" if self.killed_by else "upstream_error"
                elif pump.exception() is not None:
                    exc = pump.exception()
                    outcome = "disconnect" if isinstance(exc, OSError) else "upstream_error"
                    if outcome == "upstream_error":
                        log.warning("upstream stream failed: %s: %s", type(exc).__name__, exc)
                else:
                    outcome = pump.result()
            else:
                outcome = "disconnect"
            if outcome == "disconnect" and self.killed_by:
                outcome = "killed"
        finally:
            for task in (pump, watch):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            if ticket is not None:
                ctx.kill_watch.unregister(ticket)
            with contextlib.suppress(Exception):
                await shielded(self.upstream.aclose())
            if outcome == "killed":
                denial = killed_denial(self.killed_by or "?")
            charged = await self._settle(outcome)
            await ctx.on_done(outcome, denial, charged)
        if outcome != "disconnect":
            with contextlib.suppress(OSError, RuntimeError):
                tail = self._tail(outcome, denial)
                if tail:
                    await send({"type": "http.response.body", "body": tail, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _tail(self, outcome: StreamOutcome, denial: BudgetExceeded | None) -> bytes:
        ctx = self.ctx
        if outcome == "cut":
            meter = ctx.meter
            info = {
                "cut": "output_past_hold",
                "allowance": meter.plan.allowance,
                "counted": meter.tally.lower,
                "message": "the provider wrote past the max_tokens the gateway sent; the "
                "stream was ended at the hold",
            }
            return self.terminal.cut(info, meter.plan.allowance)
        if outcome == "killed" and denial is not None:
            body = denial.to_dict()
            body.update(message=str(denial), code="budget_exceeded", param=None)
            return self.terminal.error(ctx.dialect, body)
        if outcome in ("upstream_error", "garbled"):
            kind = "upstream_error"
            message = (
                "the upstream stream ended with an error"
                if outcome == "upstream_error"
                else "the upstream sent an event the gateway cannot read; the stream was "
                "ended and charged in full"
            )
            return self.terminal.error(
                ctx.dialect, {"type": kind, "code": outcome, "message": message, "param": None}
            )
        return b""

    async def _settle(self, outcome: StreamOutcome) -> dict[str, int] | None:
        """Commit what the stream used (the whole hold if it could not be read)."""
        ctx = self.ctx
        actual = None if outcome == "garbled" else ctx.meter.actual()
        charged = dict(ctx.hold.amounts) if actual is None else ctx.enforcer.to_units(actual)
        try:
            await settle_hold(ctx.enforcer, ctx.hold, actual)
        except Exception as exc:  # never lose the stream's end over the books; the log says
            log.error("could not settle stream hold %s: %s", ctx.hold.rid, exc)
            return None
        return charged
