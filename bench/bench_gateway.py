"""
The gateway's cost and effect, against the fake provider in a child process.

    python -m bench.bench_gateway [--seconds S] [--quick] [--ledger URL]
        [--only latency|throughput|overshoot] [--floors]

1. **Added latency** at a fixed request rate (open loop, 200 requests/s through the gateway
   and 200/s straight to the fake provider, taking turns so load and drift hit both alike):
   p50 and p99 of each and their difference. One gateway process, Redis ledger. Then the
   **floors**, measured the same way (with the whole run, or ``--only latency --floors``): a
   null proxy (the gateway's server stack and upstream pool, no budget logic) and a bare
   ASGI app (a canned answer): how much of the added latency is the hop itself.
2. **Throughput**: closed loop, 32 connections, non-streaming chat calls through 1 and 2
   gateway processes on the Redis ledger; requests/s and latency percentiles.
3. **Hold before vs charge after**, side by side on the same load: 48 concurrent clients
   calling until refused, against our gateway and against a tiny **post-hoc reference
   proxy** written here (read the spend, forward, charge the reported cost after the
   answer: what Portkey, Kong, Envoy, Cloudflare and LiteLLM's session budgets do; see
   docs/gateway.md). Both on 2 processes sharing Redis; figures: spent vs limit
   (overshoot), requests admitted, and throughput.

The load generator speaks raw HTTP/1.1 over asyncio streams (keep-alive, one request in
flight per connection), so the client's own cost stays small next to what is measured.
The load generator, the fake provider, Redis and the gateway processes all share the
machine's cores, so the throughput parts also report the **CPU milliseconds per answered
request** of each (``cpu_ms_per_req``: from /proc for the child processes, Redis's own
``INFO cpu``, this process's ``process_time``): a figure that other load on a shared
machine disturbs much less than requests/s, and that shows which party the cores went to.
The machine is shared: the 1-minute load average is reported before and after each part.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from execbudget.gateway import hash_key
from execbudget.pricing import PriceBook, Usage
from execbudget.testing import FakeProvider
from execbudget.units import money_to_units, units_to_money

from ._common import emit, machine, percentile

KEY = "ebk-bench-0123456789abcdefghijklmnopqrstuv"
MODEL = "gpt-4o-mini"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Summarise the budget."}],
        "max_tokens": 64}  # fmt: skip
REDIS_URL = os.environ.get("EXECBUDGET_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


# -- a small HTTP/1.1 client ---------------------------------------------------------------
class RawConnection:
    """One keep-alive HTTP/1.1 connection; responses must carry Content-Length."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: bytes = b"") -> tuple[int, bytes]:
        reused = self.writer is not None
        status_line = await self._send(path, body, headers)
        if not status_line and reused:
            # The server closed this connection while it sat idle (uvicorn's keep-alive
            # timeout is 5 s): the request never reached it, so send it on a new one.
            self.close()
            self.writer = None
            status_line = await self._send(path, body, headers)
        assert self.reader is not None
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def _send(self, path: str, body: bytes, headers: bytes) -> bytes:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(
            b"POST %s HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n%s\r\n%s" % (path.encode(), len(body), headers, body)
        )
        try:
            return await self.reader.readline()
        except ConnectionError:
            return b""

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _auth() -> bytes:
    return f"authorization: Bearer {KEY}\r\n".encode()


