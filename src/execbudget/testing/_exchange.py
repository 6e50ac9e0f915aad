"""
One request in flight, and what every route shares: error bodies in each provider's shape,
SSE framing, paced streaming with latency / stall / disconnect handling, and the request log
entry that closes the exchange.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from execbudget.testing._config import RequestPlan
from execbudget.testing._state import ProviderState

__all__ = [
    "BadRequest",
    "Dialect",
    "Exchange",
    "Frame",
    "error_response",
    "sse",
    "wait_for_disconnect",
]

Dialect = Literal["openai", "anthropic"]

_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    408: ("timeout", None, "Request timed out."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}
_ANTHROPIC_ERRORS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
_RETRY_AFTER_STATUSES = frozenset({429, 503, 529})


class BadRequest(Exception):
    """A request the real API would reject too; answered in the dialect's error shape."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param


def error_response(
    dialect: Dialect,
    status: int,
    message: str | None = None,
    *,
    param: str | None = None,
    retry_after_ms: int | None = None,
    request_id: str = "req_fake",
) -> JSONResponse:
    """An error exactly as the provider's SDK expects to parse it."""
    headers: dict[str, str] = {}
    if retry_after_ms is not None and status in _RETRY_AFTER_STATUSES:
        headers["retry-after-ms"] = str(retry_after_ms)
        headers["retry-after"] = str(max(1, math.ceil(retry_after_ms / 1000)))
    if dialect == "anthropic":
        kind = _ANTHROPIC_ERRORS.get(status, "api_error")
        headers["request-id"] = request_id
        payload: dict[str, Any] = {
            "type": "error",
            "error": {"type": kind, "message": message or f"{kind} (fake provider)"},
            "request_id": request_id,
        }
    else:
        kind, code, default = _OPENAI_ERRORS.get(status, ("api_error", None, "Error."))
        headers["x-request-id"] = request_id
        payload = {
            "error": {"message": message or default, "type": kind, "param": param, "code": code}
        }
    return JSONResponse(payload, status_code=status, headers=headers)


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event. ``data`` is JSON-encoded unless it is already a string."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


@dataclass(frozen=True, slots=True)
class Frame:
    """An SSE frame; ``content`` frames carry output and are the ones paced and counted."""

    data: bytes
    tokens: int = 0
    content: bool = False


async def wait_for_disconnect(request: Request, closing: asyncio.Event) -> bool:
    """Wait until the client disconnects (True) or the server shuts down (False).

    Call only after the body was read: the next ASGI message is then the disconnect.
    """

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    client = asyncio.ensure_future(disconnected())
    server = asyncio.ensure_future(closing.wait())
    try:
        done, _ = await asyncio.wait({client, server}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        client.cancel()
        server.cancel()
    return client in done


class Exchange:
    """The request being answered: its body, the plan in force, and how to end it."""

    def __init__(
        self,
        *,
        state: ProviderState,
        request: Request,
        body: Mapping[str, Any],
        plan: RequestPlan,
        seq: int,
        dialect: Dialect,
        closing: asyncio.Event,
    ) -> None:
        self.state = state
        self.request = request
        self.body = body
        self.plan = plan
        self.config = plan.config
        self.seq = seq
        self.dialect = dialect
        self.closing = closing
        self._finished = False

    @property
    def request_id(self) -> str:
        return f"req_fake_{self.seq:08d}"

    async def delay(self) -> None:
        """The configured latency of a non-streamed answer."""
        if self.config.latency_ms > 0:
            await asyncio.sleep(self.config.latency_ms / 1000)

    def _finish_once(
        self, *, status: int, outcome: str, input_tokens: int, output_tokens: int
    ) -> None:
        if self._finished:
            return
        self._finished = True
        self.state.finish(
            self.seq,
            status=status,
            outcome=outcome,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )

    def json(
        self, payload: Mapping[str, Any], *, input_tokens: int, output_tokens: int
    ) -> JSONResponse:
        self._finish_once(
            status=200, outcome="ok", input_tokens=input_tokens, output_tokens=output_tokens
        )
        header = "request-id" if self.dialect == "anthropic" else "x-request-id"
        return JSONResponse(dict(payload), headers={header: self.request_id})

    def stream(self, frames: Iterable[Frame], *, input_tokens: int) -> StreamingResponse:
        header = "request-id" if self.dialect == "anthropic" else "x-request-id"
        body = self._paced(frames, input_tokens)

        async def settle() -> None:
            # When the client leaves, Starlette stops iterating and may leave the generator
            # suspended (or never started): close it now so its log entry has the tokens
            # really sent, then cover the never-started case.
            await body.aclose()
            self._finish_once(
                status=200, outcome="disconnected", input_tokens=input_tokens, output_tokens=0
            )

        return StreamingResponse(
            body,
            media_type="text/event-stream",
            headers={header: self.request_id, "cache-control": "no-cache"},
            background=BackgroundTask(settle),
        )

    async def _paced(
        self, frames: Iterable[Frame], input_tokens: int
    ) -> AsyncGenerator[bytes, None]:
        config = self.config
        sent_tokens = 0
        content_sent = 0
        outcome = "disconnected"
        try:
            for frame in frames:
                if frame.content:
                    delay = config.latency_ms if content_sent == 0 else config.chunk_delay_ms
                    if delay > 0:
                        await asyncio.sleep(delay / 1000)
                    stall = config.stall_after_chunks
                    if stall is not None and content_sent >= stall:
                        outcome = "stalled"
                        await self.closing.wait()  # the client leaving cancels this
                        return
                    content_sent += 1
                yield frame.data
                sent_tokens += frame.tokens
            outcome = "ok"
        finally:
            self._finish_once(
                status=200, outcome=outcome, input_tokens=input_tokens, output_tokens=sent_tokens
            )
