"""
Fixtures for the invocation layer: the fake provider (real SDK clients talk to it), and
enforcers whose ledgers are checked at teardown: no test may leave a held amount behind.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from execbudget import Enforcer
from execbudget.testing import FakeProvider
from execbudget.testing.pytest_plugin import fake_provider, fake_provider_session

__all__ = ["fake_provider", "fake_provider_session"]

MakeEnforcer = Callable[..., Enforcer]


def held(enforcer: Enforcer) -> int:
    """Everything still held on any line (0 once every hold has settled)."""
    return sum(line.held for line in enforcer.status())


def spent(enforcer: Enforcer, dimension: str, scope: str = "") -> int:
    """The most spent on any line of ``dimension`` (lines of one chain spend alike)."""
    values = [
        line.spent
        for line in enforcer.status()
        if line.key.dimension == dimension and line.key.scope.startswith(scope)
    ]
    return max(values, default=0)


def overrun(enforcer: Enforcer) -> int:
    return sum(line.overrun for line in enforcer.status())


@pytest.fixture
def make_enforcer(tmp_path: Path) -> Iterator[MakeEnforcer]:
    """Build enforcers (``memory://`` or a SQLite file); at teardown, none holds anything."""
    made: list[Enforcer] = []

    def make(policy: dict[str, Any] | None = None, ledger: str = "memory", **kw: Any) -> Enforcer:
        url = "memory://" if ledger == "memory" else f"sqlite:///{tmp_path}/l{len(made)}.db"
        enforcer = Enforcer(policy or {}, url, **kw)
        made.append(enforcer)
        return enforcer

    yield make
    gc.collect()  # finalizers of streams a test dropped settle their holds
    for enforcer in made:
        left = held(enforcer)
        enforcer.close()
        assert left == 0, f"a hold was left unsettled: {left} held"


@pytest.fixture
def fp(fake_provider: FakeProvider) -> FakeProvider:
    return fake_provider


class Clients:
    """Real SDK clients pointed at the fake provider, closed when the test ends."""

    def __init__(self, fp: FakeProvider) -> None:
        self._fp = fp
        self._open: list[Any] = []

    def openai(self, **kwargs: Any) -> openai.OpenAI:
        client = self._fp.openai(**kwargs)
        self._open.append(client)
        return client

    def anthropic(self, **kwargs: Any) -> anthropic.Anthropic:
        client = self._fp.anthropic(**kwargs)
        self._open.append(client)
        return client

    def close(self) -> None:
        for client in self._open:
            client.close()


@pytest.fixture
def sdk(fp: FakeProvider, make_enforcer: MakeEnforcer) -> Iterator[Clients]:
    """Sync SDK clients (closed before ``make_enforcer`` collects garbage and checks)."""
    clients = Clients(fp)
    yield clients
    clients.close()