# -- processes -----------------------------------------------------------------------------
def _bind() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class Child:
    """A server in a child process on a socket bound here; ``port`` answers when ready."""

    def __init__(self, command: list[str]) -> None:
        sock = _bind()
        self.port = int(sock.getsockname()[1])
        # A file, not a pipe: nobody drains a pipe while the benchmark runs, and a server
        # that fills one blocks on its next log line.
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*command, "--fd", str(sock.fileno())],
            pass_fds=(sock.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )
        sock.close()

    def wait(self, path: str = "/healthz", timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.errors()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError("server did not start")

    def errors(self) -> str:
        self.stderr.seek(0)
        return str(self.stderr.read().decode(errors="replace"))[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        logged = self.errors()
        if '"level":"error"' in logged:
            print(json.dumps({"server_errors": logged[-600:]}), file=sys.stderr)
        self.stderr.close()


def _files(policy: dict[str, Any]) -> tuple[Path, Path]:
    root = Path(tempfile.mkdtemp(prefix="bench-gw-"))
    (root / "policy.yaml").write_text(yaml.safe_dump(policy))
    keys = {"keys": [{"id": "bench", "hash": hash_key(KEY), "org": "acme", "team": "t"}]}
    (root / "keys.yaml").write_text(yaml.safe_dump(keys))
    return root / "policy.yaml", root / "keys.yaml"


def gateways(
    n: int, upstream: str, ledger: str, policy: dict[str, Any], extra: tuple[str, ...] = ()
) -> list[Child]:
    policy_file, keys_file = _files(policy)
    children = [
        Child([sys.executable, "-m", "execbudget.gateway", "serve", "--policy", str(policy_file),
               "--upstream", f"openai={upstream}", "--keys", str(keys_file), "--ledger", ledger,
               "--log-level", "WARNING", *extra])
        for _ in range(n)
    ]  # fmt: skip
    for child in children:
        child.wait()
    return children


def posthoc_proxies(n: int, upstream: str, redis_url: str, prefix: str, limit: int) -> list[Child]:
    children = [
        Child([sys.executable, "-m", "bench.bench_gateway", "--serve-posthoc", "--upstream",
               upstream, "--redis", redis_url, "--prefix", prefix, "--limit", str(limit)])
        for _ in range(n)
    ]  # fmt: skip
    for child in children:
        child.wait()
    return children


def _redis_ok() -> bool:
    try:
        import redis

        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1) as client:
            client.ping()
        return True
    except Exception:
        return False


def _drop_redis(prefix: str) -> None:
    import redis

    with redis.Redis.from_url(REDIS_URL) as client:
        names = list(client.scan_iter(match="*" + prefix + "*", count=1000))
        for i in range(0, len(names), 500):
            client.delete(*names[i : i + 500])


# -- the post-hoc reference proxy ----------------------------------------------------------
def serve_posthoc(args: argparse.Namespace) -> int:
    """
    Check-then-charge-after, as most gateways do: refuse when the recorded spend has
    reached the limit, otherwise forward, and add the reported cost once the answer is in.
    """
    import httpx2
    import redis.asyncio as aioredis
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    book = PriceBook()
    # the gateway's HTTP client, so the comparison is of the accounting, not the client
    client = httpx2.AsyncClient(limits=httpx2.Limits(max_connections=512), timeout=60)
    store = aioredis.Redis.from_url(args.redis)
    spent_key = args.prefix + "spent"

    async def chat(request: Request) -> Response:
        spent = int(await store.get(spent_key) or 0)
        if spent >= args.limit:
            return Response(b'{"error":{"type":"budget_exceeded"}}', 402)
        body = await request.body()
        answer = await client.post(f"{args.upstream}/v1/chat/completions", content=body,
                                   headers={"content-type": "application/json"})  # fmt: skip
        data = answer.json()
        usage = data.get("usage") or {}
        cost = book.cost(
            str(data.get("model", MODEL)),
            Usage(input_tokens=usage.get("prompt_tokens", 0),
                  output_tokens=usage.get("completion_tokens", 0)),
        )  # fmt: skip
        await store.incrby(spent_key, money_to_units(cost))
        return Response(answer.content, answer.status_code, media_type="application/json")

    async def health(request: Request) -> Response:
        return Response(b"ok")

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                            Route("/healthz", health)])  # fmt: skip
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=args.fd)])
    return 0


# -- floors: the hop without the gateway -----------------------------------------------------
def serve_floor(args: argparse.Namespace) -> int:
    """
    The floors of the added latency, on the gateway's own server stack (uvicorn with
    uvloop and httptools, a raw ASGI app): ``null`` forwards each request to the fake
    provider through the gateway's upstream pool (``KeepAlivePool``) and returns its
    answer, with no budget logic at all; ``bare`` answers a canned chat completion without
    any upstream call (what the server alone costs).
    """
    import httpcore2
    import uvicorn

    from execbudget.gateway.pool import KeepAlivePool

    canned = json.dumps(
        {"id": "chatcmpl-floor", "object": "chat.completion", "created": 0, "model": MODEL,
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "x " * 16},
                      "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 12, "completion_tokens": 16, "total_tokens": 28}}
    ).encode()  # fmt: skip
    pool = KeepAlivePool(512, None)
    url = httpcore2.URL(f"{args.upstream}/v1/chat/completions")
    origin = (url.scheme, url.host, url.port or 80)
    host = url.host + b":" + str(url.port or 80).encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        out = canned
        if args.serve_floor == "null" and scope["path"] != "/healthz":
            headers = [(b"host", host), (b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode())]  # fmt: skip
            answer = await pool.request(origin, b"POST", url.target, headers, body, timeout_s=60)
            out = answer.body
        await send(
            {"type": "http.response.start", "status": 200,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(out)).encode())]}
        )  # fmt: skip
        await send({"type": "http.response.body", "body": out})

    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", loop="auto", http="auto"
    )
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=args.fd)])
    return 0


