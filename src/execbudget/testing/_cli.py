"""``execbudget fake-provider``: run the fake provider in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import sys

from execbudget.testing._config import FakeConfig
from execbudget.testing._server import serve
from execbudget.testing._tokenizers import warm_tokenizers

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="execbudget fake-provider",
        description=(
            "A fake OpenAI- and Anthropic-compatible server on loopback, for tests and "
            "benchmarks: deterministic text, honest usage, fault injection by x-fake-* "
            "headers or POST /_fake/config."
        ),
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="loopback address (default %(default)s)"
    )
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    parser.add_argument("--fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--config", default=None, metavar="JSON", help="starting FakeConfig as a JSON object"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one config field, e.g. --set output_tokens=200 (repeatable)",
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``execbudget fake-provider`` and ``python -m execbudget.testing``."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = FakeConfig.from_dict(json.loads(args.config)) if args.config else FakeConfig()
        changes = {}
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
            changes[key.strip()] = value
        config = config.replace(**changes) if changes else config
    except ValueError as exc:
        parser.error(str(exc))
    warm_tokenizers()
    host = args.host

    def announce(port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        print(f"execbudget fake provider listening on http://{shown}:{port}", flush=True)

    try:
        serve(
            host=host,
            port=args.port,
            config=config,
            fd=args.fd,
            log_level=args.log_level,
            on_ready=None if args.fd is not None else announce,
        )
    except (OSError, ValueError) as exc:
        print(f"execbudget fake-provider: {exc}", file=sys.stderr)
        return 1
    return 0
