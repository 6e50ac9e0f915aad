"""
One small simulation of every pattern, shared by the folder's tests.

The simulation starts its own fake provider and runs each pattern twice (about ten
seconds at the small sizes); every test reads the same result. The tests of this folder
share an xdist group so that it runs once per test session, not once per worker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from execbudget.simulate import PATTERNS
from execbudget.simulate.model import ScenarioResult
from execbudget.simulate.runner import Simulation, simulate


@pytest.fixture(scope="session")
def simulation(tmp_path_factory: pytest.TempPathFactory) -> Simulation:
    """Every pattern at the small sizes, on an embedded SQLite ledger."""
    ledger = tmp_path_factory.mktemp("simulate") / "ledger.db"
    return simulate(PATTERNS, ledger=f"sqlite:///{ledger}", small=True)


@pytest.fixture(scope="session")
def by_pattern(simulation: Simulation) -> dict[str, ScenarioResult]:
    return {r.pattern: r for r in simulation.results}


@pytest.fixture
def chart_path(tmp_path: Path) -> Path:
    return tmp_path / "charts" / "spend.png"
