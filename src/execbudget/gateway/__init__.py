"""
Layer 4, the platform gateway: an OpenAI- and Anthropic-compatible proxy that holds the
worst case of every call on the caller's model, org, team, key, workflow and run budgets
before forwarding it, cuts streams that outrun their hold, and settles from usage.

    from execbudget.gateway import GatewayConfig, KeyStore, create_app, parse_upstreams

    app = create_app(GatewayConfig(policy=Policy.load("policy.yaml"),
                                   upstreams=parse_upstreams(["openai=https://api.openai.com"]),
                                   ledger_url="redis://127.0.0.1:6379/0",
                                   keys=KeyStore.load("keys.yaml")))

or ``execbudget serve ...`` (see ``docs/gateway.md``). Needs the ``gateway`` extra
(starlette, uvicorn, httpx2, prometheus-client); names are imported on first use, so
``execbudget.gateway.cli`` (the CLI's ``register``) imports without it.

Layout: ``app`` (the app and what requests share), ``routes`` (provider routes),
``admission`` (the invocation layer's procedure driven with the gateway's I/O),
``streaming`` (the metered SSE relay), ``chain`` (scope chains), ``keys`` (hashed keys),
``killswitch``, ``admin``, ``upstream``, ``replies`` (error shapes), ``metrics``, ``logs``,
``config``, ``cli``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Gateway, create_app
    from .config import GatewayConfig, Secret, Upstream, parse_upstreams
    from .keys import AdminKey, KeyRecord, KeyStore, hash_key, new_key

__all__ = [
    "AdminKey",
    "Gateway",
    "GatewayConfig",
    "KeyRecord",
    "KeyStore",
    "Secret",
    "Upstream",
    "create_app",
    "hash_key",
    "new_key",
    "parse_upstreams",
]

_HOME = {
    "Gateway": "app",
    "create_app": "app",
    "GatewayConfig": "config",
    "Secret": "config",
    "Upstream": "config",
    "parse_upstreams": "config",
    "AdminKey": "keys",
    "KeyRecord": "keys",
    "KeyStore": "keys",
    "hash_key": "keys",
    "new_key": "keys",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(f"{__name__}.{home}")
    except ImportError as exc:
        raise ImportError(
            f"execbudget.gateway needs the gateway extra ({exc.name} is missing): "
            'pip install "execbudget[gateway]"'
        ) from exc
    return getattr(module, name)
