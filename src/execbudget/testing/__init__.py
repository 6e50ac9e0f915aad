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

Routes (all on ``http://127.0.0.1:PORT``): ``POST /v1/chat/completions``, ``/v1/responses``,
``/v1/responses/input_tokens``, ``/v1/embeddings``, ``/v1/messages``,
``/v1/messages/count_tokens``; ``GET /v1/models[/{id}]`` (Anthropic's shape when the request
carries ``anthropic-version``). Admin (never logged, never faulted): ``GET /_fake/health``,
``GET|POST /_fake/config``, ``POST /_fake/reset``, ``GET|DELETE /_fake/requests``,
``GET /_fake/stats``.

Per-request headers (each overrides the ``FakeConfig`` field of the same name):
``x-fake-output-tokens``, ``x-fake-ignore-max-tokens``, ``x-fake-tool-call-policy``
(never | first_turn | always), ``x-fake-tool-calls-per-turn``, ``x-fake-omit-usage``,
``x-fake-seed``, ``x-fake-error-status`` (alone: always fail), ``x-fake-error-rate``,
``x-fake-retry-after-ms``, ``x-fake-latency-ms``, ``x-fake-chunk-delay-ms``,
``x-fake-hang``, ``x-fake-stall-after-chunks``; plus ``x-fake-fail-attempts: N`` (fail
while the SDK's ``x-stainless-retry-count`` is below N). An unknown ``x-fake-*`` header
is a 400, so a typo cannot silently test nothing.

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
