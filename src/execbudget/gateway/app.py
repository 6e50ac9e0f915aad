"""
The gateway application: ``create_app(config)`` → a Starlette ASGI app.

One ``Gateway`` object per app holds what every request shares: the enforcer (policy +
ledger), the price book and token counter, the key store, the pooled upstream client, the
metrics, the per-process kill watch and the reaper. Background work starts lazily on the
first request as well as in the lifespan, so the app also works under transports that do
not run lifespan events (httpx's ``ASGITransport`` in tests); ``Gateway.aclose()`` stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any, Final, cast

import httpx2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..clock import SYSTEM_CLOCK
from ..enforcer import Enforcer
from ..invocation.engine import Settings
from ..ledger import AsyncLedger, AsyncStorage, Ledger, ThreadedStorage
from ..pricing import TokenCounter
from .admission import gateway_settings, settlements
from .chain import ChainBuilder, RequestError
from .config import GatewayConfig
from .gated import GatedStorage
from .keys import AdminKey, KeyRecord
from .killswitch import KillWatch
from .metrics import GatewayMetrics
from .replies import Dialect, error_response, json_response
from .upstream import UpstreamPool

__all__ = ["Gateway", "create_app"]

log = logging.getLogger("execbudget.gateway")

#: Seconds a shutdown waits for settlements still writing to the ledger, retries of one the
#: ledger refused included: at shutdown those stop waiting out ``SETTLE_RETRIES_S`` and try
#: at once, then ``SHUTDOWN_RETRY_S`` apart, which this covers with room for the writes.
SETTLE_GRACE_S: Final = 10.0

#: One model per tokenizer family the gateway counts with (o200k, cl100k, Claude's estimate).
_WARM_MODELS = ("gpt-4o-mini", "gpt-4", "claude-3-5-haiku-latest")


def _ledgers(config: GatewayConfig) -> tuple[Ledger | None, AsyncLedger]:
    """
    The gateway's async ledger, its operations gated (``gated``); for in-process stores
    (memory, SQLite) also the sync face of the same store, for tests and tools.
    """
    url = config.ledger_url
    clock = None if config.clock is SYSTEM_CLOCK else config.clock
    sync: Ledger | None = None
    if url.startswith(("memory:", "sqlite:")):
        sync = Ledger.from_url(url, clock=config.clock)
        inner: Any = ThreadedStorage(sync.storage)
    else:
        inner = AsyncLedger.from_url(url, clock=clock).storage
    # The Protocol wants scheme/base_exceptions as class variables; a wrapper takes its
    # inner storage's, per instance, so the cast says what the structure already is.
    gated = cast(AsyncStorage, GatedStorage(inner, config.ledger_concurrency))
    ledger = AsyncLedger(gated, url=url)
    ledger.currency = config.policy.currency
    return sync, ledger


def header_map(request: Request) -> dict[str, str]:
    """
    The request's headers as a dict, made once per request (names are lower case in
    ASGI; a repeated header keeps its first value, as ``Headers.get`` does). Starlette's
    ``Headers.get`` scans and decodes every header on each lookup, and a model call
    looks up six.
    """
    scope = request.scope
    found: dict[str, str] | None = scope.get("execbudget.headers")
    if found is None:
        found = {}
        for name, value in reversed(scope["headers"]):
            found[name.decode("latin-1")] = value.decode("latin-1")
        scope["execbudget.headers"] = found
    return found


def _presented_key(request: Request) -> str | None:
    headers = header_map(request)
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


class Gateway:
    """What every request of one app shares (see the module docstring)."""

    def __init__(
        self, config: GatewayConfig, *, transport: httpx2.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        self.policy = config.policy
        self.sync_ledger, ledger = _ledgers(config)
        self.enforcer = Enforcer(config.policy, ledger, clock=config.clock)
        self.book = self.policy.price_book()
        self.counter = TokenCounter()
        self.settings: Settings = gateway_settings(
            self.enforcer,
            config.default_max_tokens,
            config.upstream_timeout_s,
            Settings(counter=self.counter),
        )
        self.chains = ChainBuilder(self.enforcer, model_scopes=config.model_scopes)
        self.keys = config.keys
        self.pool = UpstreamPool(config, transport)
        self.metrics = GatewayMetrics()
        self._kill_watch: KillWatch | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._settling: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- shared services -----------------------------------------------------------------
    @property
    def ledger(self) -> AsyncLedger:
        return self.enforcer.aledger

    @property
    def kill_watch(self) -> KillWatch:
        if self._kill_watch is None:
            self._kill_watch = KillWatch(self.ledger, self.config.kill_poll_s)
        return self._kill_watch

    def warm_up(self) -> None:
        """Load tokenizers and prices now, so the first request does not pay ~1 s for them."""
        for model in _WARM_MODELS:
            with contextlib.suppress(Exception):
                self.counter.count_text("warm up", model)
                self.book.price(model)

    def start(self) -> None:
        """Start the reaper (idempotent; needs a running loop)."""
        if self._reaper is None and self.config.reap_interval_s > 0 and not self._closed:
            self._reaper = asyncio.get_running_loop().create_task(self._reap(), name="reaper")

    async def _reap(self) -> None:
        """Settle expired holds, those of crashed peers included, by their on_expiry."""
        while True:
            await asyncio.sleep(self.config.reap_interval_s)
            try:
                await self.ledger.reap()
            except Exception as exc:  # keep reaping after an outage
                log.warning("reaping expired holds failed: %s", exc)

    def track(self, settling: asyncio.Task[None]) -> None:
        """A settlement still writing to the ledger: ``aclose`` waits for it."""
        if not settling.done():
            self._settling.add(settling)
            settling.add_done_callback(self._settling.discard)

    async def aclose(self) -> None:
        self._closed = True
        # No hold is left behind by a shutdown: wait for the settlements still writing and
        # for the retries of those the ledger refused (which now try at once).
        pending = settlements(self.ledger)
        pending.closing.set()
        loop = asyncio.get_running_loop()
        by = loop.time() + SETTLE_GRACE_S
        if self._settling:
            await asyncio.wait(set(self._settling), timeout=SETTLE_GRACE_S)
        if not await pending.wait(max(0.0, by - loop.time())):
            log.error(
                "shutdown: %d settlement(s) still not written after %.0f s; their holds "
                "are settled by the reaper when their TTL ends",
                len(pending.tasks),
                SETTLE_GRACE_S,
            )
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        if self._kill_watch is not None:
            await self._kill_watch.stop()
        await self.pool.aclose()
        with contextlib.suppress(Exception):
            await self.ledger.aclose()
        if self.sync_ledger is not None:
            with contextlib.suppress(Exception):
                self.sync_ledger.close()

    # -- identity ------------------------------------------------------------------------
    def authenticate(self, request: Request) -> KeyRecord:
        """The caller's key record, or a 401/403 ``RequestError``."""
        presented = _presented_key(request)
        if presented is None:
            raise RequestError(
                401,
                "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
                code="missing_api_key",
            )
        record = self.keys.client(presented)
        if record is None:
            if self.keys.admin(presented) is not None:
                raise RequestError(
                    403,
                    "admin keys cannot make model calls; use a client key",
                    code="admin_key_not_allowed",
                )
            raise RequestError(401, "invalid API key", code="invalid_api_key")
        if record.revoked:
            raise RequestError(
                401, f"API key {record.id!r} has been revoked", code="revoked_api_key"
            )
        return record

    def authenticate_admin(self, request: Request) -> AdminKey:
        if not self.keys.has_admins:
            raise RequestError(
                403,
                "the admin API is disabled: no admin keys are configured (keys file, 'admin:')",
                code="admin_disabled",
            )
        presented = _presented_key(request)
        if presented is None:
            raise RequestError(
                401,
                "missing admin key: send 'Authorization: Bearer <admin key>'",
                code="missing_api_key",
            )
        admin = self.keys.admin(presented)
        if admin is None:
            if self.keys.client(presented) is not None:
                raise RequestError(
                    403,
                    "this is a client key; the admin API needs an admin key",
                    code="not_admin",
                )
            raise RequestError(401, "invalid admin key", code="invalid_api_key")
        return admin


