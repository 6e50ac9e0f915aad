"""
The admin API (usage, operator limits, holds, events, keys), Prometheus metrics, the JSON
access log, and the CLI (``serve`` argument checks, ``gateway-key``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from execbudget.gateway import KeyStore
from execbudget.gateway.__main__ import main as gateway_main
from execbudget.gateway.cli import register
from execbudget.gateway.logs import JsonFormatter
from execbudget.ledger import LineKey, LineRequest
from execbudget.testing import FakeProvider

from ._harness import ACME_KEY, ADMIN_KEY, BETA_KEY
from .conftest import AsgiFactory, AsgiGateway

CHAT = "/v1/chat/completions"
MINI = "gpt-4o-mini"
BODY = {"model": MINI, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
POLICY = {"scopes": [{"match": "org:*", "limits": {"cost": {"day": "0.01 USD"}}}]}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


async def _admin(gw: AsgiGateway, method: str, path: str, **kwargs: Any) -> Any:
    response = await gw.client.request(method, path, headers=ADMIN, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


async def test_usage_and_operator_limits(asgi_factory: AsgiFactory) -> None:
    gw = asgi_factory(POLICY)
    assert (await gw.call(CHAT, BODY, key=ACME_KEY)).status_code == 200
    usage = await _admin(gw, "GET", "/admin/v1/usage", params={"scope": "org:acme", "exact": "1"})
    cost = next(x for x in usage["lines"] if x["dimension"] == "cost")
    assert cost["window"].startswith("d") and cost["limit"] == "0.01"
    assert Decimal(cost["spent"]) > 0 and cost["held"] == "0"
    calls = next(x for x in usage["lines"] if x["window"] == "gateway")
    assert calls["spent"] == 1 and calls["limit"] is None  # the kill-switch line counts calls

    # lower the day's limit below what is spent: the next request is refused
    low = await _admin(
        gw, "PUT", "/admin/v1/limits",
        json={"scope": "org:acme", "dimension": "cost", "window": "day", "limit": "0.000001 USD"},
    )  # fmt: skip
    assert low["override"] is True and low["line"]["limit"] == "0.000001"
    denied = await gw.call(CHAT, BODY, key=ACME_KEY)
    assert denied.status_code == 402 and denied.json()["error"]["limit"] == "0.000001 USD"
    # raise it: admitted again, above the policy's own 0.01
    await _admin(
        gw, "PUT", "/admin/v1/limits",
        json={"scope": "org:acme", "dimension": "cost", "window": "day", "limit": "20 USD"},
    )  # fmt: skip
    big = await gw.call(CHAT, {**BODY, "model": "gpt-4o", "max_tokens": 2000}, key=ACME_KEY)
    assert big.status_code == 200
    # clear it: back to the policy
    cleared = await _admin(
        gw, "PUT", "/admin/v1/limits",
        json={"scope": "org:acme", "dimension": "cost", "window": "day", "limit": None},
    )  # fmt: skip
    assert cleared["override"] is False
    # bad admin input says what is wrong
    bad = await gw.client.put(
        "/admin/v1/limits", headers=ADMIN,
        json={"scope": "org:acme", "dimension": "bogus", "limit": 1},
    )  # fmt: skip
    assert bad.status_code == 400 and "bogus" in bad.json()["error"]["message"]
    bad_scope = await gw.client.post("/admin/v1/kill", headers=ADMIN, json={"scope": "nope"})
    assert bad_scope.status_code == 400


async def test_list_and_release_holds_and_read_events(asgi_factory: AsgiFactory) -> None:
    gw = asgi_factory(POLICY)
    ledger = gw.gateway.ledger
    line = LineRequest(LineKey("org:acme", "total", "cost"), 10**9, 5)
    rid = await ledger.reserve([line])  # a hold left by a crashed caller, say
    holds = await _admin(gw, "GET", "/admin/v1/holds", params={"scope": "org:acme"})
    assert [h["rid"] for h in holds["holds"]] == [rid]
    released = await _admin(gw, "DELETE", f"/admin/v1/holds/{rid}")
    assert released["status"] == "ok"
    assert (await _admin(gw, "GET", "/admin/v1/holds"))["holds"] == []
    again = await _admin(gw, "DELETE", f"/admin/v1/holds/{rid}")
    assert again["status"] == "settled"
    events = await _admin(gw, "GET", "/admin/v1/events")
    assert [e["kind"] for e in events["events"]] == ["reserve", "release"]
    keys = await _admin(gw, "GET", "/admin/v1/keys")
    ids = {k["id"] for k in keys["keys"]}
    assert "acme-bot" in ids and all("hash" not in k for k in keys["keys"])


async def test_budget_route_shows_the_callers_own_lines(asgi_factory: AsgiFactory) -> None:
    gw = asgi_factory(POLICY)
    await gw.call(CHAT, BODY, key=BETA_KEY)
    response = await gw.client.get(
        "/v1/execbudget/budget", headers={"authorization": f"Bearer {BETA_KEY}"}
    )
    data = response.json()
    assert data["scopes"] == ["org:beta", "team:beta/search", "key:beta-bot"]
    assert [(x["scope"], x["dimension"]) for x in data["lines"]] == [("org:beta", "cost")]
    assert Decimal(data["lines"][0]["remaining"]) < Decimal("0.01")


async def test_metrics_count_admissions_denials_and_latency(
    asgi_factory: AsgiFactory, fake_provider: FakeProvider
) -> None:
    gw = asgi_factory(POLICY)
    assert (await gw.call(CHAT, BODY, key=ACME_KEY)).status_code == 200
    too_big = {**BODY, "model": "gpt-4o", "max_tokens": 5000}
    assert (await gw.call(CHAT, too_big, key=ACME_KEY)).status_code == 402
    fake_provider.configure(ignore_max_tokens=100)
    stream = await gw.call(CHAT, {**BODY, "stream": True}, key=ACME_KEY)
    assert b'"cut":"output_past_hold"' in stream.content
    await asyncio.sleep(0.05)
    text = (await gw.client.get("/metrics")).text
    assert 'execbudget_gateway_admissions_total{route="/v1/chat/completions"} 2.0' in text
    assert 'execbudget_gateway_denials_total{dimension="cost",reason="limit"} 1.0' in text
    assert 'execbudget_gateway_streams_cut_total{reason="output_past_hold"} 1.0' in text
    assert "execbudget_gateway_overruns_total 1.0" in text
    assert "execbudget_gateway_holds_in_flight 0.0" in text
    assert 'execbudget_gateway_upstream_latency_seconds_count{provider="openai"} 2.0' in text
    assert "execbudget_gateway_admission_latency_seconds_bucket" in text
    assert (
        'execbudget_gateway_requests_total{route="/v1/chat/completions",status="402"} 1.0' in text
    )


async def test_access_log_is_json_without_bodies(
    asgi_factory: AsgiFactory, caplog: pytest.LogCaptureFixture
) -> None:
    gw = asgi_factory(POLICY)
    caplog.set_level(logging.INFO, logger="execbudget.gateway.access")
    secret_prompt = "my secret prompt text"
    body = {**BODY, "messages": [{"role": "user", "content": secret_prompt}]}
    await gw.call(CHAT, body, key=ACME_KEY, headers={"x-execbudget-run": "r-9"})
    record = caplog.records[-1]
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "request" and line["status"] == 200 and line["decision"] == "admitted"
    assert line["key"] == "acme-bot" and line["org"] == "acme" and line["model"] == MINI
    assert "run:acme/default#r-9" in line["scopes"]
    assert line["held"]["cost"].endswith(" USD") and line["charged"]["tokens"] > 0
    assert secret_prompt not in json.dumps(line)
    verbose = asgi_factory(POLICY, log_bodies=True)
    await verbose.call(CHAT, body, key=ACME_KEY)
    assert secret_prompt in json.dumps(json.loads(JsonFormatter().format(caplog.records[-1])))


# -- CLI ---------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_gateway_key_new_and_hash(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert (
        gateway_main(["gateway-key", "new", "--id", "bot", "--org", "acme", "--models", "a,b"]) == 0
    )
    out = capsys.readouterr()
    key = out.err.split(": ")[-1].strip()
    (tmp_path / "keys.yaml").write_text(out.out)
    store = KeyStore.load(tmp_path / "keys.yaml")
    record = store.client(key)
    assert record is not None and record.models == ("a", "b") and key not in out.out
    assert gateway_main(["gateway-key", "hash", key]) == 0
    assert capsys.readouterr().out.strip() == record.digest
    assert gateway_main(["gateway-key", "new"]) == 2
    assert gateway_main(["gateway-key", "new", "--admin", "ops"]) == 0
    assert "admin:" in capsys.readouterr().out


def test_serve_refuses_a_per_process_ledger_with_workers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("scopes: []\n")
    args = _parser().parse_args(
        ["serve", "--policy", str(policy), "--upstream", "openai=http://127.0.0.1:1",
         "--ledger", "memory://", "--workers", "3"]
    )  # fmt: skip
    assert args.func(args) == 2
    assert "shared ledger" in capsys.readouterr().err
    bad = _parser().parse_args(["serve", "--policy", str(policy), "--upstream", "nope=x"])
    assert bad.func(bad) == 2
    assert "--upstream" in capsys.readouterr().err


async def test_clamp_mode_lowers_max_tokens_to_the_room(
    asgi_factory: AsgiFactory, fake_provider: FakeProvider
) -> None:
    policy = {
        "degradation": {"mode": "clamp"},
        "scopes": [{"match": "key:acme-bot", "limits": {"output_tokens": 100}}],
    }
    gw = asgi_factory(policy)
    response = await gw.call(CHAT, {**BODY, "max_tokens": 500}, key=ACME_KEY)
    assert response.status_code == 200
    assert response.headers["x-execbudget-max-tokens"] == "100"
    assert response.headers["x-execbudget-clamped-from"] == "500"
    assert fake_provider.requests[-1].body["max_tokens"] == 100
    assert "execbudget_gateway_clamped_total 1.0" in (await gw.client.get("/metrics")).text
