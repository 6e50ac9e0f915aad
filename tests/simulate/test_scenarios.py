"""
Every failure pattern, at the small sizes: contained by execbudget with zero overshoot on
the provider's bill, while the run without (full) budgets really overspends; and each
scenario's story holds (which layer stopped it, how many requests were sent).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from execbudget.simulate import PATTERNS, coupling, partial, retry_storm, runaway
from execbudget.simulate.model import ScenarioResult
from execbudget.simulate.runner import Simulation

pytestmark = pytest.mark.xdist_group("simulate")


def test_every_pattern_ran_in_order(simulation: Simulation) -> None:
    assert [r.pattern for r in simulation.results] == list(PATTERNS)
    assert simulation.contained


@pytest.mark.parametrize("pattern", PATTERNS)
def test_contained_with_zero_overshoot(by_pattern: dict[str, ScenarioResult], pattern: str) -> None:
    result = by_pattern[pattern]
    ours = result.budgeted

    assert ours.mode == "execbudget"
    assert result.overshoot(ours) == 0 and ours.spend <= result.budget
    assert not ours.capped  # stopped by a budget, never by the simulator's safety cap
    assert ours.problems == []  # every ledger line within its limit, nothing left held
    assert ours.stop.layer in (1, 2, 3, 4)
    assert result.contained


@pytest.mark.parametrize("pattern", PATTERNS)
def test_without_budgets_really_overspends(
    by_pattern: dict[str, ScenarioResult], pattern: str
) -> None:
    result = by_pattern[pattern]
    theirs = result.without

    assert result.overshoot(theirs) > 0 and result.failure_shown
    assert theirs.spend > result.budgeted.spend
    assert theirs.requests > result.budgeted.requests


@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_books_match_the_providers_bill(
    by_pattern: dict[str, ScenarioResult], pattern: str
) -> None:
    """execbudget's own count of the headline dimension equals what the provider billed."""
    ours = by_pattern[pattern].budgeted

    assert ours.books == ours.spend


@pytest.mark.parametrize("pattern", PATTERNS)
def test_timelines_are_cumulative(by_pattern: dict[str, ScenarioResult], pattern: str) -> None:
    for variant in (by_pattern[pattern].without, by_pattern[pattern].budgeted):
        times = [t for t, _ in variant.timeline]
        spend = [s for _, s in variant.timeline]

        assert variant.timeline[0] == (0.0, Decimal(0))
        assert times == sorted(times) and spend == sorted(spend)
        assert spend[-1] == variant.spend


def test_runaway_recursion_stops_at_the_step_budget(
    by_pattern: dict[str, ScenarioResult],
) -> None:
    result = by_pattern[runaway.PATTERN]
    size = runaway.SMALL

    assert result.without.capped and result.without.requests == size.safety_requests
    assert result.budgeted.stop.layer == 2
    assert result.budgeted.stop.what == f"steps {size.steps} on run:research-agent"
    # agent, tools, agent, tools ...: one model call per two super-steps, none after
    assert result.budgeted.requests == size.steps // 2
    assert result.budgeted.metrics["steps"] == size.steps


def test_silent_fan_out_is_refused_before_the_first_call(
    by_pattern: dict[str, ScenarioResult],
) -> None:
    result = by_pattern["silent-fan-out"]

    assert result.without.capped
    assert Decimal(result.without.metrics["projected_spend"]) > 10 * result.budget
    assert result.budgeted.requests == 0 and result.budgeted.spend == 0
    assert result.budgeted.stop.layer == 3
    assert result.budgeted.stop.what.startswith("fan_out 50 on run:ticket-digest")
    # the same policy admits the job the workflow was built for
    assert result.budgeted.metrics["intended_job_calls"] == 10


def test_cost_latency_coupling_is_held_to_the_design(
    by_pattern: dict[str, ScenarioResult],
) -> None:
    result = by_pattern[coupling.PATTERN]
    size = coupling.SMALL
    theirs, ours = result.without.metrics, result.budgeted.metrics

    assert result.without.requests == size.questions * size.hedges
    assert result.budgeted.requests == size.questions * size.designed
    assert ours["hedges_admitted"] == [size.designed]
    assert ours["questions_answered"] == theirs["questions_answered"] == size.questions
    # the concurrency budgets hold the provider load to the design ...
    assert ours["peak_in_flight"] <= size.parallel * size.designed < theirs["peak_in_flight"]
    # ... so the load model answers faster: three times the calls also lengthened the tail
    assert ours["call_p95_ms"] < theirs["call_p95_ms"]
    assert result.budgeted.stop.layer == 3 and "fan_out" in result.budgeted.stop.what


def test_partial_enforcement_burns_the_org_day_and_the_full_stack_does_not(
    by_pattern: dict[str, ScenarioResult],
) -> None:
    result = by_pattern[partial.PATTERN]
    size = partial.SMALL
    org_day = Decimal(size.org_day.split()[0])
    theirs, ours = result.without, result.budgeted

    assert theirs.mode == "platform cap only"
    # the platform cap itself holds (it is execbudget's), but it is the only thing that does
    assert theirs.stop.layer == 4 and theirs.spend <= org_day
    assert Decimal(theirs.metrics["org_spent"]) <= org_day
    assert theirs.metrics["others_served"] < size.others
    assert theirs.metrics["partial_enforcement_flagged"] and not theirs.metrics["audit_ok"]
    assert ours.stop.layer == 2 and ours.stop.what == f"steps {size.steps} on run:support-agent"
    assert ours.metrics["others_served"] == size.others
    assert ours.metrics["audit_ok"]


def test_retry_storm_is_cut_to_one_attempt_per_document(
    by_pattern: dict[str, ScenarioResult],
) -> None:
    result = by_pattern[retry_storm.PATTERN]
    size = retry_storm.SMALL

    assert result.unit == "requests"
    assert result.without.requests == size.documents * size.attempts * (size.sdk_retries + 1)
    assert result.without.answered == 0
    # every document tried once; the retry budget paid for the only re-attempts
    assert result.budgeted.requests == size.documents + size.retries
    assert result.budgeted.metrics["retries_spent"] == size.retries
    assert result.budgeted.stop.layer == 2
    assert result.budgeted.stop.what == f"retries {size.retries} on run:ingest"
