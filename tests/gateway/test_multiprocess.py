"""
Three gateway processes on one ledger (SQLite, Redis, PostgreSQL), concurrent clients
spread over them: a run's call budget admits exactly its limit across the processes, the
org's cost budget is never overshot, every refusal is a 402, and the books equal what the
provider reported.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from execbudget.ledger import Ledger
from execbudget.testing import FakeProvider
from execbudget.units import money_to_units

from ..ledger import _pg_backend as pg
from ..ledger import _redis_backend as rd
from ._harness import ACME_KEY, BETA_KEY, GatewayProcess, keys_file, line
from .test_sdk import cost_units

MODEL = "gpt-4o"
ORG_LIMIT = "0.012 USD"
RUN_CALLS = 17
POLICY = {
    "hold_ttl": "60s",
    "scopes": [
        {"match": "org:acme", "limits": {"cost": ORG_LIMIT}},
        {"match": "run:*", "limits": {"calls": RUN_CALLS}},
    ],
}
PROCESSES = 3
CLIENTS = 12
REQUESTS = 120


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh shared ledger: its own file, Redis key prefix or PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.db"
    elif request.param == "redis":
        rd.require_redis()
        prefix = rd.new_prefix("gw")
        try:
            yield rd.url_with(rd.REDIS_URL, prefix=prefix)
        finally:
            rd.drop_prefix(prefix)
    else:
        pg.require_postgres()
        schema = pg.new_schema("gw")
        url = pg.url_with(schema=schema, pool_max="4")
        with Ledger.from_url(url) as ledger:  # migrate once, before the processes race to
            ledger.lines("")
        try:
            yield url
        finally:
            pg.drop_schema(schema)


@pytest.mark.slow
def test_processes_share_budgets_with_zero_overshoot(
    ledger_url: str, fake_provider: FakeProvider, tmp_path: Path
) -> None:
    fake_provider.configure(output_tokens=24, latency_ms=2)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(POLICY), encoding="utf-8")
    args = [
        "--policy", str(policy_file),
        "--upstream", f"openai={fake_provider.base_url}",
        "--keys", str(keys_file(tmp_path / "keys.yaml")),
        "--ledger", ledger_url,
    ]  # fmt: skip
    gateways = [GatewayProcess(args) for _ in range(PROCESSES)]
    try:
        for gateway in gateways:
            gateway.wait_ready()
        statuses = _hammer(gateways)
    finally:
        for gateway in gateways:
            gateway.stop()

    codes = [status for status, _ in statuses]
    assert set(codes) <= {200, 402}, sorted(set(codes))
    with Ledger.from_url(ledger_url) as ledger:
        assert ledger.holds() == []
        # the run: exactly its call budget, across three processes
        run_ok = sum(1 for status, kind in statuses if kind == "run" and status == 200)
        run_calls = line(ledger, "run:beta/default#shared", "calls")
        assert run_ok == RUN_CALLS and run_calls is not None and run_calls.spent == RUN_CALLS
        # the org: never above its limit, and the budget was actually used
        org = line(ledger, "org:acme", "cost")
        assert org is not None and org.held == 0
        assert org.spent <= money_to_units_of(ORG_LIMIT)
        admitted = sum(1 for status, kind in statuses if kind == "org" and status == 200)
        assert admitted >= 10
        # the books are what the provider reported, call by call
        reported = sum(
            cost_units(MODEL, r.input_tokens or 0, r.output_tokens or 0)
            for r in fake_provider.requests
            if r.body.get("model") == MODEL and r.status == 200
        )
        assert org.spent == reported


def money_to_units_of(text: str) -> int:
    from decimal import Decimal

    return money_to_units(Decimal(text.split()[0]))


def _hammer(gateways: list[GatewayProcess]) -> list[tuple[int, str]]:
    """CLIENTS threads, REQUESTS requests, round-robin over the gateways."""
    counter = itertools.count()
    lock = threading.Lock()
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Count the budget lines."}],
        "max_tokens": 40,
    }

    def client(worker: int) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        clients = [httpx.Client(base_url=g.base_url, timeout=30) for g in gateways]
        try:
            while True:
                with lock:
                    n = next(counter)
                if n >= REQUESTS:
                    return out
                kind = "run" if n % 2 else "org"
                headers: dict[str, Any] = (
                    {"authorization": f"Bearer {BETA_KEY}", "x-execbudget-run": "shared"}
                    if kind == "run"
                    else {"authorization": f"Bearer {ACME_KEY}"}
                )
                response = clients[n % len(clients)].post(
                    "/v1/chat/completions",
                    json={**body, "model": "gpt-4o-mini" if kind == "run" else MODEL},
                    headers=headers,
                )
                if response.status_code == 402:
                    assert response.headers["x-should-retry"] == "false"
                out.append((response.status_code, kind))
        finally:
            for c in clients:
                c.close()

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(client, range(CLIENTS)))
    return [item for chunk in results for item in chunk]
