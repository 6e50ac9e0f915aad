"""
The provider routes: OpenAI ``/v1/chat/completions``, ``/v1/responses``, ``/v1/embeddings``,
``/v1/models``; Anthropic ``/v1/messages``; the free token-count routes; and
``/v1/execbudget/budget``, where a key reads its own chain.

A model call is: authenticate → read and check the body (413/400, nothing held) → the
key's scope chain (403 for a model outside its allow-list) → the invocation layer's
procedure (count, plan, hold on every scope and the gateway lines, send, settle) → the
answer with the remaining budget of the tightest scope in ``x-execbudget-*`` headers.

A whole (non-streamed) call's settlement is computed before the answer and written to
the ledger while the answer goes out (``ModelEndpoint``): the headers already show the
charge and the room it gives back, and a read of the ledger made the instant the answer
arrives (``/v1/execbudget/budget``, another process) can still see the hold for the
length of one ledger write. A hold this process refuses while its own settlements are
still writing waits for them and is tried once more (``admission._settled_meanwhile``), so
a client's next call is admitted on the room its previous answer showed. The settlement is
never skipped: not on a client disconnect, not on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

import httpx2
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..errors import BudgetExceeded, LedgerUnavailable, UnpricedModelError
from ..invocation.engine import (
    CHAT,
    DEFAULT_TIMEOUT_S,
    EMBEDDINGS,
    MESSAGES,
    RESPONSES,
    TTL_MARGIN_S,
    Api,
    Call,
    Started,
    StreamMeter,
)
from ..units import UNITS_PER_MONEY, Dimension, money_text
from .admission import (
    CallRecord,
    LineBooks,
    books_from_reserve,
    drive_call,
    least_rooms,
    read_lines,
)
from .app import Gateway, header_map, request_error
from .chain import Chain, RequestError, model_name_problem
from .keys import KeyRecord
from .logs import access_logger
from .replies import Dialect, denial_response, error_response, json_response, unavailable_response
from .streaming import GuardedStream, StreamContext, StreamOutcome
from .upstream import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    UpstreamStream,
    response_headers,
)

__all__ = ["model_routes"]

log = logging.getLogger("execbudget.gateway")

WORKFLOW_HEADER: Final = "x-execbudget-workflow"
RUN_HEADER: Final = "x-execbudget-run"
_MAX_FIELDS: Final = ("max_tokens", "max_completion_tokens", "max_output_tokens")
#: The provider APIs take 32-bit output limits; anything above is a client bug.
_MAX_OUT: Final = 2**31 - 1


# -- the request body ----------------------------------------------------------------------
async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The JSON object body, or a 400/413 ``RequestError`` saying what to change."""
    declared = header_map(request).get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestError(400, "Content-Length is not a number", code="bad_length") from None
        if size > limit:
            raise _too_large(limit)
    # The ASGI messages themselves, not ``request.stream()``: an async generator costs
    # more than the loop, and the body is read once, here.
    chunks: list[bytes] = []
    size = 0
    receive = request.receive
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.disconnect":
            raise RequestError(400, "the client closed the request body", code="body_incomplete")
        if kind != "http.request":
            continue
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not raw.strip():
        raise RequestError(400, "the request body is empty; send a JSON object", code="empty_body")
    try:
        data = json.loads(raw, parse_constant=_not_json)
    except (ValueError, RecursionError) as exc:
        detail = (
            exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc) or type(exc).__name__
        )
        raise RequestError(
            400,
            f"the request body is not valid JSON ({detail}); send a JSON object",
            code="invalid_json",
        ) from None
    if not isinstance(data, dict):
        raise RequestError(
            400,
            f"the request body must be a JSON object, found {type(data).__name__}",
            code="invalid_body",
        )
    return data


def _not_json(name: str) -> Any:
    """Python's parser accepts NaN and Infinity; JSON (and every provider) does not."""
    raise ValueError(f"{name} is not a JSON value")


def _too_large(limit: int) -> RequestError:
    return RequestError(
        413,
        f"the request body is larger than this gateway accepts ({limit:,} bytes)",
        code="body_too_large",
    )


