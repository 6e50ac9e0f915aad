"""
Gateway test plumbing: keys, policies, the gateway on a loopback uvicorn (in a thread of
this process, or as separate processes), and ledger inspection helpers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import httpx2
import uvicorn
import yaml

from execbudget.gateway import (
    AdminKey,
    GatewayConfig,
    KeyRecord,
    KeyStore,
    create_app,
    hash_key,
    parse_upstreams,
)
from execbudget.ledger import HoldRecord, Ledger, LineState
from execbudget.policy import Policy
from execbudget.testing import FakeProvider
from execbudget.testing._server import bind_loopback

ACME_KEY = "ebk-acme-bot-0123456789abcdefghijklmnop"
ACME_OTHER_KEY = "ebk-acme-ops-0123456789abcdefghijklmnop"
BETA_KEY = "ebk-beta-bot-0123456789abcdefghijklmnop"
REVOKED_KEY = "ebk-acme-old-0123456789abcdefghijklmnop"
LIMITED_KEY = "ebk-acme-mini-0123456789abcdefghijklmno"
ADMIN_KEY = "ebk-admin-ops-0123456789abcdefghijklmno"
UPSTREAM_SECRET = "sk-upstream-secret-never-shown-0000"

KEY_RECORDS = [
    KeyRecord("acme-bot", hash_key(ACME_KEY), "acme", "search"),
    KeyRecord("acme-ops", hash_key(ACME_OTHER_KEY), "acme", "ops"),
    KeyRecord("beta-bot", hash_key(BETA_KEY), "beta", "search"),
    KeyRecord("acme-old", hash_key(REVOKED_KEY), "acme", "search", revoked=True),
    KeyRecord("acme-mini", hash_key(LIMITED_KEY), "acme", None, ("gpt-4o-mini", "claude-3-5-*")),
]
ADMINS = [AdminKey("ops", hash_key(ADMIN_KEY))]


def keystore() -> KeyStore:
    return KeyStore(KEY_RECORDS, ADMINS)


def keys_file(path: Path) -> Path:
    data = {
        "admin": [{"name": a.name, "hash": a.digest} for a in ADMINS],
        "keys": [
            {
                "id": r.id,
                "hash": r.digest,
                "org": r.org,
                **({"team": r.team} if r.team else {}),
                **({"models": list(r.models)} if r.models else {}),
                **({"revoked": True} if r.revoked else {}),
            }
            for r in KEY_RECORDS
        ],
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def config(
    fake: FakeProvider | None,
    policy: Mapping[str, Any] | Policy,
    *,
    ledger_url: str = "memory://",
    upstream_url: str | None = None,
    **changes: Any,
) -> GatewayConfig:
    base = upstream_url or (fake.base_url if fake is not None else "http://upstream.invalid")
    env = {"OPENAI_API_KEY": UPSTREAM_SECRET, "ANTHROPIC_API_KEY": UPSTREAM_SECRET}
    changes.setdefault("forward_headers", ("anthropic-version", "x-stainless-", "x-fake-"))
    changes.setdefault("reap_interval_s", 0)
    return GatewayConfig(
        policy=policy if isinstance(policy, Policy) else Policy.from_dict(policy),
        upstreams=parse_upstreams([f"openai={base}", f"anthropic={base}"], env=env),
        ledger_url=ledger_url,
        keys=keystore(),
        **changes,
    )


class GatewayServer:
    """The gateway app on uvicorn, on a loopback port, in a daemon thread of this process."""

    def __init__(self, cfg: GatewayConfig, transport: httpx2.AsyncBaseTransport | None = None):
        self.app = create_app(cfg, transport=transport)
        self.gateway = self.app.state.gateway
        self._sock = bind_loopback()
        self.port = int(self._sock.getsockname()[1])
        uv_config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="on",
            ws="none",
            http="h11",
            loop="asyncio",
            timeout_keep_alive=60,
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(uv_config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self) -> GatewayServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ledger(self) -> Ledger:
        """The gateway's own ledger (same store), for assertions from the test thread."""
        ledger: Ledger = self.gateway.sync_ledger
        return ledger

    def openai(self, key: str = ACME_KEY, **kwargs: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=key, **kwargs)

    def anthropic(self, key: str = ACME_KEY, **kwargs: Any) -> Any:
        import anthropic

        return anthropic.Anthropic(base_url=self.base_url, api_key=key, **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {ADMIN_KEY}", **kwargs.pop("headers", {})}
        return httpx.request(
            method, f"{self.base_url}{path}", headers=headers, timeout=10, **kwargs
        )


def line(ledger: Any, scope: str, dimension: str, window: str = "total") -> LineState | None:
    for state in ledger.lines(scope):
        if state.key == (scope, window, dimension):
            return state  # type: ignore[no-any-return]
    return None


def wait_no_holds(ledger: Any, timeout: float = 5.0) -> list[HoldRecord]:
    """Wait until every hold settled (streams settle just after the client's last byte)."""
    deadline = time.monotonic() + timeout
    while True:
        held: list[HoldRecord] = ledger.holds()
        if not held or time.monotonic() > deadline:
            return held
        time.sleep(0.02)


class GatewayProcess:
    """``python -m execbudget.gateway serve`` in a child process, on a socket bound here."""

    def __init__(self, args: list[str], env: Mapping[str, str] | None = None) -> None:
        self._sock = bind_loopback()
        self.port = int(self._sock.getsockname()[1])
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        command = [
            sys.executable,
            "-m",
            "execbudget.gateway",
            "serve",
            *args,
            "--fd",
            str(self._sock.fileno()),
            "--log-level",
            "WARNING",
        ]
        self.proc = subprocess.Popen(
            command,
            pass_fds=(self._sock.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env={**os.environ, **(env or {})},
        )
        self._sock.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited {self.proc.returncode}: {self.stderr()}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway did not start: {self.stderr()}")
            time.sleep(0.05)

    def stderr(self) -> str:
        self._stderr.seek(0)
        return str(self._stderr.read().decode(errors="replace"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
