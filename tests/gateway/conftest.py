"""Fixtures: the shared fake provider and gateways on loopback, stopped after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import httpx2
import pytest

from execbudget.gateway import create_app
from execbudget.testing import FakeProvider

from ._harness import GatewayServer, config

GatewayFactory = Callable[..., GatewayServer]


@pytest.fixture
def gateway_factory(fake_provider: FakeProvider) -> Iterator[GatewayFactory]:
    """``make(policy, **config)`` → a started gateway in front of the fake provider."""
    started: list[GatewayServer] = []

    def make(
        policy: Any,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        **changes: Any,
    ) -> GatewayServer:
        server = GatewayServer(config(fake_provider, policy, **changes), transport).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


class AsgiGateway:
    """The gateway app driven in process through httpx's ASGI transport (no sockets)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.gateway = app.state.gateway
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway", timeout=30
        )

    async def call(
        self, path: str, body: Any = None, *, key: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        if body is not None and "content" not in kwargs:
            kwargs["json"] = body
        return await self.client.post(path, headers=headers, **kwargs)

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.gateway.aclose()


AsgiFactory = Callable[..., AsgiGateway]


@pytest.fixture
async def asgi_factory(fake_provider: FakeProvider) -> AsyncIterator[AsgiFactory]:
    """``make(policy, **config)`` → the gateway app in process, upstream the fake provider."""
    made: list[AsgiGateway] = []

    def make(
        policy: Any, *, transport: httpx2.AsyncBaseTransport | None = None, **changes: Any
    ) -> AsgiGateway:
        gateway = AsgiGateway(
            create_app(config(fake_provider, policy, **changes), transport=transport)
        )
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        await gateway.aclose()