#: Model names that passed ``model_name_problem`` (checked once, not on every call).
_GOOD_MODELS: set[Any] = set()
_MAX_GOOD_MODELS: Final = 4096


def check_body(api: Api, body: Mapping[str, Any]) -> tuple[str, bool]:
    """Fields the gateway must trust before counting: model, stream, output limits, n."""
    model = body.get("model")
    if type(model) is not str or model not in _GOOD_MODELS:
        problem = model_name_problem(model)
        if problem is not None:
            raise RequestError(400, problem, code="invalid_model", param="model")
        if len(_GOOD_MODELS) >= _MAX_GOOD_MODELS:
            _GOOD_MODELS.clear()
        _GOOD_MODELS.add(model)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise RequestError(
            400, "'stream' must be true or false", code="invalid_stream", param="stream"
        )
    if stream and api is EMBEDDINGS:
        raise RequestError(
            400, "embeddings do not stream; drop 'stream'", code="invalid_stream", param="stream"
        )
    for name in _MAX_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_OUT:
            raise RequestError(
                400,
                f"'{name}' must be a whole number from 1 to {_MAX_OUT:,}, found {value!r}",
                code="invalid_max_tokens",
                param=name,
            )
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 128):
        raise RequestError(
            400,
            f"'n' must be a whole number from 1 to 128, found {n!r}",
            code="invalid_n",
            param="n",
        )
    if api is MESSAGES and body.get("max_tokens") is None:
        raise RequestError(
            400,
            "'max_tokens' is required by the Messages API",
            code="invalid_max_tokens",
            param="max_tokens",
        )
    messages = body.get("messages")
    if api in (CHAT, MESSAGES):
        if not isinstance(messages, list) or not messages:
            raise RequestError(
                400,
                "'messages' must be a non-empty list of messages",
                code="invalid_messages",
                param="messages",
            )
        if not all(isinstance(m, dict) for m in messages):
            raise RequestError(
                400,
                "each entry of 'messages' must be an object",
                code="invalid_messages",
                param="messages",
            )
    if api is RESPONSES and body.get("background"):
        raise RequestError(
            400,
            "background responses are not accepted through the gateway: their output is "
            "billed after the answer returns, so it could not be held; drop 'background'",
            code="background_not_supported",
            param="background",
        )
    if api is EMBEDDINGS and body.get("input") in (None, "", []):
        raise RequestError(
            400, "'input' is required: a string or a list", code="invalid_input", param="input"
        )
    return str(body["model"]), stream


# -- the access record ---------------------------------------------------------------------
@dataclass(slots=True)
class Exchange:
    """One request through the gateway: its facts for logs, metrics and headers."""

    route: str
    started: float = field(default_factory=time.perf_counter)
    request_id: str = field(default_factory=lambda: os.urandom(8).hex())
    key: KeyRecord | None = None
    chain: Chain | None = None
    model: str | None = None
    sent_model: str | None = None
    sent_max: int | None = None
    stream: bool = False
    #: The client's max_tokens when the gateway sent less (clamped to the room or a cap).
    clamped_from: int | None = None
    status: int = 0
    decision: str = "error"
    denial: BudgetExceeded | None = None
    upstream_s: float | None = None
    outcome: str | None = None
    record: CallRecord = field(default_factory=CallRecord)
    #: The request body, kept only when the operator set ``log_bodies``.
    body: Any = None
    provider: str | None = None
    #: A whole call's settlement metrics, counted with the access log once it is answered.
    settled_due: bool = False

    def fields(self, gateway: Gateway) -> dict[str, Any]:
        currency = gateway.policy.currency
        out: dict[str, Any] = {
            "request_id": self.request_id,
            "route": self.route,
            "status": self.status,
            "decision": self.decision,
            "ms": round((time.perf_counter() - self.started) * 1000, 3),
        }
        if self.key is not None:
            out.update(key=self.key.id, org=self.key.org, team=self.key.team)
        if self.chain is not None:
            out["scopes"] = list(self.chain.scopes)
        if self.model is not None:
            out["model"] = self.model
        if self.sent_model is not None and self.sent_model != self.model:
            out["sent_model"] = self.sent_model
        if self.sent_max is not None:
            out["max_tokens_sent"] = self.sent_max
        if self.clamped_from is not None:
            out["clamped_from"] = self.clamped_from
        out["stream"] = self.stream
        if self.upstream_s is not None:
            out["upstream_ms"] = round(self.upstream_s * 1000, 3)
        if self.outcome is not None:
            out["outcome"] = self.outcome
        held = self.record.held
        if held:
            out["held"] = _readable(held, currency)
        if self.record.charged is not None:
            out["charged"] = _readable(self.record.charged, currency)
        if self.record.overrun:
            out["overrun"] = True
        if self.body is not None:
            text = json.dumps(self.body, ensure_ascii=False, default=str)
            out["request_body"] = text if len(text) <= 16_384 else text[:16_384] + "…"
        if self.denial is not None:
            out["denial"] = {
                "scope": self.denial.scope,
                "dimension": self.denial.dimension,
                "reason": self.denial.reason,
            }
        return out


