"""
Identity and isolation: wrong, missing and revoked keys; key hashing and constant-time
comparison; admin endpoints with a client key; one tenant against another's scopes; the
gateway's upstream key never leaves the gateway and never reaches a log.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Any

import httpx2
import pytest

from execbudget.errors import ConfigurationError
from execbudget.gateway import KeyStore, hash_key, new_key
from execbudget.gateway.keys import KeyRecord
from execbudget.testing import FakeProvider

from ._harness import (
    ACME_KEY,
    ACME_OTHER_KEY,
    ADMIN_KEY,
    BETA_KEY,
    LIMITED_KEY,
    REVOKED_KEY,
    UPSTREAM_SECRET,
    keys_file,
)
from .conftest import AsgiFactory

CHAT = "/v1/chat/completions"
MINI = "gpt-4o-mini"
BODY = {"model": MINI, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
POLICY = {
    "scopes": [
        {"match": "org:*", "limits": {"cost": "1 USD"}},
        {"match": "run:*", "limits": {"calls": 2}},
    ]
}


# -- keys ------------------------------------------------------------------------------------
def test_keys_are_stored_as_sha256_digests_and_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = new_key()
    assert key.startswith("ebk-") and len(key) >= 40
    assert new_key() != key
    digest = hash_key(key)
    assert digest.startswith("sha256:") and len(digest) == 7 + 64 and key not in digest
    store = KeyStore.load(keys_file(tmp_path / "keys.yaml"))
    text = (tmp_path / "keys.yaml").read_text()
    assert ACME_KEY not in text and ADMIN_KEY not in text  # only digests on disk
    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    record = store.client(ACME_KEY)
    assert record is not None and record.id == "acme-bot"
    assert compared == [(hash_key(ACME_KEY), hash_key(ACME_KEY))]
    assert store.client(ACME_KEY + "x") is None
    assert store.admin(ACME_KEY) is None and store.admin(ADMIN_KEY) is not None


def test_keys_file_refuses_plaintext_keys_and_reports_every_problem() -> None:
    with pytest.raises(ConfigurationError) as caught:
        KeyStore.from_dict(
            {
                "keys": [
                    {"id": "a", "key": "plaintext-key", "org": "acme"},
                    {"id": "b/../c", "hash": "sha256:" + "0" * 64, "org": "acme"},
                    {"id": "d", "hash": "md5:abc", "org": "x y"},
                ],
                "extra": 1,
            }
        )
    message = str(caught.value)
    assert "plaintext keys are not accepted" in message
    assert "keys[1].id" in message and "keys[2].hash" in message and "keys[2].org" in message
    assert "unknown top-level keys" in message
    with pytest.raises(ConfigurationError, match="listed twice"):
        KeyStore([KeyRecord("a", hash_key("k" * 30), "o"), KeyRecord("a", hash_key("j" * 30), "o")])


# -- authentication --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "missing_api_key"),
        ({"authorization": "Bearer nope-0000000000000000000000"}, 401, "invalid_api_key"),
        ({"authorization": f"Basic {ACME_KEY}"}, 401, "missing_api_key"),
        ({"authorization": f"Bearer {REVOKED_KEY}"}, 401, "revoked_api_key"),
        ({"authorization": f"Bearer {ADMIN_KEY}"}, 403, "admin_key_not_allowed"),
        ({"x-api-key": ACME_KEY}, 200, None),
    ],
)
async def test_client_authentication(
    asgi_factory: AsgiFactory,
    fake_provider: FakeProvider,
    headers: dict[str, str],
    status: int,
    code: str | None,
) -> None:
    gw = asgi_factory(POLICY)
    response = await gw.call(CHAT, BODY, headers=headers)
    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["error"]["code"] == code
        assert response.headers["x-should-retry"] == "false"
        assert fake_provider.requests == []
    assert gw.gateway.ledger and await gw.gateway.ledger.holds() == []


async def test_admin_endpoints_need_an_admin_key(asgi_factory: AsgiFactory) -> None:
    gw = asgi_factory(POLICY)
    client = gw.client
    for key, status in ((None, 401), (ACME_KEY, 403), ("bad-key-000000000000000000", 401)):
        headers = {"authorization": f"Bearer {key}"} if key else {}
        for method, path, body in (
            ("GET", "/admin/v1/usage", None),
            ("POST", "/admin/v1/kill", {"scope": "org:beta"}),
            ("PUT", "/admin/v1/limits", {"scope": "org:acme", "dimension": "cost", "limit": 99}),
            ("GET", "/admin/v1/holds", None),
            ("DELETE", "/admin/v1/holds/abc", None),
        ):
            response = await client.request(method, path, headers=headers, json=body)
            assert response.status_code == status, (key, path, response.text)
    # nothing was killed by the refused calls
    assert (await gw.call(CHAT, BODY, key=BETA_KEY)).status_code == 200


async def test_admin_api_disabled_without_admin_keys(asgi_factory: AsgiFactory) -> None:
    gw = asgi_factory(POLICY)
    gw.gateway.keys = KeyStore(gw.gateway.keys.records)
    response = await gw.client.get(
        "/admin/v1/usage", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert response.status_code == 403 and response.json()["error"]["code"] == "admin_disabled"


async def test_model_allow_list(asgi_factory: AsgiFactory) -> None:
    gw = asgi_factory(POLICY)
    refused = await gw.call(CHAT, {**BODY, "model": "gpt-4o"}, key=LIMITED_KEY)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    assert (await gw.call(CHAT, BODY, key=LIMITED_KEY)).status_code == 200
    models = await gw.client.get("/v1/models", headers={"authorization": f"Bearer {LIMITED_KEY}"})
    assert models.status_code == 200
    listed = {m["id"] for m in models.json()["data"]}
    assert MINI in listed and "gpt-4o" not in listed
    assert all(m == MINI or m.startswith("claude-3-5-") for m in listed)


# -- isolation -------------------------------------------------------------------------------
async def test_one_tenant_cannot_spend_or_read_another_tenants_budget(
    asgi_factory: AsgiFactory,
) -> None:
    gw = asgi_factory(POLICY)
    run = {"x-execbudget-run": "r-1", "x-execbudget-workflow": "triage"}
    # beta names the same workflow and run as acme: it gets its own run, inside beta
    for _ in range(2):
        assert (await gw.call(CHAT, BODY, key=BETA_KEY, headers=run)).status_code == 200
    third = await gw.call(CHAT, BODY, key=BETA_KEY, headers=run)
    assert third.status_code == 402 and third.json()["error"]["scope"] == "run:beta/triage#r-1"
    # acme's run r-1 is untouched by beta's spend
    assert (await gw.call(CHAT, BODY, key=ACME_KEY, headers=run)).status_code == 200
    # a second acme key shares the acme run (one run across keys of one tenant)
    assert (await gw.call(CHAT, BODY, key=ACME_OTHER_KEY, headers=run)).status_code == 200
    denied = await gw.call(CHAT, BODY, key=ACME_KEY, headers=run)
    assert denied.status_code == 402 and denied.json()["error"]["scope"] == "run:acme/triage#r-1"
    # names that try to leave the tenant's namespace are refused
    for bad in (
        {"x-execbudget-workflow": "../beta"},
        {"x-execbudget-run": "r#2"},
        {"x-execbudget-workflow": "beta/triage"},
    ):
        response = await gw.call(CHAT, BODY, key=ACME_KEY, headers=bad)
        assert response.status_code == 400, bad
    # a key reads only its own chain
    mine = await gw.client.get(
        "/v1/execbudget/budget", headers={"authorization": f"Bearer {ACME_KEY}", **run}
    )
    assert mine.status_code == 200
    scopes = {line["scope"] for line in mine.json()["lines"]} | set(mine.json()["scopes"])
    assert all("beta" not in s for s in scopes)
    assert "run:acme/triage#r-1" in scopes
    # the per-tenant org budgets are separate lines
    lines = {(s.key.scope, s.key.dimension): s for s in await gw.gateway.ledger.lines("org:")}
    assert lines[("org:acme", "cost")].spent > 0 and lines[("org:beta", "cost")].spent > 0


async def test_killing_one_tenant_leaves_the_other_running(asgi_factory: AsgiFactory) -> None:
    gw = asgi_factory(POLICY)
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    killed = await gw.client.post("/admin/v1/kill", json={"scope": "org:beta"}, headers=admin)
    assert killed.status_code == 200
    assert (await gw.call(CHAT, BODY, key=BETA_KEY)).status_code == 402
    assert (await gw.call(CHAT, BODY, key=ACME_KEY)).status_code == 200


# -- secrets -----------------------------------------------------------------------------------
async def test_client_credentials_stay_at_the_gateway_and_upstream_keys_out_of_logs(
    asgi_factory: AsgiFactory, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[httpx2.Request] = []

    def upstream(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "model": MINI,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "ok"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
            },
            headers={
                "openai-organization": "org-gateway-account",
                "x-ratelimit-remaining-requests": "9",
            },
        )

    gw = asgi_factory(POLICY, transport=httpx2.MockTransport(upstream))
    caplog.set_level(logging.DEBUG)
    response = await gw.call(CHAT, BODY, key=ACME_KEY, headers={"cookie": "session=1"})
    assert response.status_code == 200
    sent = seen[-1]
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert ACME_KEY not in str(sent.headers) and "cookie" not in sent.headers
    # the provider account's identity and rate-limit state are not shown to the tenant
    assert "openai-organization" not in response.headers
    assert "x-ratelimit-remaining-requests" not in response.headers
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "request" in logged and "acme-bot" in logged
    assert UPSTREAM_SECRET not in logged and ACME_KEY not in logged
    assert "hi" not in [getattr(r, "fields", {}).get("prompt") for r in caplog.records]
    assert UPSTREAM_SECRET not in repr(gw.gateway.config.upstreams)
