"""
Run the failure patterns: one fake provider on loopback, one ledger, one session.

Scenarios run one after another (each measures its provider's log alone), each twice;
the provider's configuration is reset between them. Every scope a simulation opens
carries the session's instance tag, so a simulation never reads or spends an earlier
one's lines, whatever ledger it is given.
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..errors import ConfigurationError
from ..ledger import Ledger
from ..pricing import get_encoder
from . import DEFAULT_LEDGER, PATTERNS, coupling, fanout, partial, retry_storm, runaway
from ._harness import Harness
from .model import ScenarioResult

__all__ = ["DEFAULT_LEDGER", "Simulation", "resolve", "simulate"]

_Run = Callable[[Harness, bool], ScenarioResult]
_RUNNERS: Final[dict[str, _Run]] = {
    runaway.PATTERN: lambda h, small: runaway.run(h, runaway.SMALL if small else runaway.DEMO),
    fanout.PATTERN: lambda h, small: fanout.run(h, fanout.SMALL if small else fanout.DEMO),
    coupling.PATTERN: lambda h, small: coupling.run(h, coupling.SMALL if small else coupling.DEMO),
    partial.PATTERN: lambda h, small: partial.run(h, partial.SMALL if small else partial.DEMO),
    retry_storm.PATTERN: lambda h, small: retry_storm.run(
        h, retry_storm.SMALL if small else retry_storm.DEMO
    ),
}
assert tuple(_RUNNERS) == PATTERNS


@dataclass(slots=True)
class Simulation:
    """Every scenario's result, and where it ran."""

    results: list[ScenarioResult]
    ledger: str
    elapsed_s: float
    small: bool = False
    chart: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def contained(self) -> bool:
        """Every scenario held to its budget with zero overshoot under the full stack."""
        return all(r.contained for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "contained": self.contained,
            "ledger": self.ledger,
            "elapsed_s": round(self.elapsed_s, 3),
            "small": self.small,
            "chart": None if self.chart is None else str(self.chart),
            "scenarios": [r.to_dict() for r in self.results],
        }


def resolve(pattern: str | None) -> tuple[str, ...]:
    """
    The patterns named by ``pattern``: ``all`` (or None), a full name, or a part of one
    that names exactly one (``retry``, ``fan-out``, ``partial``).
    """
    if pattern is None or pattern == "all":
        return PATTERNS
    if pattern in PATTERNS:
        return (pattern,)
    found = [p for p in PATTERNS if pattern in p]
    if len(found) == 1:
        return (found[0],)
    raise ConfigurationError(
        f"unknown failure pattern {pattern!r}; choose one of: all, {', '.join(PATTERNS)}"
    )


def simulate(
    patterns: Sequence[str] = PATTERNS,
    *,
    ledger: str = DEFAULT_LEDGER,
    small: bool = False,
    on_start: Callable[[str], None] | None = None,
) -> Simulation:
    """
    Run ``patterns`` (in the given order) against a fake provider started for the purpose,
    on the ledger at ``ledger``. ``small`` uses the sizes the test suite runs in seconds.
    """
    from ..testing import FakeProvider

    unknown = [p for p in patterns if p not in _RUNNERS]
    if unknown:
        raise ConfigurationError(f"unknown failure patterns {unknown}; known: {list(PATTERNS)}")
    started = time.perf_counter()
    # Load the OpenAI encoding now (about 0.3 s) rather than inside the first timed call.
    get_encoder("o200k_base")
    session = f"sim{uuid.uuid4().hex[:8]}"
    results: list[ScenarioResult] = []
    with FakeProvider(process=True) as provider, Ledger.from_url(ledger) as books:
        harness = Harness(provider, books, session)
        for pattern in patterns:
            if on_start is not None:
                on_start(pattern)
            provider.reset()
            try:
                results.append(_RUNNERS[pattern](harness, small))
            finally:
                harness.close_clients()
                # The pattern's cyclic garbage (SDK clients, their connections, the
                # tracebacks of the exceptions that stopped it) is finalised here, in this
                # thread, not inside the next pattern's worker threads.
                gc.collect()
        harness.close()
    return Simulation(results, ledger, time.perf_counter() - started, small)
