"""Fixtures for the fake provider's own tests: the shared server and SDK clients on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anthropic
import openai
import pytest

from execbudget.testing import FakeProvider
from execbudget.testing.pytest_plugin import fake_provider, fake_provider_session

__all__ = ["fake_provider", "fake_provider_session"]


@pytest.fixture
def oai(fake_provider: FakeProvider) -> Iterator[openai.OpenAI]:
    with fake_provider.openai() as client:
        yield client


@pytest.fixture
async def aoai(fake_provider: FakeProvider) -> AsyncIterator[openai.AsyncOpenAI]:
    async with fake_provider.async_openai() as client:
        yield client


@pytest.fixture
def ant(fake_provider: FakeProvider) -> Iterator[anthropic.Anthropic]:
    with fake_provider.anthropic() as client:
        yield client


@pytest.fixture
async def aant(fake_provider: FakeProvider) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with fake_provider.async_anthropic() as client:
        yield client
