"""Fault injection by header and by configuration, observed through the SDKs and the log."""

from __future__ import annotations

import contextlib
import threading
import time

import anthropic
import openai
import pytest

from execbudget.testing import FakeProvider, count_tokens

USER = [{"role": "user", "content": "hello"}]


def test_429_is_retried_by_the_sdk_and_every_attempt_is_logged(fake_provider: FakeProvider) -> None:
    with (
        fake_provider.openai(max_retries=2) as client,
        pytest.raises(openai.RateLimitError) as info,
    ):
        client.chat.completions.create(
            model="gpt-4o", messages=USER, extra_headers={"x-fake-error-status": "429"}
        )
    assert info.value.response.headers["retry-after-ms"] == "10"
    assert info.value.body["code"] == "rate_limit_exceeded"
    log = fake_provider.requests
    assert [r.retry_count for r in log] == [0, 1, 2]
    assert [r.status for r in log] == [429, 429, 429]
    assert fake_provider.stats.errors_injected == 3


def test_fail_attempts_lets_a_retry_succeed(fake_provider: FakeProvider) -> None:
    headers = {"x-fake-error-status": "503", "x-fake-fail-attempts": "2"}
    with fake_provider.openai(max_retries=3) as client:
        r = client.chat.completions.create(model="gpt-4o", messages=USER, extra_headers=headers)
    assert r.choices[0].message.content
    assert [(x.retry_count, x.status) for x in fake_provider.requests] == [
        (0, 503),
        (1, 503),
        (2, 200),
    ]


def test_fail_next_is_server_wide_and_counts_down(fake_provider: FakeProvider) -> None:
    fake_provider.configure(fail_next=1, error_status=429)
    with fake_provider.anthropic(max_retries=1) as client:
        m = client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=USER)
    assert m.usage.output_tokens == 5
    assert [r.status for r in fake_provider.requests] == [429, 200]
    assert fake_provider.config.fail_next == 0


def test_500_in_each_dialect(
    fake_provider: FakeProvider, oai: openai.OpenAI, ant: anthropic.Anthropic
) -> None:
    fake_provider.configure(error_rate=1.0, error_status=500)
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="gpt-4o", messages=USER)
    with pytest.raises(anthropic.InternalServerError) as info:
        ant.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=USER)
    assert info.value.body["error"]["type"] == "api_error"
    assert fake_provider.stats.errors_injected == 2


def test_error_rate_is_reproducible(fake_provider: FakeProvider, oai: openai.OpenAI) -> None:
    def pattern() -> list[int | None]:
        fake_provider.reset()
        fake_provider.configure(error_rate=0.5, error_status=500, seed=7)
        for _ in range(24):
            with contextlib.suppress(openai.InternalServerError):
                oai.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=1)
        return [r.status for r in fake_provider.requests]

    first = pattern()
    assert set(first) == {200, 500}
    assert pattern() == first


def test_omit_usage_everywhere(
    fake_provider: FakeProvider, oai: openai.OpenAI, ant: anthropic.Anthropic
) -> None:
    fake_provider.configure(omit_usage=True)
    assert oai.chat.completions.create(model="gpt-4o", messages=USER).usage is None
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks and all(c.usage is None for c in chunks)
    assert oai.responses.create(model="gpt-4o", input="hi").usage is None
    assert ant.messages.create(model="claude-haiku-4-5", max_tokens=9, messages=USER).usage is None
    events = list(
        ant.messages.create(model="claude-haiku-4-5", max_tokens=9, messages=USER, stream=True)
    )
    assert all(getattr(e, "usage", None) is None for e in events)
    # The provider still bills what it generated: the log knows.
    assert [r.output_tokens for r in fake_provider.requests] == [32, 32, 32, 9, 9]


def test_ignore_max_tokens_overruns_the_cap(
    fake_provider: FakeProvider, oai: openai.OpenAI
) -> None:
    fake_provider.configure(ignore_max_tokens=120)
    stream = oai.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert count_tokens("gpt-4o", "".join(pieces)) == 120
    assert usage is not None and usage.completion_tokens == 120
    assert fake_provider.requests[-1].body["max_tokens"] == 10


def test_latency_and_chunk_delay(oai: openai.OpenAI) -> None:
    start = time.perf_counter()
    oai.chat.completions.create(
        model="gpt-4o", messages=USER, extra_headers={"x-fake-latency-ms": "150"}
    )
    assert time.perf_counter() - start >= 0.15
    start = time.perf_counter()
    stream = oai.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        max_tokens=6,
        stream=True,
        extra_headers={"x-fake-latency-ms": "60", "x-fake-chunk-delay-ms": "20"},
    )
    arrivals = [
        time.perf_counter() - start for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert arrivals[0] >= 0.06
    assert arrivals[-1] >= 0.06 + 0.02 * (len(arrivals) - 1)


def test_hang_until_the_client_times_out(fake_provider: FakeProvider) -> None:
    with fake_provider.openai(timeout=0.3) as client, pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(
            model="gpt-4o", messages=USER, extra_headers={"x-fake-hang": "1"}
        )
    (record,) = fake_provider.wait_for_requests(1)
    assert record.outcome == "hang" and record.status == 499
    assert fake_provider.stats.hangs == 1


def test_stall_mid_stream(fake_provider: FakeProvider) -> None:
    fake_provider.configure(stall_after_chunks=3)
    got: list[str] = []
    with fake_provider.anthropic(timeout=0.5) as client, pytest.raises(anthropic.APITimeoutError):
        with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=50, messages=USER
        ) as stream:
            got.extend(stream.text_stream)
    assert len(got) == 3
    (record,) = fake_provider.wait_for_requests(1)
    assert record.outcome == "stalled"
    assert record.output_tokens == count_tokens("claude-haiku-4-5", "".join(got))


def test_a_hanging_request_does_not_block_shutdown() -> None:
    errors: list[BaseException] = []
    with FakeProvider(hang=True) as fp:
        client = fp.openai(timeout=30)

        def call() -> None:
            try:
                client.chat.completions.create(model="gpt-4o", messages=USER)
            except openai.APIError as exc:
                errors.append(exc)

        worker = threading.Thread(target=call)
        worker.start()
        fp.wait_until(lambda log: len(log) == 1)
        start = time.perf_counter()
    stopped_in = time.perf_counter() - start
    worker.join(timeout=10)
    client.close()
    assert stopped_in < 3
    assert not worker.is_alive() and len(errors) == 1


def test_abandoned_stream_is_logged_with_the_tokens_sent(fake_provider: FakeProvider) -> None:
    fake_provider.configure(chunk_delay_ms=30, output_tokens=100)
    got: list[str] = []
    with fake_provider.openai() as client:
        stream = client.chat.completions.create(model="gpt-4o", messages=USER, stream=True)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
            if len(got) == 3:
                break
        stream.close()
        (record,) = fake_provider.wait_for_requests(1)
    assert record.outcome == "disconnected"
    assert record.output_tokens is not None
    assert count_tokens("gpt-4o", "".join(got)) <= record.output_tokens < 100
