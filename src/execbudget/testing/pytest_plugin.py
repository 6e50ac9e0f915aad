"""
pytest fixtures for the fake provider. Enable with, in a ``conftest.py`` at the test root::

    pytest_plugins = ["execbudget.testing.pytest_plugin"]

``fake_provider_session`` starts one server per test session (per xdist worker);
``fake_provider`` hands a test that server after a ``reset()``: starting configuration,
empty request log, zero counters. A test that needs its own starting configuration or a
server in another process uses ``FakeProvider(...)`` as a context manager instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from execbudget.testing.fake_provider import FakeProvider

__all__ = ["fake_provider", "fake_provider_session"]


@pytest.fixture(scope="session")
def fake_provider_session() -> Iterator[FakeProvider]:
    """One fake provider (thread mode) for the whole session."""
    with FakeProvider() as provider:
        yield provider


@pytest.fixture
def fake_provider(fake_provider_session: FakeProvider) -> FakeProvider:
    """The session's fake provider, reset for this test."""
    fake_provider_session.reset()
    return fake_provider_session