def _readable(units: Mapping[str, int], currency: str) -> dict[str, Any]:
    return {
        dim: (f"{money_text(value)} {currency}" if dim == Dimension.COST else value)
        for dim, value in units.items()
    }


def _log(gateway: Gateway, ex: Exchange) -> None:
    """The access log and the metrics of an answered request (after the answer went out)."""
    metrics = gateway.metrics
    if ex.settled_due:
        ex.settled_due = False
        _settled(gateway, ex)
    if ex.upstream_s is not None and ex.provider is not None:
        metrics.upstream_latency.labels(ex.provider).observe(ex.upstream_s)
    metrics.requests.labels(ex.route, str(ex.status)).inc()
    logger = access_logger()
    if logger.isEnabledFor(logging.INFO):
        logger.info("request", extra={"fields": ex.fields(gateway)})


# -- budget headers ------------------------------------------------------------------------
def budget_headers(
    gateway: Gateway,
    ex: Exchange,
    books: list[LineBooks] | None,
    *,
    settled: bool,
) -> dict[str, str]:
    """
    ``x-execbudget-*``: the room left per dimension on the tightest scope (read after the
    hold, corrected by what settlement gives back), what was held and charged, the
    ``max_tokens`` sent. For a whole call the settlement is computed, not yet written,
    when these are sent (see the module docstring): they show the books as they will be
    once it lands, which is what they showed before it was deferred.
    """
    currency = gateway.policy.currency
    record = ex.record
    out: dict[str, str] = {"x-execbudget-request-id": ex.request_id}
    hold = record.hold
    if hold is not None:
        if hold.degraded:
            out["x-execbudget-degraded"] = "ledger-unavailable"
        else:
            out["x-execbudget-hold"] = hold.rid
    if "cost" in record.held:
        out["x-execbudget-held-cost"] = money_text(record.held["cost"])
    if settled and record.charged is not None and "cost" in record.charged:
        out["x-execbudget-charged-cost"] = money_text(record.charged["cost"])
    if ex.sent_max is not None:
        out["x-execbudget-max-tokens"] = str(ex.sent_max)
    if ex.clamped_from is not None:
        out["x-execbudget-clamped-from"] = str(ex.clamped_from)
    if ex.sent_model is not None and ex.sent_model != ex.model:
        out["x-execbudget-model"] = ex.sent_model
    if books:
        rooms = least_rooms(books)
        returned: dict[str, int] = {}
        if settled and record.charged is not None:
            returned = {
                dim: max(0, held - record.charged.get(dim, held))
                for dim, held in record.held.items()
            }
        tightest: str | None = None
        for dim, (room, scope) in sorted(rooms.items()):
            if room >= 2**62:
                continue
            room += returned.get(dim, 0)
            value = money_text(room) if dim == Dimension.COST else str(room)
            out[f"x-execbudget-remaining-{dim.replace('_', '-')}"] = value
            if dim == Dimension.COST or tightest is None:
                tightest = scope
        if tightest is not None:
            out["x-execbudget-remaining-scope"] = tightest
        out["x-execbudget-currency"] = currency
    return out


