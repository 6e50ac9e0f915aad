"""
The ``execbudget`` command.

    execbudget policy check FILE [--json]       validate a policy and print its budgets
    execbudget audit POLICY [--json]             enforcement coverage; exit 1 on a gap
    execbudget status [--ledger URL] [--scope PREFIX] [--json]
    execbudget ledger events [--after SEQ] [--limit N] [--follow]   (JSON lines)
    execbudget ledger reap [--limit N]
    execbudget ledger verify                     books against the event log
    execbudget ledger migrate URL                PostgreSQL schema migrations
    execbudget prices MODEL [--provider P] [--json]
    execbudget fake-provider [--port N]
    execbudget model GRAPH ...                   the cascade cost modeler
    execbudget serve --policy FILE --upstream openai=URL ...   the gateway

Exit codes: 0 success, 1 a check found problems, 2 bad usage or input, 3 ledger unavailable.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from .errors import ConfigurationError, LedgerUnavailable, PolicyError
from .ledger import DEFAULT_URL, Ledger, LineState, reconcile
from .policy import Policy
from .units import display

Handler = Callable[[argparse.Namespace], int]


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _ledger_url(args: argparse.Namespace) -> str:
    url: str = args.ledger or os.environ.get("EXECBUDGET_LEDGER") or DEFAULT_URL
    return url


# -- policy check -------------------------------------------------------------------------
def _policy_check(args: argparse.Namespace) -> int:
    policy = Policy.load(args.file)
    rows = []
    for match, limits in policy.rules:
        for dim, windows in limits.lines.items():
            for window, limit in windows.items():
                rows.append((match, dim.value, window.value, display(dim, limit, policy.currency)))
        if limits.depth is not None:
            rows.append((match, "depth", "-", str(limits.depth)))
        if limits.time_ms is not None:
            rows.append((match, "time", "-", display("time", limits.time_ms)))
        caps = limits.per_call
        for name in ("max_input_tokens", "max_output_tokens", "min_output_tokens"):
            value = getattr(caps, name)
            if value is not None and not (name == "min_output_tokens" and value == 1):
                rows.append((match, f"per_call.{name}", "-", f"{value:,}"))
        if caps.max_cost is not None:
            rows.append(
                (match, "per_call.max_cost", "-", display("cost", caps.max_cost, policy.currency))
            )
        if caps.timeout_s is not None:
            rows.append((match, "per_call.timeout", "-", f"{caps.timeout_s:g}s"))
    spec = policy.spec
    settings = {
        "currency": spec.currency,
        "timezone": spec.timezone,
        "failure_mode": spec.failure_mode,
        "hold_ttl": f"{policy.hold_ttl_s:g}s",
        "on_expiry": spec.on_expiry.value,
        "pricing.unpriced": spec.pricing.unpriced,
        "degradation": spec.degradation.mode,
        "fan_out.on_excess": spec.fan_out.on_excess,
    }
    if args.json:
        print(
            json.dumps(
                {
                    "file": str(args.file),
                    "valid": True,
                    "settings": settings,
                    "budgets": [
                        dict(zip(("match", "dimension", "window", "limit"), r, strict=True))
                        for r in rows
                    ],
                },
                indent=2,
            )
        )
        return 0
    console = _console()
    console.print(f"[green]✓[/] {args.file} is a valid policy")
    console.print(", ".join(f"{k}: {v}" for k, v in settings.items()))
    table = Table("scope", "dimension", "window", "limit", title="budgets")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if not rows:
        console.print("[yellow]no budgets: every dimension is unbounded[/]")
    return 0


# -- status -------------------------------------------------------------------------------
def _line_dict(line: LineState, currency: str) -> dict[str, Any]:
    dim = line.key.dimension
    return {
        "scope": line.key.scope,
        "window": line.key.window,
        "dimension": dim,
        "limit": display(dim, line.limit, currency),
        "spent": display(dim, line.spent, currency),
        "held": display(dim, line.held, currency),
        "remaining": display(dim, line.remaining, currency),
        "overrun": display(dim, line.overrun, currency),
        "blocked": line.blocked,
        "units": {"limit": line.limit, "spent": line.spent, "held": line.held},
    }


def _status(args: argparse.Namespace) -> int:
    currency = Policy.load(args.policy).currency if args.policy else "USD"
    with Ledger.from_url(_ledger_url(args)) as ledger:
        lines = ledger.lines(args.scope or "")
    if args.json:
        print(json.dumps([_line_dict(line, currency) for line in lines], indent=2))
        return 0
    table = Table(
        "scope",
        "window",
        "dimension",
        "limit",
        "spent",
        "held",
        "remaining",
        "flags",
        title=f"budget lines in {_ledger_url(args)}",
    )
    for line in lines:
        d = _line_dict(line, currency)
        flags = []
        if line.blocked:
            flags.append(f"[red]{line.blocked}[/]")
        if line.overrun:
            flags.append(f"overrun {d['overrun']}")
        table.add_row(
            d["scope"],
            d["window"],
            d["dimension"],
            d["limit"],
            d["spent"],
            d["held"],
            d["remaining"],
            " ".join(flags),
        )
    _console().print(table)
    return 0


# -- ledger -------------------------------------------------------------------------------
def _event_dict(event: Any) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "ts_ms": event.ts_ms,
        "kind": event.kind,
        "rid": event.rid,
        "lines": [
            {"scope": k.scope, "window": k.window, "dimension": k.dimension, "amount": a}
            for k, a in event.amounts.items()
        ],
    }


def _events(args: argparse.Namespace) -> int:
    after = args.after
    with Ledger.from_url(_ledger_url(args)) as ledger:
        while True:
            batch = ledger.events(after, args.limit)
            for event in batch:
                print(json.dumps(_event_dict(event)), flush=True)
                after = event.seq
            if not args.follow:
                return 0
            if not batch:
                time.sleep(args.interval)


def _reap(args: argparse.Namespace) -> int:
    with Ledger.from_url(_ledger_url(args)) as ledger:
        total = 0
        while True:
            done = ledger.reap(args.limit)
            total += done
            if done < args.limit:
                break
    if args.json:
        print(json.dumps({"reaped": total}))
    else:
        _console().print(f"reaped {total} expired hold(s)")
    return 0


def _verify(args: argparse.Namespace) -> int:
    with Ledger.from_url(_ledger_url(args)) as ledger:
        lines = ledger.lines()
        events: list[Any] = []
        while True:
            batch = ledger.events(events[-1].seq if events else 0, 10_000)
            events.extend(batch)
            if len(batch) < 10_000:
                break
    problems = reconcile(lines, events)
    if args.json:
        mismatches = [
            {
                "key": str(p.key),
                "field": p.field,
                "in_line": p.in_line,
                "from_events": p.from_events,
            }
            for p in problems
        ]
        print(json.dumps({"lines": len(lines), "events": len(events), "mismatches": mismatches}))
    else:
        console = _console()
        for p in problems:
            console.print(
                f"[red]✗[/] {p.key} {p.field}: line says {p.in_line}, events say {p.from_events}"
            )
        if not problems:
            console.print(f"[green]✓[/] {len(lines)} lines agree with {len(events)} events")
    return 1 if problems else 0


def _delegate(module: str, attr: str, *, extra: str) -> Handler:
    """A handler in an optional part, imported only when its command runs."""

    def handler(args: argparse.Namespace) -> int:
        try:
            target = getattr(importlib.import_module(module), attr)
        except ImportError as exc:
            raise ConfigurationError(
                f"this command needs an optional dependency ({exc.name}); "
                f'install it with: pip install "execbudget[{extra}]"'
            ) from exc
        result: int = target(args)
        return result

    return handler


def _audit(args: argparse.Namespace) -> int:
    from .audit import audit_command

    return audit_command(args.policy, args.json)


def _migrate(args: argparse.Namespace) -> int:
    from .ledger import postgres

    result: int = postgres.migrate_command(args.url)
    return result


def _prices(args: argparse.Namespace) -> int:
    from .pricing import prices_command

    book = Policy.load(args.policy).price_book() if args.policy else None
    result: int = prices_command(args.model, args.provider, args.json, book=book)
    return result


def _fake_provider(args: argparse.Namespace) -> int:
    from .testing import fake_provider

    argv = ["--port", str(args.port), "--host", args.host]
    result: int = fake_provider.main(argv)
    return result


# -- parser -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="execbudget", description="Execution budgets held before the spend."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def ledger_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--ledger", help=f"ledger URL (default $EXECBUDGET_LEDGER or {DEFAULT_URL})")
        p.add_argument("--json", action="store_true", help="machine-readable output")

    policy = sub.add_parser("policy", help="policy files").add_subparsers(dest="sub", required=True)
    check = policy.add_parser("check", help="validate a policy and print the resolved budgets")
    check.add_argument("file")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=_policy_check)

    audit = sub.add_parser("audit", help="budget types × layers covered by a policy, and gaps")
    audit.add_argument("policy")
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(func=_audit)

    status = sub.add_parser("status", help="limit, spent, held, remaining per scope and window")
    ledger_opts(status)
    status.add_argument("--scope", help="only scopes starting with this prefix")
    status.add_argument("--policy", help="policy file (for its currency)")
    status.set_defaults(func=_status)

    ledger = sub.add_parser("ledger", help="the ledger").add_subparsers(dest="sub", required=True)
    events = ledger.add_parser("events", help="the event log as JSON lines")
    ledger_opts(events)
    events.add_argument("--after", type=int, default=0, help="start after this sequence number")
    events.add_argument("--limit", type=int, default=1000)
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    events.add_argument("--interval", type=float, default=1.0, help="poll interval with -f")
    events.set_defaults(func=_events)
    reap = ledger.add_parser("reap", help="settle holds past their deadline")
    ledger_opts(reap)
    reap.add_argument("--limit", type=int, default=200, help="holds per batch")
    reap.set_defaults(func=_reap)
    verify = ledger.add_parser("verify", help="check every line against the event log")
    ledger_opts(verify)
    verify.set_defaults(func=_verify)
    migrate = ledger.add_parser("migrate", help="apply PostgreSQL schema migrations")
    migrate.add_argument("url")
    migrate.set_defaults(func=_migrate)

    prices = sub.add_parser("prices", help="what the price book charges for a model")
    prices.add_argument("model")
    prices.add_argument("--provider")
    prices.add_argument("--json", action="store_true")
    prices.add_argument("--policy", help="price with this policy's overrides and fallback")
    prices.set_defaults(func=_prices)

    fake = sub.add_parser("fake-provider", help="run the fake OpenAI/Anthropic server")
    fake.add_argument("--port", type=int, default=8765)
    fake.add_argument("--host", default="127.0.0.1")
    fake.set_defaults(func=_fake_provider)

    _register_optional(
        sub, "execbudget.modeling.cli", "model", "modeling", "the cascade cost modeler"
    )
    _register_optional(
        sub,
        "execbudget.gateway.cli",
        "serve",
        "gateway",
        "the budget-enforcing OpenAI/Anthropic gateway",
    )
    _register_optional(sub, "execbudget.simulate.cli", "simulate", "all", "failure patterns")
    return parser


def _register_optional(sub: Any, module: str, command: str, extra: str, what: str) -> None:
    """Add an optional part's subcommand; without its extra, a stub that says what to install."""
    try:
        register = importlib.import_module(module).register
    except ImportError:
        stub = sub.add_parser(command, help=f"{what} (needs execbudget[{extra}])")
        stub.add_argument("rest", nargs=argparse.REMAINDER)
        stub.set_defaults(func=_delegate(module, "register", extra=extra))
    else:
        register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except LedgerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
