"""
Prometheus metrics of the gateway, served at ``/metrics``.

Each app gets its own registry, so several apps in one process (tests) never collide.
Under ``--workers N`` each uvicorn worker is its own process: set
``PROMETHEUS_MULTIPROC_DIR`` to a shared empty directory and ``/metrics`` aggregates every
worker (prometheus-client's multiprocess mode); without it a scrape sees one worker.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics"]

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class GatewayMetrics:
    """The gateway's counters, gauges and histograms (names prefixed ``execbudget_gateway_``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        p = "execbudget_gateway_"
        r = self.registry
        self.requests = Counter(
            p + "requests",
            "Requests answered, by route and HTTP status",
            ["route", "status"],
            registry=r,
        )
        self.admissions = Counter(
            p + "admissions", "Model calls admitted (a hold was granted)", ["route"], registry=r
        )
        self.denials = Counter(
            p + "denials",
            "Model calls denied before any spend, by budget dimension and reason",
            ["dimension", "reason"],
            registry=r,
        )
        self.clamped = Counter(
            p + "clamped",
            "Admissions whose max_tokens was lowered to what the chain affords",
            registry=r,
        )
        self.holds_in_flight = Gauge(
            p + "holds_in_flight",
            "Holds granted and not yet settled",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.cost_held = Counter(
            p + "cost_held", "Worst-case cost held at admission (policy currency)", registry=r
        )
        self.cost_charged = Counter(
            p + "cost_charged", "Actual cost committed at settlement (policy currency)", registry=r
        )
        self.overruns = Counter(
            p + "overruns",
            "Settlements that charged more than was held (recorded, the line blocked)",
            registry=r,
        )
        self.streams_cut = Counter(
            p + "streams_cut",
            "Streams the gateway ended early: output reached the hold, or a kill switch",
            ["reason"],
            registry=r,
        )
        self.client_disconnects = Counter(
            p + "client_disconnects", "Streams whose client went away before the end", registry=r
        )
        self.ledger_errors = Counter(
            p + "ledger_errors",
            "Ledger operations that failed (unreachable, ...)",
            ["op"],
            registry=r,
        )
        self.upstream_errors = Counter(
            p + "upstream_errors",
            "Upstream calls that failed or answered an error",
            ["provider", "kind"],
            registry=r,
        )
        self.upstream_latency = Histogram(
            p + "upstream_latency_seconds",
            "Time to the upstream's response headers",
            ["provider"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.admission_latency = Histogram(
            p + "admission_latency_seconds",
            "Gateway time before the upstream call: auth, counting, pricing, the hold",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))
