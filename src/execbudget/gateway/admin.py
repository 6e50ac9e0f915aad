"""
The admin API (``/admin/v1/...``), behind admin keys only; client keys get 403.

    GET    /admin/v1/usage?scope=PREFIX     lines: limit, spent, held, remaining, blocked
    PUT    /admin/v1/limits                 {"scope", "dimension", "window", "limit"}: set,
                                            raise or clear (null) an operator limit
    POST   /admin/v1/kill                   {"scope"}: hard cut-off, next request and streams
    POST   /admin/v1/revive                 {"scope"}: lift a kill
    POST   /admin/v1/unblock                {"scope", ["window", "dimension"]}: lift the
                                            block an overrun left (after looking at it)
    GET    /admin/v1/kills                  killed scopes
    GET    /admin/v1/holds?scope=PREFIX     holds in flight
    DELETE /admin/v1/holds/{rid}            release a hold (charges nothing)
    GET    /admin/v1/events?after=N&limit=M the ledger's event log (audit and billing feed)
    GET    /admin/v1/keys                   key ids, tenants, allow-lists (never hashes)

An operator limit (``Ledger.set_limit``) wins over the policy's until cleared, on every
gateway process at once: it lives in the shared ledger, not in a process.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import ConfigurationError, LedgerUnavailable
from ..ledger import HoldRecord, LineKey, LineState
from ..units import LEDGER_DIMENSIONS, Dimension, dimension, money_text, parse_limit
from ..windows import Window, window_id
from .app import Gateway, request_error
from .chain import GATEWAY_WINDOW, SENTINEL_LIMIT, RequestError
from .killswitch import kill_scope, revive_scope
from .replies import json_response, unavailable_response

__all__ = ["admin_routes"]

log = logging.getLogger("execbudget.gateway.admin")
_SCOPE_KINDS = frozenset({"org", "team", "key", "workflow", "run", "model"})


def _show(dim: str, units: int, currency: str) -> Any:
    return money_text(units) if dim == Dimension.COST else units


def line_json(line: LineState, currency: str) -> dict[str, Any]:
    key = line.key
    gateway_line = key.window == GATEWAY_WINDOW
    return {
        "scope": key.scope,
        "window": key.window,
        "dimension": key.dimension,
        "limit": None
        if gateway_line and line.limit >= SENTINEL_LIMIT
        else _show(key.dimension, line.limit, currency),
        "spent": _show(key.dimension, line.spent, currency),
        "held": _show(key.dimension, line.held, currency),
        "remaining": None if gateway_line else _show(key.dimension, line.remaining, currency),
        "overrun": _show(key.dimension, line.overrun, currency),
        "blocked": line.blocked,
        "units": {"limit": line.limit, "spent": line.spent, "held": line.held},
    }


def hold_json(hold: HoldRecord) -> dict[str, Any]:
    return {
        "rid": hold.rid,
        "state": hold.state.value,
        "lines": {str(k): v for k, v in hold.amounts.items()},
        "created_ms": hold.created_ms,
        "expires_at_ms": hold.expires_at_ms,
        "on_expiry": hold.on_expiry.value,
    }


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > 64 * 1024:
        raise RequestError(413, "admin request bodies are at most 64 KiB", code="body_too_large")
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        raise RequestError(400, "the body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise RequestError(400, "the body must be a JSON object", code="invalid_body")
    return data


def _scope(value: Any) -> str:
    """A full scope key such as ``org:acme`` or ``run:acme/triage#r-42``."""
    if not isinstance(value, str) or ":" not in value or len(value) > 300:
        raise RequestError(
            400,
            "'scope' must be a scope key like 'org:acme', 'team:acme/search', "
            "'key:bot', 'run:acme/triage#r-1' or 'model:gpt-4o'",
            code="invalid_scope",
            param="scope",
        )
    kind = value.split(":", 1)[0]
    if kind not in _SCOPE_KINDS and not kind.isidentifier():
        raise RequestError(400, f"unknown scope kind {kind!r}", code="invalid_scope", param="scope")
    return value


def _admin(endpoint: Any) -> Any:
    """Admin auth, ledger outages (503) and request errors, around every admin endpoint."""

    async def wrapped(request: Request) -> Response:
        gateway: Gateway = request.app.state.gateway
        status = 500
        try:
            admin = gateway.authenticate_admin(request)
            response: Response = await endpoint(request, gateway)
            status = response.status_code
            log.info(
                "admin",
                extra={
                    "fields": {
                        "admin": admin.name,
                        "route": request.url.path,
                        "method": request.method,
                        "status": status,
                    }
                },
            )
            return response
        except RequestError as exc:
            status = exc.status
            return request_error("openai", exc)
        except LedgerUnavailable as exc:
            status = 503
            return unavailable_response("openai", exc)
        finally:
            gateway.metrics.requests.labels("/admin", str(status)).inc()

    return wrapped


async def usage(request: Request, gateway: Gateway) -> Response:
    prefix = request.query_params.get("scope", "")
    currency = gateway.policy.currency
    lines = await gateway.ledger.lines(prefix)
    exact = request.query_params.get("exact") in ("1", "true")
    if exact:
        lines = [line for line in lines if line.key.scope == prefix]
    return json_response(
        {"currency": currency, "lines": [line_json(line, currency) for line in lines]}
    )


