"""The harness: request log and admin API, thread and process modes, the CLI entry."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

import pytest

from execbudget.testing import FakeConfig, FakeProvider, RequestRecord, main
from execbudget.testing._control import HttpControl
from execbudget.testing._server import bind_loopback

USER = [{"role": "user", "content": "hello"}]


def _http(port: int, method: str, path: str, body: object = None) -> tuple[int, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body))
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    return response.status, json.loads(data) if data else None


def test_request_log_in_process_and_over_http(fake_provider: FakeProvider) -> None:
    with fake_provider.openai() as client:
        client.chat.completions.create(
            model="gpt-4o",
            messages=USER,
            max_tokens=7,
            extra_headers={"x-fake-output-tokens": "5", "Idempotency-Key": "abc"},
        )
    (record,) = fake_provider.requests
    assert isinstance(record, RequestRecord)
    assert record.path == "/v1/chat/completions" and record.method == "POST"
    assert record.model == "gpt-4o" and record.body["max_tokens"] == 7 and not record.stream
    assert record.headers["x-fake-output-tokens"] == "5"
    assert record.headers["idempotency-key"] == "abc"
    assert "authorization" not in record.headers  # credentials are never logged
    assert record.retry_count == 0 and record.status == 200 and record.outcome == "ok"
    assert record.read_timeout is not None  # the SDK's timeout for this attempt
    assert record.output_tokens == 5 and record.input_tokens == 8
    status, over_http = _http(fake_provider.port, "GET", "/_fake/requests")
    assert status == 200 and over_http == [record.to_dict()]
    assert _http(fake_provider.port, "DELETE", "/_fake/requests")[0] == 204
    assert fake_provider.requests == []
    stats = fake_provider.stats
    assert stats.requests == 1 and stats.by_path == {"/v1/chat/completions": 1}
    assert stats.input_tokens == 8 and stats.output_tokens == 5


def test_admin_config_endpoint(fake_provider: FakeProvider) -> None:
    status, config = _http(fake_provider.port, "POST", "/_fake/config", {"output_tokens": 3})
    assert status == 200 and isinstance(config, dict) and config["output_tokens"] == 3
    assert fake_provider.config.output_tokens == 3
    status, error = _http(fake_provider.port, "POST", "/_fake/config", {"outputs": 3})
    assert status == 400 and "unknown" in str(error)
    status, _ = _http(fake_provider.port, "POST", "/_fake/config", {"error_rate": 2})
    assert status == 400
    assert _http(fake_provider.port, "POST", "/_fake/reset")[0] == 200
    assert fake_provider.config == FakeConfig()


def test_fixture_resets_between_tests_part_1(fake_provider: FakeProvider) -> None:
    fake_provider.configure(output_tokens=1)
    with fake_provider.openai() as client:
        client.models.list()


def test_fixture_resets_between_tests_part_2(fake_provider: FakeProvider) -> None:
    assert fake_provider.config.output_tokens == 32 and fake_provider.requests == []


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="tool_call_policy"):
        FakeConfig(tool_call_policy="sometimes")
    with pytest.raises(ValueError, match="unknown"):
        FakeConfig().replace(colour="blue")
    assert FakeConfig().replace(omit_usage="true", latency_ms="5").omit_usage is True
    assert FakeConfig.from_dict(FakeConfig(seed=3).to_dict()) == FakeConfig(seed=3)


def test_only_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        bind_loopback("0.0.0.0")
    with pytest.raises(ValueError, match="loopback"):
        FakeProvider(host="192.0.2.1").start()


def test_listening_socket_is_tcp_so_responses_are_not_nagled(fake_provider: FakeProvider) -> None:
    sock = bind_loopback()
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
    with fake_provider.openai() as client:
        timings = []
        for _ in range(15):
            start = time.perf_counter()
            client.models.list()
            timings.append(time.perf_counter() - start)
    # Nagle + delayed ACK would make every request take ~40 ms.
    assert statistics.median(timings) < 0.03


def test_process_mode() -> None:
    with FakeProvider(process=True, output_tokens=4) as fp:
        assert fp.pid != os.getpid()
        with fp.openai() as client:
            r = client.chat.completions.create(model="gpt-4o", messages=USER)
        assert r.usage is not None and r.usage.completion_tokens == 4
        fp.configure(output_tokens=6)
        with fp.anthropic() as client:
            m = client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=USER)
        assert m.usage.output_tokens == 6
        log = fp.wait_for_requests(2)
        assert [r.path for r in log] == ["/v1/chat/completions", "/v1/messages"]
        assert fp.stats.requests == 2
        with pytest.raises(RuntimeError, match="thread mode"):
            _ = fp.state
        fp.reset()
        assert fp.requests == [] and fp.config.output_tokens == 4


def test_cli_serves_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "execbudget.testing", "--port", "0", "--set", "output_tokens=2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("execbudget fake provider listening on http://127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        control = HttpControl("127.0.0.1", port)
        assert control.get_config().output_tokens == 2
        status, body = _http(
            port, "POST", "/v1/chat/completions", {"model": "gpt-4o", "messages": USER}
        )
        assert status == 200 and isinstance(body, dict) and body["usage"]["completion_tokens"] == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def test_cli_entry_points() -> None:
    from execbudget.testing import fake_provider

    assert fake_provider.main is main  # what `execbudget fake-provider` calls


def test_main_rejects_bad_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--set", "bogus=1"])
    assert info.value.code == 2
    assert "unknown" in capsys.readouterr().err


def test_throughput_probe_runs(fake_provider: FakeProvider) -> None:
    from execbudget.testing.throughput import measure

    result = measure(fake_provider, seconds=0.2, threads=2, output_tokens=8)
    assert result.requests > 0 and result.per_second > 0 and result.p50_ms > 0
    assert fake_provider.stats.requests == result.requests + 2  # plus one warm-up per thread
