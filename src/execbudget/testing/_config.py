"""
What the fake provider does, server-wide (``FakeConfig``) and per request (``x-fake-*`` headers).

A test changes the server-wide configuration at run time (in process, or over
``POST /_fake/config``); a single request overrides it with headers. Header names are the
field names with ``_`` turned into ``-`` and an ``x-fake-`` prefix, so the two never drift:
``x-fake-output-tokens: 500`` overrides ``output_tokens``. Two more headers exist only per
request: ``x-fake-fail-attempts: N`` fails every attempt whose SDK retry counter
(``x-stainless-retry-count``) is below N, and ``x-fake-error-status`` alone means "always fail".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

__all__ = [
    "HEADER_PREFIX",
    "FakeConfig",
    "RequestPlan",
    "ToolCallPolicy",
    "plan_request",
]

ToolCallPolicy = Literal["never", "first_turn", "always"]
HEADER_PREFIX = "x-fake-"
_POLICIES: tuple[str, ...] = get_args(ToolCallPolicy)


@dataclass(frozen=True, slots=True)
class FakeConfig:
    """
    Server-wide behaviour of the fake provider. Every field can be overridden per request.

    Output:
        output_tokens: length of an answer when ``max_tokens`` does not cut it.
        ignore_max_tokens: if set, answers are exactly this many tokens whatever the
            request's ``max_tokens`` (a provider that ignores the cap; text, no tool calls).
        tool_call_policy: when a request offers tools, ``"first_turn"`` calls one when the
            last message is the user's (not a tool result), ``"always"`` calls one on every
            turn (an agent that never finishes), ``"never"`` answers with text.
        tool_calls_per_turn: tool calls in one answer (parallel tool calls).
        omit_usage: report no usage at all (non-stream body and stream). Real Anthropic
            always reports usage, and anthropic 2.x's ``messages.stream()`` helper raises
            ``AttributeError`` on a ``message_delta`` without it; iterate
            ``messages.create(stream=True)`` to see the raw events instead.
        seed: mixed into the text seed and drives the error-rate RNG.

    Faults:
        error_status / error_rate: answer ``error_status`` to that fraction of requests
            (seeded RNG, reproducible for a sequential run).
        fail_next: the next N requests fail with ``error_status`` (counts down).
        retry_after_ms: ``retry-after-ms`` / ``retry-after`` sent with 429, 503 and 529;
            ``None`` sends neither.
        latency_ms: delay before the answer (non-stream) or before the first content chunk.
        chunk_delay_ms: delay between stream chunks.
        hang: accept the request and never answer, until the client gives up or the server
            stops.
        stall_after_chunks: stream this many content chunks, then stall like ``hang``.
    """

    output_tokens: int = 32
    ignore_max_tokens: int | None = None
    tool_call_policy: ToolCallPolicy = "first_turn"
    tool_calls_per_turn: int = 1
    omit_usage: bool = False
    seed: int = 0
    error_status: int = 500
    error_rate: float = 0.0
    fail_next: int = 0
    retry_after_ms: int | None = 10
    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    hang: bool = False
    stall_after_chunks: int | None = None

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ValueError("invalid fake provider config: " + "; ".join(problems))

    def replace(self, **changes: Any) -> FakeConfig:
        """A copy with ``changes`` applied; unknown keys and bad values raise ``ValueError``."""
        return FakeConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FakeConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fake provider config keys {unknown}; known: {sorted(known)}")
        return cls(**{k: _coerce(k, v) for k, v in data.items()})


_INT_FIELDS = frozenset(
    {"output_tokens", "tool_calls_per_turn", "seed", "error_status", "fail_next"}
)
_OPTIONAL_INT_FIELDS = frozenset({"ignore_max_tokens", "retry_after_ms", "stall_after_chunks"})
_FLOAT_FIELDS = frozenset({"error_rate", "latency_ms", "chunk_delay_ms"})
_BOOL_FIELDS = frozenset({"omit_usage", "hang"})


def _coerce(key: str, value: Any) -> Any:
    """Accept the loose forms JSON and headers produce ("1", "true", 2.0), reject the rest."""
    try:
        if key in _BOOL_FIELDS:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(value)
            return bool(value)
        if key in _OPTIONAL_INT_FIELDS and (value is None or value == "" or value == "none"):
            return None
        if key in _INT_FIELDS or key in _OPTIONAL_INT_FIELDS:
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value)
            if not number.is_integer():
                raise ValueError(value)
            return int(number)
        if key in _FLOAT_FIELDS:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: cannot use {value!r}") from None
    return value


def _problems(config: FakeConfig) -> list[str]:
    problems: list[str] = []
    if config.output_tokens < 0:
        problems.append("output_tokens must be >= 0")
    if config.ignore_max_tokens is not None and config.ignore_max_tokens < 0:
        problems.append("ignore_max_tokens must be >= 0")
    if config.tool_call_policy not in _POLICIES:
        problems.append(f"tool_call_policy must be one of {list(_POLICIES)}")
    if config.tool_calls_per_turn < 1:
        problems.append("tool_calls_per_turn must be >= 1")
    if not 400 <= config.error_status <= 599:
        problems.append("error_status must be an HTTP error status (400-599)")
    if not 0.0 <= config.error_rate <= 1.0:
        problems.append("error_rate must be within [0, 1]")
    if config.fail_next < 0:
        problems.append("fail_next must be >= 0")
    if config.retry_after_ms is not None and config.retry_after_ms < 0:
        problems.append("retry_after_ms must be >= 0")
    if config.latency_ms < 0 or config.chunk_delay_ms < 0:
        problems.append("latency_ms and chunk_delay_ms must be >= 0")
    if config.stall_after_chunks is not None and config.stall_after_chunks < 0:
        problems.append("stall_after_chunks must be >= 0")
    return problems


@dataclass(frozen=True, slots=True)
class RequestPlan:
    """The configuration in force for one request, after its ``x-fake-*`` headers."""

    config: FakeConfig
    fail_attempts: int
    forced_error: bool
    retry_count: int


def plan_request(config: FakeConfig, headers: Mapping[str, str]) -> RequestPlan:
    """
    Overlay a request's ``x-fake-*`` headers on ``config``.

    ``headers`` must have lower-case names. Raises ``ValueError`` for an unknown
    ``x-fake-*`` header or a bad value, so a typo in a test fails loudly instead of
    silently testing nothing.
    """
    changes: dict[str, Any] = {}
    fail_attempts = 0
    forced_error = False
    for name, value in headers.items():
        if not name.startswith(HEADER_PREFIX):
            continue
        key = name[len(HEADER_PREFIX) :].replace("-", "_")
        if key == "fail_attempts":
            fail_attempts = int(_coerce("fail_next", value))
        elif key == "fail_next":
            raise ValueError("fail_next is server-wide; per request use x-fake-fail-attempts")
        else:
            changes[key] = value
    if "error_status" in changes and "error_rate" not in changes and not fail_attempts:
        forced_error = True
    config = config.replace(**changes) if changes else config
    try:
        retry_count = int(headers.get("x-stainless-retry-count", "0"))
    except ValueError:
        retry_count = 0
    return RequestPlan(config, fail_attempts, forced_error, retry_count)