async def set_limit(request: Request, gateway: Gateway) -> Response:
    data = await _body(request)
    scope = _scope(data.get("scope"))
    name = data.get("dimension")
    try:
        dim = dimension(str(name))
    except ConfigurationError as exc:
        raise RequestError(400, str(exc), code="invalid_dimension", param="dimension") from None
    if dim not in LEDGER_DIMENSIONS:
        raise RequestError(
            400,
            f"{dim.value} is not held on ledger lines",
            code="invalid_dimension",
            param="dimension",
        )
    window_name = str(data.get("window", "total"))
    now_ms = gateway.enforcer.clock.now_ms()
    try:
        window = Window(window_name)
        wid = window_id(window, now_ms, gateway.policy.timezone)
    except ValueError:
        wid = window_name  # an explicit window id, e.g. d2026-12-04
    raw = data.get("limit")
    limit: int | None = None
    if raw is not None:
        try:
            limit = parse_limit(dim, raw, currency=gateway.policy.currency, what="limit")
        except ConfigurationError as exc:
            raise RequestError(400, str(exc), code="invalid_limit", param="limit") from None
    key = LineKey(scope, wid, dim.value)
    await gateway.ledger.set_limit(key, limit)
    lines = [s for s in await gateway.ledger.lines(scope) if s.key == key]
    currency = gateway.policy.currency
    return json_response(
        {"line": line_json(lines[0], currency) if lines else None, "override": limit is not None}
    )


async def kill(request: Request, gateway: Gateway) -> Response:
    scope = _scope((await _body(request)).get("scope"))
    blocked = await kill_scope(gateway.ledger, scope)
    gateway.kill_watch.killed_here(scope)
    return json_response({"scope": scope, "killed": True, "lines": [str(k) for k in blocked]})


async def revive(request: Request, gateway: Gateway) -> Response:
    scope = _scope((await _body(request)).get("scope"))
    lines = await revive_scope(gateway.ledger, scope)
    return json_response({"scope": scope, "killed": False, "lines": [str(k) for k in lines]})


async def unblock(request: Request, gateway: Gateway) -> Response:
    """Lift overrun blocks of a scope (all its lines, or one window and dimension)."""
    data = await _body(request)
    scope = _scope(data.get("scope"))
    window, dim = data.get("window"), data.get("dimension")
    lifted = []
    for line in await gateway.ledger.lines(scope):
        key = line.key
        if key.scope != scope or line.blocked != "overrun":
            continue
        if (window is not None and key.window != window) or (
            dim is not None and key.dimension != dim
        ):
            continue
        await gateway.ledger.block(key, None)
        lifted.append(str(key))
    return json_response({"scope": scope, "unblocked": lifted})


async def kills(request: Request, gateway: Gateway) -> Response:
    lines = await gateway.ledger.lines(request.query_params.get("scope", ""))
    scopes = sorted(
        {s.key.scope for s in lines if s.key.window == GATEWAY_WINDOW and s.blocked == "killed"}
    )
    return json_response({"killed": scopes})


async def holds(request: Request, gateway: Gateway) -> Response:
    found = await gateway.ledger.holds(request.query_params.get("scope", ""))
    return json_response({"holds": [hold_json(h) for h in found]})


async def release_hold(request: Request, gateway: Gateway) -> Response:
    rid = request.path_params["rid"]
    outcome = await gateway.ledger.release(rid)
    return json_response({"rid": rid, "status": outcome.status.value})


async def events(request: Request, gateway: Gateway) -> Response:
    try:
        after = int(request.query_params.get("after", "0"))
        limit = min(10_000, int(request.query_params.get("limit", "1000")))
    except ValueError:
        raise RequestError(
            400, "'after' and 'limit' must be whole numbers", code="invalid_query"
        ) from None
    found = await gateway.ledger.events(after, limit)
    return json_response(
        {
            "events": [
                {
                    "seq": e.seq,
                    "ts_ms": e.ts_ms,
                    "kind": e.kind,
                    "rid": e.rid,
                    "amounts": {str(k): v for k, v in e.amounts.items()},
                }
                for e in found
            ]
        }
    )


async def keys(request: Request, gateway: Gateway) -> Response:
    return json_response(
        {
            "keys": [
                {
                    "id": r.id,
                    "org": r.org,
                    "team": r.team,
                    "models": list(r.models) if r.models is not None else None,
                    "revoked": r.revoked,
                    "scopes": list(r.scopes),
                }
                for r in gateway.keys.records
            ]
        }
    )


def admin_routes() -> list[Route]:
    return [
        Route("/admin/v1/usage", _admin(usage), methods=["GET"]),
        Route("/admin/v1/limits", _admin(set_limit), methods=["PUT", "POST"]),
        Route("/admin/v1/kill", _admin(kill), methods=["POST"]),
        Route("/admin/v1/revive", _admin(revive), methods=["POST"]),
        Route("/admin/v1/kills", _admin(kills), methods=["GET"]),
        Route("/admin/v1/unblock", _admin(unblock), methods=["POST"]),
        Route("/admin/v1/holds", _admin(holds), methods=["GET"]),
        Route("/admin/v1/holds/{rid:path}", _admin(release_hold), methods=["DELETE"]),
        Route("/admin/v1/events", _admin(events), methods=["GET"]),
        Route("/admin/v1/keys", _admin(keys), methods=["GET"]),
    ]