def request_error(dialect: Dialect, exc: RequestError) -> Response:
    kinds = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        405: "invalid_request_error",
        413: "request_too_large",
    }
    return error_response(
        dialect,
        exc.status,
        kinds.get(exc.status, "invalid_request_error"),
        exc.message,
        code=exc.code,
        param=exc.param,
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "no such route", 405: "method not allowed on this route"}.get(
        exc.status_code, str(exc.detail)
    )
    dialect: Dialect = "anthropic" if request.url.path.startswith("/v1/messages") else "openai"
    return error_response(
        dialect,
        exc.status_code,
        "invalid_request_error",
        f"{message}: {request.url.path}",
        code="not_found" if exc.status_code == 404 else "method_not_allowed",
    )


async def _health(request: Request) -> Response:
    return json_response({"ok": True})


async def _metrics(request: Request) -> Response:
    from .metrics import CONTENT_TYPE_LATEST

    gateway: Gateway = request.app.state.gateway
    return Response(gateway.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def create_app(
    config: GatewayConfig, *, transport: httpx2.AsyncBaseTransport | None = None
) -> Starlette:
    """
    The gateway as an ASGI app. ``transport`` replaces the upstream network (tests can
    route upstream calls to an in-process ASGI app).
    """
    from .admin import admin_routes
    from .routes import model_endpoints, model_routes

    gateway = Gateway(config, transport=transport)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(gateway.warm_up)
        if config.freeze_heap:
            gc.collect()
            gc.freeze()
        gateway.start()
        try:
            yield
        finally:
            await gateway.aclose()

    endpoints = model_endpoints()
    routes: list[Any] = [
        *model_routes(endpoints),
        *admin_routes(),
        Route("/metrics", _metrics, methods=["GET"]),
        Route("/healthz", _health, methods=["GET"]),
    ]
    app = _GatewayApp(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.state.gateway = gateway
    app.fast = dict(endpoints)
    return app


class _GatewayApp(Starlette):
    """
    Starlette, with the model calls' POSTs handed straight to their endpoint: no router
    scan, no middleware layers around each ``send`` (the endpoints answer every failure
    themselves). Everything else, other methods on those paths included, goes through
    Starlette.
    """

    fast: dict[str, ASGIApp]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.fast.get(scope["path"])
            if endpoint is not None:
                scope["app"] = self
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
