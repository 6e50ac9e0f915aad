"""
The Starlette application: provider routes behind one pipeline, and the ``/_fake`` admin API.

Every provider request goes through the same steps, in this order, so a fault applies the
same way to every endpoint: parse the JSON body, log the request, overlay its ``x-fake-*``
headers, inject an error, hang, then let the route answer (the route applies latency and
pacing). Admin routes are never logged and never faulted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from execbudget.testing._anthropic_messages import count_message_tokens, messages
from execbudget.testing._config import plan_request
from execbudget.testing._exchange import (
    BadRequest,
    Dialect,
    Exchange,
    error_response,
    wait_for_disconnect,
)
from execbudget.testing._models import list_models, retrieve_model
from execbudget.testing._openai_chat import chat_completions
from execbudget.testing._openai_embeddings import embeddings
from execbudget.testing._openai_responses import count_input_tokens, responses
from execbudget.testing._state import ProviderState

__all__ = ["build_app"]

Handler = Callable[[Exchange], Awaitable[Response]]

_CLIENT_CLOSED = 499  # nginx's "client closed request": the client gave up first


def _dialect_of(request: Request, default: Dialect) -> Dialect:
    return "anthropic" if "anthropic-version" in request.headers else default


def _provider_endpoint(
    state: ProviderState, closing: asyncio.Event, handler: Handler, dialect: Dialect
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        which = _dialect_of(request, dialect)
        headers = {k.lower(): v for k, v in request.headers.items()}
        body: Any = {}
        parse_error: str | None = None
        if request.method == "POST":
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else {}
            except ValueError as exc:
                body, parse_error = None, f"the body is not valid JSON: {exc}"
            if parse_error is None and not isinstance(body, dict):
                parse_error = "the body must be a JSON object"
        seq = state.begin(method=request.method, path=request.url.path, body=body, headers=headers)
        request_id = f"req_fake_{seq:08d}"
        if parse_error is not None:
            state.finish(seq, status=400, outcome="invalid")
            return error_response(which, 400, parse_error, request_id=request_id)
        try:
            plan = plan_request(state.config, headers)
        except ValueError as exc:
            state.finish(seq, status=400, outcome="invalid")
            return error_response(which, 400, f"bad x-fake-* header: {exc}", request_id=request_id)
        if state.should_fail(plan):
            status = plan.config.error_status
            state.finish(seq, status=status, outcome="error")
            return error_response(
                which,
                status,
                retry_after_ms=plan.config.retry_after_ms,
                request_id=request_id,
            )
        if plan.config.hang:
            client_left = await wait_for_disconnect(request, closing)
            status = _CLIENT_CLOSED if client_left else 503
            state.finish(seq, status=status, outcome="hang")
            return error_response(which, 503, "fake provider shutting down", request_id=request_id)
        exchange = Exchange(
            state=state,
            request=request,
            body=body,
            plan=plan,
            seq=seq,
            dialect=which,
            closing=closing,
        )
        try:
            return await handler(exchange)
        except BadRequest as exc:
            state.finish(seq, status=exc.status, outcome="invalid")
            return error_response(
                which, exc.status, exc.message, param=exc.param, request_id=request_id
            )
        except Exception:
            state.finish(seq, status=500, outcome="crash")  # a bug here: show it in the log
            raise

    return endpoint


def _admin_routes(state: ProviderState) -> list[Route]:
    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def config(request: Request) -> Response:
        if request.method == "POST":
            try:
                changes = await request.json()
                if not isinstance(changes, Mapping):
                    raise ValueError("the body must be a JSON object of config changes")
                state.configure(**changes)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(state.config.to_dict())

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse(state.config.to_dict())

    async def requests(request: Request) -> Response:
        if request.method == "DELETE":
            state.clear_records()
            return Response(status_code=204)
        return JSONResponse([r.to_dict() for r in state.records])

    async def stats(request: Request) -> Response:
        return JSONResponse(state.stats.to_dict())

    return [
        Route("/_fake/health", health, methods=["GET"]),
        Route("/_fake/config", config, methods=["GET", "POST"]),
        Route("/_fake/reset", reset, methods=["POST"]),
        Route("/_fake/requests", requests, methods=["GET", "DELETE"]),
        Route("/_fake/stats", stats, methods=["GET"]),
    ]


def build_app(state: ProviderState, closing: asyncio.Event) -> Starlette:
    """The ASGI app over ``state``; setting ``closing`` ends hangs and stalls at shutdown."""

    def route(path: str, handler: Handler, dialect: Dialect, method: str = "POST") -> Route:
        endpoint = _provider_endpoint(state, closing, handler, dialect)
        return Route(path, endpoint, methods=[method])

    routes = [
        route("/v1/chat/completions", chat_completions, "openai"),
        route("/v1/responses", responses, "openai"),
        route("/v1/responses/input_tokens", count_input_tokens, "openai"),
        route("/v1/embeddings", embeddings, "openai"),
        route("/v1/messages", messages, "anthropic"),
        route("/v1/messages/count_tokens", count_message_tokens, "anthropic"),
        route("/v1/models", list_models, "openai", "GET"),
        route("/v1/models/{model:path}", retrieve_model, "openai", "GET"),
        *_admin_routes(state),
    ]
    return Starlette(routes=routes)
