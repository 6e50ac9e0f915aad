"""Fixtures: the shared fake provider and gateways on loopback, stopped after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

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
        transport: httpx.AsyncBaseTransport | None = None,
        **changes: Any,
    ) -> GatewayServer:
        server = GatewayServer(config(fake_provider, policy, **changes), transport).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
