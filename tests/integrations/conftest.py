"""Shared pieces of the framework integration tests: budgets, a priced model, helpers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import execbudget
from execbudget import Enforcer
from execbudget.testing import FakeProvider

MODEL = "gpt-4o-mini"


@pytest.fixture
def enforcer_for() -> Iterator[Any]:
    """Make the process-default enforcer for a policy (memory ledger), reset afterwards."""
    made: list[Enforcer] = []

    def make(policy: dict[str, Any], ledger: str = "memory://") -> Enforcer:
        enforcer = execbudget.configure(policy, ledger)
        made.append(enforcer)
        return enforcer

    yield make
    execbudget.configure(None, "memory://")


def billed_tokens(fp: FakeProvider) -> int:
    """Tokens the fake provider generated and read: what a real provider would bill."""
    stats = fp.stats
    return stats.input_tokens + stats.output_tokens


def spent(enforcer: Enforcer, dim: str, prefix: str = "run:") -> int:
    return sum(s.spent for s in enforcer.status(prefix) if s.key.dimension == dim)


def held(enforcer: Enforcer, prefix: str = "") -> int:
    return sum(s.held for s in enforcer.status(prefix))


@pytest.fixture(autouse=True)
def _no_agents_tracing() -> None:
    """The Agents SDK exports traces to OpenAI by default: never from tests."""
    try:
        from agents import set_tracing_disabled
    except ImportError:  # pragma: no cover
        return
    set_tracing_disabled(True)
