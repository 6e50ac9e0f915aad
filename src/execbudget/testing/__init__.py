"""
Test helpers users can import: a fake OpenAI- and Anthropic-compatible provider.

The fake provider answers through the real SDKs on loopback, with deterministic text,
usage counted by its *own* tokenizers (never execbudget's, so our counting error can be
measured honestly), and faults on demand: error statuses and rates, latency, ignored
``max_tokens``, omitted usage, hangs and stalls. See ``FakeConfig`` for every knob; each is
also an ``x-fake-*`` request header and a key of ``POST /_fake/config``.

    from execbudget.testing import FakeProvider

    with FakeProvider() as fp:
        client = fp.openai()                      # openai.OpenAI(base_url=fp.openai_base_url)
        client.chat.completions.create(model="gpt-4o", messages=[...], max_tokens=16)
        fp.requests[-1].body["max_tokens"]        # 16: what the server received

pytest fixtures (``fake_provider``, ``fake_provider_session``) live in
``execbudget.testing.pytest_plugin``; load it with ``pytest_plugins``.

Needs the ``gateway`` extra (starlette, uvicorn); the SDK client helpers need ``openai`` /
``anthropic``.
"""

from __future__ import annotations

from execbudget.testing._cli import main
from execbudget.testing._config import FakeConfig, ToolCallPolicy
from execbudget.testing._server import serve
from execbudget.testing._state import RequestRecord, Stats
from execbudget.testing._tokenizers import (
    CLAUDE_STANDIN,
    count_tokens,
    encoding_name_for_model,
)
from execbudget.testing.fake_provider import FakeProvider

__all__ = [
    "CLAUDE_STANDIN",
    "FakeConfig",
    "FakeProvider",
    "RequestRecord",
    "Stats",
    "ToolCallPolicy",
    "count_tokens",
    "encoding_name_for_model",
    "main",
    "serve",
]
