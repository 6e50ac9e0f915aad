"""
Shared fixtures. Service-backed tests skip when the service is absent locally, but fail
when ``CI`` is set: a green CI run means every backend was exercised.
"""

from __future__ import annotations

import os

import pytest

IN_CI = bool(os.environ.get("CI"))


def need_service(name: str, reason: str) -> None:
    """Skip locally, fail in CI, when a backing service is missing."""
    message = f"{name} is not reachable: {reason}"
    if IN_CI:
        pytest.fail(f"{message} (CI is set, so a missing service is a failure)")
    pytest.skip(message)


# The fake OpenAI/Anthropic provider's fixtures (fake_provider, fake_provider_session).
pytest_plugins = ["execbudget.testing.pytest_plugin"]