# -- model calls ---------------------------------------------------------------------------
class _UpstreamJSON(dict[str, Any]):
    """The provider's JSON answer, with its bytes (forwarded as they came) and headers."""

    raw: bytes = b""
    headers: dict[str, str] = {}  # noqa: RUF012 - replaced per instance


def _hide_usage(api: Api, body: Mapping[str, Any]) -> bool:
    if api is not CHAT:
        return False
    options = body.get("stream_options")
    return not (isinstance(options, Mapping) and options.get("include_usage"))


def _sent_max(api: Api, kwargs: Mapping[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = kwargs.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


class ModelEndpoint:
    """
    The ASGI app of one model route. The answer goes out first; the settlement's ledger
    write (started before it, as a task nobody cancels) is awaited after, so it is not on
    the client's path. A client that disconnects does not stop the settlement, and the
    gateway's shutdown awaits any still running (``Gateway.aclose``).
    """

    __slots__ = ("api", "dialect", "path", "provider")

    def __init__(self, api: Api, dialect: Dialect, path: str, provider: str) -> None:
        self.api, self.dialect, self.path, self.provider = api, dialect, path, provider

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        gateway: Gateway = scope["app"].state.gateway
        response, ex = await _answer(
            gateway, request, self.api, self.dialect, self.path, self.provider
        )
        try:
            await response(scope, receive, send)
        finally:
            if not isinstance(response, GuardedStream):
                _log(gateway, ex)
            if ex.record.settling is not None:
                await _settled_in_ledger(ex)


async def _settled_in_ledger(ex: Exchange) -> None:
    task = ex.record.settling
    assert task is not None
    # shielded: a cancelled request task (server shutdown) leaves the write running (the
    # gateway's aclose awaits it) and is still cancelled
    await asyncio.shield(task)


async def _answer(
    gateway: Gateway, request: Request, api: Api, dialect: Dialect, path: str, provider: str
) -> tuple[Response, Exchange]:
    """The response of one model call and its exchange record; never raises."""
    gateway.start()
    ex = Exchange(path)
    ex.record.defer_commit = True
    try:
        response = await _model_call(gateway, request, api, dialect, path, provider, ex)
        return (response.inner if isinstance(response, _StreamResponse) else response), ex
    except Exception:  # a bug: answer 500 in the dialect's shape, keep serving
        log.exception("gateway error on %s", path)
        hold = ex.record.hold
        if ex.record.settling is None and hold is not None and not hold.settled:
            with contextlib.suppress(Exception):  # the TTL frees it if the ledger is down too
                await hold.arelease()
        ex.status = 500
        return error_response(
            dialect,
            500,
            "gateway_error",
            "the gateway failed on this request; see its logs",
            code="gateway_error",
            retry=None,
        ), ex
    finally:  # cancelled too: the shutdown waits for the settlement
        if ex.record.settling is not None:
            gateway.track(ex.record.settling)


@dataclass(slots=True)
class _StreamResponse:
    inner: GuardedStream


async def _model_call(
    gateway: Gateway,
    request: Request,
    api: Api,
    dialect: Dialect,
    path: str,
    provider: str,
    ex: Exchange,
) -> Response | _StreamResponse:
    metrics = gateway.metrics
    ex.provider = provider
    try:
        ex.key = key = gateway.authenticate(request)
        body = await read_json(request, gateway.config.max_body_bytes)
        if gateway.config.log_bodies:
            ex.body = body
        model, stream = check_body(api, body)
        ex.model, ex.stream = model, stream
        if not gateway.pool.has(provider):
            raise RequestError(
                404, f"this gateway has no {provider} upstream", code="upstream_not_configured"
            )
        if not key.allows(model):
            raise RequestError(
                403,
                f"key {key.id!r} may not call model {model!r}",
                code="model_not_allowed",
                param="model",
            )
        headers = header_map(request)
        ex.chain = chain = gateway.chains.build(
            key, model, headers.get(WORKFLOW_HEADER), headers.get(RUN_HEADER)
        )
    except RequestError as exc:
        ex.status = exc.status
        ex.decision = "rejected"
        return request_error(dialect, exc)

    body.pop("timeout", None)  # an SDK option, never a body field
    call = Call(api, body, stream, gateway.enforcer, chain.frame, gateway.settings)
    incoming = list(request.headers.items())
    reads: asyncio.Task[list[LineBooks]] | None = None
    known: list[LineBooks] | None = None

    def room_from_reserve() -> None:
        nonlocal reads, known
        if ex.status:  # answered already (the upstream failed at once): nothing to show
            return
        known = books_from_reserve(gateway.enforcer, chain.frame, ex.record.books)
        if known is None:  # the reserve did not cover every line the headers show
            reads = asyncio.ensure_future(read_lines(gateway.enforcer, chain.frame))

    async def send(kwargs: dict[str, Any]) -> Any:
        nonlocal reads
        timeout = kwargs.pop("timeout", None)
        kwargs.pop("extra_headers", None)
        ex.sent_model = str(kwargs.get("model"))
        ex.sent_max = _sent_max(api, kwargs)
        asked = _sent_max(api, body)
        if asked is not None and ex.sent_max is not None and ex.sent_max < asked:
            ex.clamped_from = asked
            metrics.clamped.inc()
        began = time.perf_counter()
        loop = asyncio.get_running_loop()
        # Metrics and the room left are worked out while the provider works: the room
        # from the books the reserve returned (Redis), or else read.
        loop.call_soon(_admitted, gateway, ex, began - ex.started)
        if gateway.config.remaining_headers:
            if ex.record.books is not None:
                loop.call_soon(room_from_reserve)
            else:
                reads = asyncio.ensure_future(read_lines(gateway.enforcer, chain.frame))
        try:
            if stream:
                opened = await gateway.pool.open_stream(
                    provider, path, incoming, kwargs, timeout_s=timeout
                )
                return opened
            answer = await gateway.pool.send(
                provider, "POST", path, incoming, kwargs, timeout_s=timeout
            )
        finally:
            ex.upstream_s = time.perf_counter() - began
        try:
            data = json.loads(answer.content)
        except ValueError as err:
            raise APIError("the upstream answer is not JSON") from err
        if not isinstance(data, dict):
            raise APIError("the upstream answer is not a JSON object")
        out = _UpstreamJSON(data)
        out.raw = answer.content
        out.headers = response_headers(answer.headers)
        return out

    record = ex.record
    try:
        result = await drive_call(call, chain, send, record)
    except BudgetExceeded as denial:
        if isinstance(denial, UnpricedModelError):
            ex.status, ex.decision = 400, "rejected"
            return error_response(
                dialect,
                400,
                "invalid_request_error",
                str(denial),
                code="model_not_priced",
                param="model",
            )
        ex.status, ex.decision, ex.denial = 402, "denied", denial
        metrics.denials.labels(denial.dimension, denial.reason).inc()
        return denial_response(
            dialect,
            denial,
            gateway.enforcer.clock.now_ms(),
            {"x-execbudget-request-id": ex.request_id},
        )
    except LedgerUnavailable as exc:
        ex.status, ex.decision = 503, "ledger_unavailable"
        metrics.ledger_errors.labels("reserve").inc()
        return unavailable_response(dialect, exc)
    except APIStatusError as exc:
        _settled(gateway, ex)
        ex.status, ex.decision = exc.status_code, "upstream_error"
        metrics.upstream_errors.labels(provider, str(exc.status_code)).inc()
        headers = response_headers(exc.response.headers)
        headers.update(budget_headers(gateway, ex, None, settled=True))
        return Response(exc.body, exc.status_code, headers=headers)
    except APITimeoutError:
        _settled(gateway, ex)
        ex.status, ex.decision = 504, "upstream_timeout"
        metrics.upstream_errors.labels(provider, "timeout").inc()
        return error_response(
            dialect,
            504,
            "upstream_timeout",
            f"{provider} did not answer in time; the call was charged in full because the "
            "provider may have run it",
            retry=None,
            headers=budget_headers(gateway, ex, None, settled=True),
        )
    except APIConnectionError as exc:
        _settled(gateway, ex)
        ex.status, ex.decision = 502, "upstream_unreachable"
        metrics.upstream_errors.labels(provider, "connection").inc()
        return error_response(
            dialect,
            502,
            "upstream_unreachable",
            f"{exc}",
            retry=None,
            headers=budget_headers(gateway, ex, None, settled=True),
        )
    except APIError as exc:
        _settled(gateway, ex)
        ex.status, ex.decision = 502, "upstream_garbled"
        metrics.upstream_errors.labels(provider, "garbled").inc()
        return error_response(
            dialect,
            502,
            "upstream_error",
            f"{exc}; the call was charged in full",
            retry=None,
            headers=budget_headers(gateway, ex, None, settled=True),
        )
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
        if record.hold is not None:
            raise  # not the request's fault: a bug after the hold
        ex.status, ex.decision = 400, "rejected"
        return error_response(
            dialect,
            400,
            "invalid_request_error",
            f"cannot read this request: {exc}",
            code="invalid_request",
        )
    finally:
        if reads is not None and reads.done() is False and ex.status >= 400:
            reads.cancel()

    books = known if known is not None else await _books(reads)
    if isinstance(result, Started):
        return _StreamResponse(_stream(gateway, api, dialect, path, ex, chain, body, result, books))
    assert isinstance(result, _UpstreamJSON)
    ex.settled_due = True  # counted once answered (``_log``)
    ex.status, ex.decision = 200, "admitted"
    headers = dict(result.headers)
    headers.update(budget_headers(gateway, ex, books, settled=True))
    return Response(result.raw, 200, headers=headers)


async def _books(reads: asyncio.Task[list[LineBooks]] | None) -> list[LineBooks] | None:
    if reads is None:
        return None
    try:
        return await reads
    except Exception as exc:  # headers are a courtesy; the call itself went through
        log.warning("reading the remaining budget failed: %s", exc)
        return None


def _admitted(gateway: Gateway, ex: Exchange, admission_s: float) -> None:
    """Metrics of an admitted call (a callback while the provider works)."""
    metrics = gateway.metrics
    hold = ex.record.hold
    if hold is not None and not hold.degraded:
        metrics.admissions.labels(ex.route).inc()
        metrics.holds_in_flight.inc()
        metrics.cost_held.inc(ex.record.held.get("cost", 0) / UNITS_PER_MONEY)
    metrics.admission_latency.observe(admission_s)


def _settled(gateway: Gateway, ex: Exchange) -> None:
    """Metrics of a settled (non-streamed) call."""
    record = ex.record
    if record.hold is None or record.hold.degraded or record.charged is None:
        return
    metrics = gateway.metrics
    metrics.holds_in_flight.dec()
    metrics.cost_charged.inc(record.charged.get("cost", 0) / UNITS_PER_MONEY)
    if record.overrun:
        metrics.overruns.inc()


def _stream(
    gateway: Gateway,
    api: Api,
    dialect: Dialect,
    path: str,
    ex: Exchange,
    chain: Chain,
    body: Mapping[str, Any],
    started: Started,
    books: list[LineBooks] | None,
) -> GuardedStream:
    admitted = started.admitted
    upstream: UpstreamStream = started.stream
    meter = StreamMeter.begin(
        api, admitted.plan, admitted.price, gateway.counter, hide_usage=_hide_usage(api, body)
    )
    headers = dict(upstream.headers)
    headers.setdefault("content-type", "text/event-stream; charset=utf-8")
    headers["cache-control"] = "no-cache"
    headers.update(budget_headers(gateway, ex, books, settled=False))
    ex.status, ex.decision = 200, "admitted"
    # The hold was made with the invocation layer's TTL (the request timeout plus a
    # margin); a stream renews it at that length while it runs.
    timeout = admitted.timeout_s or gateway.settings.client_timeout_s or DEFAULT_TIMEOUT_S
    ttl = max(gateway.policy.hold_ttl_s, timeout + TTL_MARGIN_S)

    async def on_done(
        outcome: StreamOutcome, denial: BudgetExceeded | None, charged: dict[str, int] | None
    ) -> None:
        ex.outcome = outcome
        ex.denial = denial
        record = ex.record
        record.charged = charged
        if charged is not None:
            record.overrun = any(charged.get(d, 0) > a for d, a in record.held.items())
        metrics = gateway.metrics
        if outcome == "cut":
            metrics.streams_cut.labels("output_past_hold").inc()
        elif outcome == "killed":
            metrics.streams_cut.labels("killed").inc()
        elif outcome == "disconnect":
            metrics.client_disconnects.inc()
        _settled(gateway, ex)
        _log(gateway, ex)

    ctx = StreamContext(
        api=api,
        dialect=dialect,
        meter=meter,
        hold=admitted.hold,
        enforcer=gateway.enforcer,
        kill_watch=gateway.kill_watch,
        scopes=chain.scopes,
        ttl_s=ttl,
        headers=headers,
        on_done=on_done,
    )
    return GuardedStream(upstream, ctx)


# -- routes without a budget -------------------------------------------------------------
async def list_models(request: Request) -> Response:
    """The upstream's model list, filtered to what the key may call."""
    gateway: Gateway = request.app.state.gateway
    dialect: Dialect = "anthropic" if "anthropic-version" in request.headers else "openai"
    ex = Exchange("/v1/models")
    try:
        ex.key = key = gateway.authenticate(request)
        provider = dialect if gateway.pool.has(dialect) else next(iter(gateway.pool.upstreams))
        model_id = request.path_params.get("model_id")
        path = "/v1/models" + (f"/{quote(model_id, safe='')}" if model_id else "")
        if model_id and not key.allows(model_id):
            raise RequestError(
                404, f"model {model_id!r} is not available to this key", code="model_not_found"
            )
        answer = await gateway.pool.send(provider, "GET", path, list(request.headers.items()))
        data = answer.json()
        if not model_id and isinstance(data, dict) and isinstance(data.get("data"), list):
            data["data"] = [
                m
                for m in data["data"]
                if isinstance(m, dict) and isinstance(m.get("id"), str) and key.allows(m["id"])
            ]
        ex.status, ex.decision = 200, "passthrough"
        return json_response(data, 200, response_headers(answer.headers))
    except RequestError as exc:
        ex.status, ex.decision = exc.status, "rejected"
        return request_error(dialect, exc)
    except APIStatusError as exc:
        ex.status, ex.decision = exc.status_code, "upstream_error"
        return Response(exc.body, exc.status_code, headers=response_headers(exc.response.headers))
    except (APIConnectionError, ValueError, httpx2.HTTPError) as exc:
        ex.status, ex.decision = 502, "upstream_unreachable"
        return error_response(dialect, 502, "upstream_unreachable", f"{exc}", retry=None)
    finally:
        _log(gateway, ex)


async def free_passthrough(
    request: Request, dialect: Dialect, path: str, provider: str
) -> Response:
    """Token-count routes: free at the provider, so authenticated and forwarded unheld."""
    gateway: Gateway = request.app.state.gateway
    ex = Exchange(path)
    try:
        ex.key = key = gateway.authenticate(request)
        body = await read_json(request, gateway.config.max_body_bytes)
        problem = model_name_problem(body.get("model"))
        if problem is not None:
            raise RequestError(400, problem, code="invalid_model", param="model")
        if not key.allows(str(body["model"])):
            raise RequestError(
                403,
                f"key {key.id!r} may not use model {body['model']!r}",
                code="model_not_allowed",
                param="model",
            )
        if not gateway.pool.has(provider):
            raise RequestError(
                404, f"this gateway has no {provider} upstream", code="upstream_not_configured"
            )
        answer = await gateway.pool.send(
            provider, "POST", path, list(request.headers.items()), body
        )
        ex.status, ex.decision = answer.status_code, "passthrough"
        return Response(
            answer.content, answer.status_code, headers=response_headers(answer.headers)
        )
    except RequestError as exc:
        ex.status, ex.decision = exc.status, "rejected"
        return request_error(dialect, exc)
    except APIStatusError as exc:
        ex.status, ex.decision = exc.status_code, "upstream_error"
        return Response(exc.body, exc.status_code, headers=response_headers(exc.response.headers))
    except APIConnectionError as exc:
        ex.status, ex.decision = 502, "upstream_unreachable"
        return error_response(dialect, 502, "upstream_unreachable", f"{exc}", retry=None)
    finally:
        _log(gateway, ex)


async def my_budget(request: Request) -> Response:
    """The caller's own chain: limit, spent, held and room of each line (tenant-scoped)."""
    gateway: Gateway = request.app.state.gateway
    ex = Exchange("/v1/execbudget/budget")
    try:
        ex.key = key = gateway.authenticate(request)
        model = request.query_params.get("model")
        if model is not None and model_name_problem(model) is not None:
            raise RequestError(400, "invalid 'model' query parameter", code="invalid_model")
        chain = gateway.chains.build(
            key, model, request.headers.get(WORKFLOW_HEADER), request.headers.get(RUN_HEADER)
        )
        books = await read_lines(gateway.enforcer, chain.frame)
    except RequestError as exc:
        ex.status, ex.decision = exc.status, "rejected"
        return request_error("openai", exc)
    except LedgerUnavailable as exc:
        ex.status, ex.decision = 503, "ledger_unavailable"
        return unavailable_response("openai", exc)
    finally:
        _log(gateway, ex)
    currency = gateway.policy.currency
    lines = [_line_json(b, currency) for b in books]
    ex.status = 200
    return json_response({"scopes": list(chain.scopes), "currency": currency, "lines": lines})


def _line_json(book: LineBooks, currency: str) -> dict[str, Any]:
    key = book.line.key

    def show(units: int) -> Any:
        return money_text(units) if key.dimension == Dimension.COST else units

    return {
        "scope": key.scope,
        "window": key.window,
        "dimension": key.dimension,
        "limit": show(book.limit),
        "spent": show(book.spent),
        "held": show(book.held),
        "remaining": show(book.room),
        "blocked": book.blocked,
        "resets_at_ms": book.line.window_end_ms,
    }


#: The model routes: (path, api, dialect, provider).
MODEL_ROUTES: Final = (
    ("/v1/chat/completions", CHAT, "openai", "openai"),
    ("/v1/responses", RESPONSES, "openai", "openai"),
    ("/v1/embeddings", EMBEDDINGS, "openai", "openai"),
    ("/v1/messages", MESSAGES, "anthropic", "anthropic"),
)


def model_endpoints() -> dict[str, ModelEndpoint]:
    """The ASGI app of each model route's POST, by path."""
    return {
        path: ModelEndpoint(api, dialect, path, provider)  # type: ignore[arg-type]
        for path, api, dialect, provider in MODEL_ROUTES
    }


def model_routes(endpoints: Mapping[str, ModelEndpoint] | None = None) -> list[Route]:
    endpoints = endpoints if endpoints is not None else model_endpoints()

    def free(dialect: Dialect, path: str, provider: str) -> Any:
        async def endpoint(request: Request) -> Response:
            return await free_passthrough(request, dialect, path, provider)

        return endpoint

    return [
        *(Route(path, app, methods=["POST"]) for path, app in endpoints.items()),
        Route(
            "/v1/messages/count_tokens",
            free("anthropic", "/v1/messages/count_tokens", "anthropic"),
            methods=["POST"],
        ),
        Route(
            "/v1/responses/input_tokens",
            free("openai", "/v1/responses/input_tokens", "openai"),
            methods=["POST"],
        ),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", list_models, methods=["GET"]),
        Route("/v1/execbudget/budget", my_budget, methods=["GET"]),
    ]