def added(direct: list[float], through: list[float], name: str) -> dict[str, Any]:
    """Percentiles of the direct and the ``name`` latencies (seconds) and their differences."""
    direct.sort()
    through.sort()
    p = {q: (percentile(direct, q), percentile(through, q)) for q in (0.5, 0.9, 0.99)}
    return {
        "requests": len(through),
        "direct_p50_ms": round(p[0.5][0] * 1000, 3),
        f"{name}_p50_ms": round(p[0.5][1] * 1000, 3),
        "added_p50_ms": round((p[0.5][1] - p[0.5][0]) * 1000, 3),
        "added_p90_ms": round((p[0.9][1] - p[0.9][0]) * 1000, 3),
        "direct_p99_ms": round(p[0.99][0] * 1000, 3),
        f"{name}_p99_ms": round(p[0.99][1] * 1000, 3),
        "added_p99_ms": round((p[0.99][1] - p[0.99][0]) * 1000, 3),
    }


def floor_latency(fake: FakeProvider, seconds: float, rate: float) -> list[dict[str, Any]]:
    """Added latency of the floors (``serve_floor``), measured as ``added_latency`` is."""
    out = []
    for mode in ("null", "bare"):
        child = Child([sys.executable, "-m", "bench.bench_gateway", "--serve-floor", mode,
                       "--upstream", fake.base_url])  # fmt: skip
        child.wait()
        load_before = _load()
        try:
            targets = [("127.0.0.1", fake.port, b""), ("127.0.0.1", child.port, b"")]
            asyncio.run(open_loop(targets, rate, 1.0))
            direct, through = asyncio.run(open_loop(targets, rate, seconds))
        finally:
            child.stop()
        out.append(
            emit(
                "gateway.added_latency_floor",
                mode={
                    "null": "null proxy (same server and upstream pool, no budget logic)",
                    "bare": "bare ASGI app (canned answer, no upstream call)",
                }[mode],
                rate_per_s=rate,
                **added(direct, through, "floor"),
                load_before=load_before,
                load_after=_load(),
            )
        )
    return out


# -- load ------------------------------------------------------------------------------------
async def open_loop(
    targets: list[tuple[str, int, bytes]], rate: float, seconds: float
) -> list[list[float]]:
    """
    Each target gets ``rate`` requests/s on a fixed schedule; latencies in seconds. The
    targets take turns, spread evenly over each period (at 200/s: the direct call, then the
    gateway's 2.5 ms later): fired at the same instant, the direct call would reach the
    single-process fake provider first and the gateway's own work before its upstream call
    would hide behind it, which reads as less added latency than there is.
    """
    latencies: list[list[float]] = [[] for _ in targets]
    idle: list[list[RawConnection]] = [[] for _ in targets]
    body = json.dumps(BODY).encode()
    errors = 0

    async def one(i: int) -> None:
        nonlocal errors
        host, port, headers = targets[i]
        conn = idle[i].pop() if idle[i] else RawConnection(host, port)
        started = time.perf_counter()
        status, _ = await conn.post("/v1/chat/completions", body, headers)
        latencies[i].append(time.perf_counter() - started)
        if status != 200:
            errors += 1
        idle[i].append(conn)

    tasks = []
    start = time.perf_counter()
    total = int(rate * seconds)
    turns = len(targets)
    for n in range(total * turns):
        due = start + n / (rate * turns)
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(n % turns)))
    await asyncio.gather(*tasks)
    for conns in idle:
        for conn in conns:
            conn.close()
    if errors:
        print(json.dumps({"warning": f"{errors} non-200 answers"}), file=sys.stderr)
    return latencies


