"""
``execbudget serve`` (the gateway) and ``execbudget gateway-key`` (mint and hash keys).

    execbudget serve --policy policy.yaml --upstream openai=https://api.openai.com \\
        --upstream anthropic=https://api.anthropic.com --keys keys.yaml \\
        --ledger redis://127.0.0.1:6379/0 --workers 4 --port 8080

    execbudget gateway-key new --id search-bot --org acme --team search
    execbudget gateway-key new --admin ops
    execbudget gateway-key hash KEY            # or '-' to read the key from stdin

Under ``--workers N`` uvicorn starts N processes; each rebuilds the app from the same
arguments (passed in ``EXECBUDGET_GATEWAY_ARGS``) and they share the budgets through the
ledger, which must therefore be SQLite, Redis or PostgreSQL: ``memory://`` would give each
process its own copy of every budget, N times the limit (LiteLLM #24682), so it is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..errors import ConfigurationError
from ..ledger import DEFAULT_URL

__all__ = ["app_from_env", "build_config", "register"]

_ENV = "EXECBUDGET_GATEWAY_ARGS"


def register(subparsers: Any) -> None:
    """Add ``serve`` and ``gateway-key`` to the main CLI's subparsers."""
    serve = subparsers.add_parser(
        "serve", help="run the budget gateway (OpenAI- and Anthropic-compatible proxy)"
    )
    serve.add_argument("--policy", required=True, help="policy file (YAML or TOML)")
    serve.add_argument(
        "--upstream",
        action="append",
        required=True,
        metavar="NAME=URL",
        help="provider endpoint: openai=URL and/or anthropic=URL (keys from "
        "EXECBUDGET_UPSTREAM_<NAME>_KEY, OPENAI_API_KEY, ANTHROPIC_API_KEY)",
    )
    serve.add_argument("--ledger", help=f"ledger URL (default $EXECBUDGET_LEDGER or {DEFAULT_URL})")
    serve.add_argument("--keys", help="keys file (YAML): client keys and admin keys, hashed")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1, help="worker processes")
    serve.add_argument("--fd", type=int, help=argparse.SUPPRESS)  # an inherited listening socket
    serve.add_argument("--default-max-tokens", type=int, default=4096)
    serve.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024)
    serve.add_argument("--kill-poll", type=float, default=0.25, help="seconds between kill probes")
    serve.add_argument("--upstream-timeout", type=float, default=600.0)
    serve.add_argument("--log-level", default="INFO")
    serve.add_argument(
        "--log-bodies", action="store_true", help="log request bodies (prompts!); off by default"
    )
    serve.add_argument(
        "--no-remaining-headers",
        action="store_true",
        help="skip the x-execbudget-remaining-* headers (saves a ledger read per budget line)",
    )
    serve.set_defaults(func=_serve)

    key = subparsers.add_parser("gateway-key", help="mint or hash gateway API keys")
    actions = key.add_subparsers(dest="action", required=True)
    new = actions.add_parser("new", help="a new key and its keys-file entry")
    new.add_argument("--id", help="key id (client keys)")
    new.add_argument("--org", help="tenant (client keys)")
    new.add_argument("--team")
    new.add_argument("--models", help="comma-separated allow-list (patterns)")
    new.add_argument("--admin", metavar="NAME", help="mint an admin key with this name")
    new.set_defaults(func=_key_new)
    digest = actions.add_parser("hash", help="the sha256 digest of an existing key")
    digest.add_argument("key", help="the key, or '-' to read it from stdin")
    digest.set_defaults(func=_key_hash)


def _arguments(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "policy": args.policy,
        "upstream": list(args.upstream),
        "ledger": args.ledger or os.environ.get("EXECBUDGET_LEDGER") or DEFAULT_URL,
        "keys": args.keys,
        "default_max_tokens": args.default_max_tokens,
        "max_body_bytes": args.max_body_bytes,
        "kill_poll": args.kill_poll,
        "upstream_timeout": args.upstream_timeout,
        "log_bodies": args.log_bodies,
        "log_level": args.log_level,
        "remaining_headers": not args.no_remaining_headers,
    }


