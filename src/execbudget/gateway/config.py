"""
Gateway configuration: upstreams, ledger, keys, limits on requests, and knobs with reasons.

Upstream provider keys are the gateway's, read from the environment
(``EXECBUDGET_UPSTREAM_<NAME>_KEY``, else ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY``), never
from the client's request, and are kept in a ``Secret`` whose ``repr`` and ``str`` are masked
so no log line, traceback or config dump can print them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ConfigurationError
from ..policy import Policy
from .keys import KeyStore

__all__ = [
    "PROVIDERS",
    "GatewayConfig",
    "Secret",
    "Upstream",
    "parse_upstreams",
]

#: The provider dialects the gateway speaks; each upstream is named after one.
PROVIDERS: Final = ("openai", "anthropic")

_DEFAULT_KEY_ENV: Final = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}

#: Request headers passed upstream. Everything else (the client's Authorization and
#: x-api-key above all, cookies, proxy headers) stays at the gateway.
DEFAULT_FORWARD_HEADERS: Final = (
    "anthropic-version",
    "anthropic-beta",
    "openai-beta",
    "x-stainless-",
    "user-agent",
)


class Secret:
    """A string that never shows itself in a repr, a str or a log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Upstream:
    """One provider endpoint: ``openai`` or ``anthropic``, its base URL and the gateway's key."""

    name: str
    base_url: str
    api_key: Secret = field(default_factory=lambda: Secret(""))

    def url(self, path: str) -> str:
        """``path`` (``/v1/...``) under the base URL, whether or not the base ends in /v1."""
        base = self.base_url.rstrip("/")
        if base.endswith("/v1") and path.startswith("/v1/"):
            path = path[3:]
        return base + path


def parse_upstreams(
    specs: Sequence[str], env: Mapping[str, str] | None = None
) -> dict[str, Upstream]:
    """``["openai=http://host:8080", ...]`` → upstreams, with their keys from ``env``."""
    env = os.environ if env is None else env
    out: dict[str, Upstream] = {}
    for spec in specs:
        name, sep, url = spec.partition("=")
        name = name.strip().lower()
        if not sep or name not in PROVIDERS:
            raise ConfigurationError(
                f"--upstream {spec!r} must be NAME=URL with NAME one of {', '.join(PROVIDERS)}"
            )
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"--upstream {spec!r}: {url!r} is not an http(s) URL")
        if name in out:
            raise ConfigurationError(f"--upstream {name} is given twice")
        key = env.get(f"EXECBUDGET_UPSTREAM_{name.upper()}_KEY") or env.get(
            _DEFAULT_KEY_ENV[name], ""
        )
        out[name] = Upstream(name, url.strip(), Secret(key))
    return out


@dataclass(slots=True)
class GatewayConfig:
    """
    Everything ``create_app`` needs. Only ``policy`` and ``upstreams`` are required.

    The defaults are the safe ones: fail closed (from the policy), no prompt bodies in logs,
    bodies above 8 MiB refused before they are parsed.
    """

    policy: Policy
    upstreams: Mapping[str, Upstream]
    ledger_url: str = "sqlite:///.execbudget/ledger.db"
    keys: KeyStore = field(default_factory=KeyStore)
    #: Largest request body accepted (413 above it), checked before parsing.
    max_body_bytes: int = 8 * 1024 * 1024
    #: ``max_tokens`` held and sent when the client gives none and no per-call cap does:
    #: without a bound the worst case of a call is the model's whole output window.
    default_max_tokens: int = 4096
    #: How often each process probes for kills while it has streams in flight.
    kill_poll_s: float = 0.25
    #: How often each process reaps expired holds (crashed peers' holds included); 0: never.
    reap_interval_s: float = 5.0
    #: Upstream timeout; the per-call ``timeout`` cap of the chain lowers it per request.
    upstream_timeout_s: float = 600.0
    #: Ledger operations in flight per process; more queue (see ``gated``). Keep it below
    #: the Redis URL's ``max_connections`` (redis-py's default: 100).
    ledger_concurrency: int = 64
    #: Upstream connection pool size (per process).
    max_connections: int = 512
    #: Request header names (or prefixes ending in ``-``) passed upstream.
    forward_headers: tuple[str, ...] = DEFAULT_FORWARD_HEADERS
    #: Log request and response bodies (prompts!). Off unless an operator turns it on.
    log_bodies: bool = False
    #: Send ``x-execbudget-remaining-*`` headers: one extra ledger read per budget line of
    #: the chain, made while the provider works (off the latency path, not free).
    remaining_headers: bool = True
    #: Put a ``model:<name>`` scope in every chain (platform-wide per-model budgets).
    model_scopes: bool = True
    #: Once started (encodings and prices loaded), move every object alive out of the
    #: cyclic collector's reach (``gc.freeze``): a full collection walks all of them, 49 ms
    #: measured in a warmed-up gateway, on some request's path; frozen, 0.004 ms. A
    #: process-wide setting, so ``serve`` turns it on and an app embedded elsewhere does not.
    freeze_heap: bool = False
    clock: Clock = SYSTEM_CLOCK

    def __post_init__(self) -> None:
        if not self.upstreams:
            raise ConfigurationError(
                "the gateway needs at least one upstream: --upstream openai=URL and/or "
                "--upstream anthropic=URL"
            )
        if self.max_body_bytes < 1024:
            raise ConfigurationError("max_body_bytes must be at least 1024")
        if self.default_max_tokens < 1:
            raise ConfigurationError("default_max_tokens must be at least 1")
        if self.kill_poll_s <= 0:
            raise ConfigurationError("kill_poll_s must be positive")
        if self.ledger_concurrency < 1:
            raise ConfigurationError("ledger_concurrency must be at least 1")
        if self.upstream_timeout_s <= 0:
            raise ConfigurationError("upstream_timeout_s must be positive")
