"""
How many requests per second the fake provider serves, so benchmarks know what it costs.

    python -m execbudget.testing.throughput --seconds 5 --threads 1

The server runs in its own process (``FakeProvider(process=True)``); this process drives it
with the real sync ``openai`` client: non-streamed chat completions of ``--output-tokens``
tokens, one client per thread, for a bounded time and count. Loopback only.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import dataclass

from execbudget.testing.fake_provider import FakeProvider

__all__ = ["Throughput", "main", "measure"]


@dataclass(frozen=True, slots=True)
class Throughput:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def measure(
    provider: FakeProvider,
    *,
    seconds: float = 5.0,
    threads: int = 1,
    output_tokens: int = 32,
    max_requests: int = 200_000,
) -> Throughput:
    """Drive ``provider`` with ``threads`` sync openai clients for ``seconds`` (bounded)."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    stop_at = time.perf_counter() + seconds
    per_thread = max_requests // threads
    messages = [{"role": "user", "content": "How much does the fake provider cost?"}]

    def drive(sink: list[float]) -> None:
        with provider.openai() as client:
            headers = {"x-fake-output-tokens": str(output_tokens)}
            client.chat.completions.create(model="gpt-4o", messages=messages)  # type: ignore[arg-type]
            while time.perf_counter() < stop_at and len(sink) < per_thread:
                start = time.perf_counter()
                client.chat.completions.create(
                    model="gpt-4o",
                    messages=messages,  # type: ignore[arg-type]
                    extra_headers=headers,
                )
                sink.append(time.perf_counter() - start)

    began = time.perf_counter()
    workers = [threading.Thread(target=drive, args=(sink,)) for sink in latencies]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    flat = sorted(x for sink in latencies for x in sink)
    if not flat:
        return Throughput(0, elapsed, 0.0, 0.0)
    p99 = flat[min(len(flat) - 1, int(len(flat) * 0.99))]
    return Throughput(len(flat), elapsed, statistics.median(flat) * 1000, p99 * 1000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m execbudget.testing.throughput")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output-tokens", type=int, default=32)
    args = parser.parse_args(argv)
    with FakeProvider(process=True) as provider:
        result = measure(
            provider,
            seconds=args.seconds,
            threads=args.threads,
            output_tokens=args.output_tokens,
        )
        served = provider.stats.requests
    print(
        f"{result.requests} chat completions in {result.seconds:.2f} s "
        f"with {args.threads} thread(s): {result.per_second:.0f} req/s, "
        f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms (server saw {served})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