def build_config(arguments: dict[str, Any]) -> Any:
    """The ``GatewayConfig`` for the serve arguments (policy and keys files are read)."""
    from ..policy import Policy
    from .config import GatewayConfig, parse_upstreams
    from .keys import KeyStore, hash_key

    keys = KeyStore.load(arguments["keys"]) if arguments.get("keys") else KeyStore()
    admin_key = os.environ.get("EXECBUDGET_GATEWAY_ADMIN_KEY")
    if admin_key:  # convenience for containers: hashed at once, never kept in plaintext
        from .keys import AdminKey

        keys = KeyStore(keys.records, [AdminKey("env", hash_key(admin_key))])
    return GatewayConfig(
        policy=Policy.load(arguments["policy"]),
        upstreams=parse_upstreams(arguments["upstream"]),
        ledger_url=arguments["ledger"],
        keys=keys,
        default_max_tokens=arguments["default_max_tokens"],
        max_body_bytes=arguments["max_body_bytes"],
        kill_poll_s=arguments["kill_poll"],
        upstream_timeout_s=arguments["upstream_timeout"],
        log_bodies=arguments["log_bodies"],
        remaining_headers=arguments.get("remaining_headers", True),
        freeze_heap=True,
    )


def app_from_env() -> Any:
    """uvicorn's factory in each worker process: the app from ``EXECBUDGET_GATEWAY_ARGS``."""
    from .app import create_app
    from .logs import configure_logging

    arguments = json.loads(os.environ[_ENV])
    configure_logging(arguments.get("log_level", "INFO"))
    return create_app(build_config(arguments))


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .app import create_app
        from .logs import configure_logging
    except ImportError as exc:
        print(
            f"error: the gateway needs the gateway extra ({exc.name} is missing): "
            'pip install "execbudget[gateway]"',
            file=sys.stderr,
        )
        return 2

    arguments = _arguments(args)
    try:
        if args.workers < 1:
            raise ConfigurationError("--workers must be at least 1")
        if args.fd is not None and args.workers != 1:
            raise ConfigurationError("--fd serves one process; drop --workers")
        if args.workers > 1 and arguments["ledger"].startswith("memory:"):
            raise ConfigurationError(
                "--workers > 1 needs a shared ledger (sqlite:///, redis://, postgresql://): "
                "with memory:// each worker would enforce its own copy of every budget"
            )
        config = build_config(arguments)  # validate everything before forking workers
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(args.log_level)
    common: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 10,
        # uvloop and httptools when installed (the gateway extra lists them), else asyncio
        # and h11: together about a tenth less CPU per request than the pure-Python pair.
        "loop": "auto",
        "http": "auto",
    }
    if args.fd is not None:
        # uvicorn's own fd= path assumes a Unix socket, so asyncio never sets TCP_NODELAY
        # and every answer waits ~40 ms on Nagle; wrap the inherited socket as what it is.
        import socket

        sock = socket.socket(fileno=args.fd)
        server = uvicorn.Server(uvicorn.Config(create_app(config), **common))
        server.run(sockets=[sock])
    elif args.workers == 1:
        uvicorn.run(create_app(config), **common)
    else:
        os.environ[_ENV] = json.dumps(arguments)
        uvicorn.run(
            "execbudget.gateway.cli:app_from_env", factory=True, workers=args.workers, **common
        )
    return 0


def _key_new(args: argparse.Namespace) -> int:
    from .keys import hash_key, new_key

    key = new_key()
    if args.admin:
        entry: dict[str, Any] = {"admin": [{"name": args.admin, "hash": hash_key(key)}]}
    else:
        if not args.id or not args.org:
            print("error: a client key needs --id and --org (or use --admin NAME)", file=sys.stderr)
            return 2
        record: dict[str, Any] = {"id": args.id, "hash": hash_key(key), "org": args.org}
        if args.team:
            record["team"] = args.team
        if args.models:
            record["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
        entry = {"keys": [record]}
    import yaml

    print(f"key (shown once; only its hash is stored): {key}", file=sys.stderr)
    print(yaml.safe_dump(entry, sort_keys=False), end="")
    return 0


def _key_hash(args: argparse.Namespace) -> int:
    from .keys import hash_key

    key = sys.stdin.readline().strip() if args.key == "-" else args.key
    print(hash_key(key))
    return 0