async def closed_loop(
    ports: list[int],
    connections: int,
    seconds: float,
    stop: Callable[[int], bool] | None = None,
    request: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``connections`` clients, each sending the next request when the last answered."""
    body = json.dumps(request or BODY).encode()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds

    async def client(i: int) -> None:
        conn = RawConnection("127.0.0.1", ports[i % len(ports)])
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                status, _ = await conn.post("/v1/chat/completions", body, _auth())
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1
                if stop is not None and stop(status):
                    return
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    ok = statuses.get(200, 0)
    return {
        "elapsed_s": round(elapsed, 2),
        "ok": ok,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "ok_per_s": round(ok / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _proc_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) process ``pid`` has used; None where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _redis_cpu_s() -> float | None:
    try:
        import redis

        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1) as client:
            info = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    except Exception:
        return None


class CpuMeter:
    """CPU used by each party between ``start()`` and ``per_request(n)``."""

    def __init__(self, servers: list[Child], fake: FakeProvider) -> None:
        # the fake provider's own process; None when it serves from a thread of this one
        fake_pid = fake.pid if fake.pid != os.getpid() else None
        self.probes: dict[str, Callable[[], float | None]] = {
            "servers": lambda: _sum([_proc_cpu_s(c.proc.pid) for c in servers]),
            "fake_provider": lambda: _proc_cpu_s(fake_pid) if fake_pid else None,
            "redis": _redis_cpu_s,
            "load_generator": time.process_time,
        }
        self.before: dict[str, float | None] = {}

    def start(self) -> None:
        self.before = {name: probe() for name, probe in self.probes.items()}

    def per_request(self, requests: int) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, probe in self.probes.items():
            before, after = self.before.get(name), probe()
            out[name] = (
                None
                if before is None or after is None or not requests
                else round((after - before) / requests * 1000, 3)
            )
        return out


def _sum(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


# -- the three parts -----------------------------------------------------------------------
def added_latency(fake: FakeProvider, ledger: str, seconds: float, rate: float) -> dict[str, Any]:
    policy = {"scopes": [{"match": "org:acme", "limits": {"cost": "1000000 USD"}}]}
    children = gateways(1, fake.base_url, ledger, policy)
    load_before = _load()
    try:
        targets = [("127.0.0.1", fake.port, b""), ("127.0.0.1", children[0].port, _auth())]
        asyncio.run(open_loop(targets, rate, 1.0))  # warm connections, caches and the JIT-less
        direct, gateway = asyncio.run(open_loop(targets, rate, seconds))
    finally:
        for child in children:
            child.stop()
    return emit(
        "gateway.added_latency",
        ledger=ledger.split("?")[0].split("://")[0],
        rate_per_s=rate,
        **added(direct, gateway, "gateway"),
        load_before=load_before,
        load_after=_load(),
    )


def throughput(
    fake: FakeProvider, ledger: str, processes: int, seconds: float, headers: bool = True
) -> dict[str, Any]:
    policy = {"scopes": [{"match": "org:acme", "limits": {"cost": "1000000 USD"}}]}
    extra = () if headers else ("--no-remaining-headers",)
    children = gateways(processes, fake.base_url, ledger, policy, extra)
    load_before = _load()
    cpu = CpuMeter(children, fake)
    try:
        ports = [c.port for c in children]
        asyncio.run(closed_loop(ports, 32, 1.0))
        cpu.start()
        result = asyncio.run(closed_loop(ports, 32, seconds))
        used = cpu.per_request(result["ok"])
    finally:
        for child in children:
            child.stop()
    return emit(
        "gateway.throughput",
        ledger=ledger.split("?")[0].split("://")[0],
        processes=processes,
        remaining_headers=headers,
        connections=32,
        **result,
        cpu_ms_per_req={"gateways": used.pop("servers"), **used},
        load_before=load_before,
        load_after=_load(),
    )


def reference_throughput(fake: FakeProvider, seconds: float) -> dict[str, Any]:
    """The post-hoc reference proxy on the throughput load: the floor of proxying at all."""
    prefix = f"ebbench:{uuid.uuid4().hex[:8]}:"
    children = posthoc_proxies(1, fake.base_url, REDIS_URL, prefix, 10**15)
    load_before = _load()
    cpu = CpuMeter(children, fake)
    try:
        ports = [c.port for c in children]
        asyncio.run(closed_loop(ports, 32, 1.0))
        cpu.start()
        result = asyncio.run(closed_loop(ports, 32, seconds))
        used = cpu.per_request(result["ok"])
    finally:
        for child in children:
            child.stop()
        _drop_redis(prefix)
    return emit(
        "gateway.throughput",
        mode="charge-after reference proxy (no hold, no metering, no headers)",
        ledger="redis",
        processes=1,
        connections=32,
        **result,
        cpu_ms_per_req={"proxy": used.pop("servers"), **used},
        load_before=load_before,
        load_after=_load(),
    )


def overshoot(fake: FakeProvider, seconds: float) -> list[dict[str, Any]]:
    """Same budget, same load, held before (ours) vs charged after (reference)."""
    limit = Decimal("0.10")
    limit_units = money_to_units(limit)
    # gpt-4o, answers of 200 tokens under max_tokens 256: ~0.002 USD a call, ~50 calls fit
    request = {**BODY, "model": "gpt-4o", "max_tokens": 256}
    fake.configure(output_tokens=200, latency_ms=50)
    out = []
    try:
        for mode in ("hold-before (execbudget)", "charge-after (reference)"):
            prefix = f"ebbench:{uuid.uuid4().hex[:8]}:"
            if mode.startswith("hold"):
                ledger = f"{REDIS_URL}?prefix={prefix}"
                policy = {"scopes": [{"match": "org:acme", "limits": {"cost": f"{limit} USD"}}]}
                children = gateways(2, fake.base_url, ledger, policy)
            else:
                children = posthoc_proxies(2, fake.base_url, REDIS_URL, prefix, limit_units)
            load_before = _load()
            try:
                result = asyncio.run(
                    closed_loop(
                        [c.port for c in children], 48, seconds, lambda s: s == 402, request
                    )
                )
            finally:
                for child in children:
                    child.stop()
            spent = _spent(mode, prefix)
            _drop_redis(prefix)
            out.append(
                emit(
                    "gateway.overshoot",
                    mode=mode,
                    limit_usd=str(limit),
                    spent_usd=str(units_to_money(spent)),
                    overshoot_pct=round((spent - limit_units) / limit_units * 100, 1),
                    concurrency=48,
                    **result,
                    load_before=load_before,
                    load_after=_load(),
                )
            )
    finally:
        fake.configure(output_tokens=16, latency_ms=0)
    return out


def _spent(mode: str, prefix: str) -> int:
    if mode.startswith("charge"):
        import redis

        with redis.Redis.from_url(REDIS_URL) as client:
            return int(client.get(prefix + "spent") or 0)
    from execbudget.ledger import Ledger

    with Ledger.from_url(f"{REDIS_URL}?prefix={prefix}") as ledger:
        lines = [s for s in ledger.lines("org:acme") if s.key == ("org:acme", "total", "cost")]
        return lines[0].spent if lines else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--quick", action="store_true", help="3-second runs")
    parser.add_argument("--ledger", help="ledger URL (default: Redis, else SQLite)")
    parser.add_argument("--only", choices=["latency", "throughput", "overshoot"])
    parser.add_argument(
        "--floors", action="store_true", help="with the latency part: also the floors"
    )
    parser.add_argument("--serve-posthoc", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor", choices=["null", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_posthoc:
        return serve_posthoc(args)
    if args.serve_floor:
        return serve_floor(args)
    seconds = 3.0 if args.quick else args.seconds
    redis_ok = _redis_ok()
    ledger = args.ledger or (
        f"{REDIS_URL}?prefix=ebbench:{uuid.uuid4().hex[:8]}:"
        if redis_ok
        else f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    )
    emit("gateway.machine", **machine(), load=_load())
    with FakeProvider(process=True, output_tokens=16) as fake:
        if args.only in (None, "latency"):
            added_latency(fake, ledger, seconds, args.rate)
            if args.floors or args.only is None:
                floor_latency(fake, seconds, args.rate)
        if args.only in (None, "throughput"):
            for processes in (1, 2):
                throughput(fake, ledger, processes, seconds)
            throughput(fake, ledger, 1, seconds, headers=False)
            if redis_ok:
                reference_throughput(fake, seconds)
        if args.only in (None, "overshoot") and redis_ok:
            overshoot(fake, seconds)
    if redis_ok and "prefix=ebbench:" in ledger:
        _drop_redis(ledger.split("prefix=")[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
