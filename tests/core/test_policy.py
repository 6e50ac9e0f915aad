from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from execbudget.errors import PolicyError
from execbudget.policy import Policy
from execbudget.units import Dimension
from execbudget.windows import Window

GOOD_YAML = """
version: 1
currency: USD
timezone: Europe/Paris
scopes:
  - match: "org:acme"
    limits:
      cost: {month: "500 USD", day: "$50"}
      tokens: {day: 10M}
  - match: "org:*"
    limits:
      cost: {day: "20 USD"}
  - match: "run:triage"
    limits: {steps: 30, retries: 5, time: 2m, depth: 3, concurrency: 8}
    per_call: {max_output_tokens: 4k, max_cost: "0.10 USD", min_output_tokens: 64}
    on_expiry: charge
"""

GOOD_TOML = """
version = 1
[[scopes]]
match = "org:acme"
[scopes.limits]
cost = { day = "50 USD" }
steps = 10
"""


def test_yaml_policy_resolves_and_merges_to_the_tightest(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD_YAML)
    policy = Policy.load(path)
    acme = policy.limits_for("org:acme")
    assert acme.lines[Dimension.COST] == {Window.MONTH: 500 * 10**9, Window.DAY: 20 * 10**9}
    assert acme.lines[Dimension.TOKENS] == {Window.DAY: 10_000_000}
    run = policy.limits_for("run:triage")
    assert (run.depth, run.time_ms) == (3, 120_000)
    assert run.lines[Dimension.CONCURRENCY] == {Window.TOTAL: 8}
    assert run.per_call.max_output_tokens == 4000 and run.per_call.min_output_tokens == 64
    assert run.per_call.max_cost == 10**8
    assert policy.limits_for("run:other").empty
    assert policy.timezone == "Europe/Paris"


def test_toml_policy(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(GOOD_TOML)
    policy = Policy.load(path)
    assert policy.limits_for("org:acme").lines[Dimension.STEPS] == {Window.TOTAL: 10}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("scopes: [{match: 'org:a', limits: {cost: '5 EUR'}}]", "scopes[0].limits.cost: '5 EUR'"),
        (
            "scopes: [{match: 'org:a', limits: {steps: -1}}]",
            "scopes[0].limits.steps: steps must not be negative, got -1",
        ),
        ("scopes: [{match: 'org:a', limits: {steps: .nan}}]", "scopes[0].limits.steps"),
        ("scopes: [{match: 'org:a', limits: {cost: {daily: 1}}}]", "unknown window 'daily'"),
        ("scopes: [{match: 'org:a', limits: {stepz: 1}}]", "unknown dimension 'stepz'"),
        ("scopes: [{match: 'org:a', lmits: {}}]", "scopes[0].lmits: unknown key"),
        ("failure_mode: maybe", "failure_mode: allowed: 'closed' or 'open' (found 'maybe')"),
        ("version: 2", "version"),
        ("timezone: Nowhere/Land", "timezone: unknown timezone 'Nowhere/Land'"),
        ("scopes: [{match: 'acme'}]", "must be 'kind:name'"),
        ("degradation: {mode: downgrade}", "degradation.model"),
        ("scopes: {match: 'org:a'}", "scopes"),
        ("[1, 2]", "top level must be a mapping"),
        ("scopes: [", "not valid YAML"),
        ("hold_ttl: 0s", "hold_ttl: must be longer than 0s"),
    ],
)
def test_invalid_policy_names_file_path_found_and_allowed(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        Policy.load(path)
    message = str(info.value)
    assert str(path) in message
    assert expected in message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "scopes:\n - {match: 'org:a', limits: {cost: 'x', steps: 'y'}}\n - {match: 'b'}\n"
    )
    with pytest.raises(PolicyError) as info:
        Policy.load(path)
    assert len(info.value.problems) == 3


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        Policy.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.toml"
    bad.write_text("version = = 1")
    with pytest.raises(PolicyError, match="not valid TOML"):
        Policy.load(bad)


def test_rule_order_does_not_matter() -> None:
    a = {"match": "org:*", "limits": {"cost": {"day": "20 USD"}, "steps": 5}}
    b = {"match": "org:acme", "limits": {"cost": {"day": "50 USD"}, "steps": 9}}
    one = Policy.from_dict({"scopes": [a, b]}).limits_for("org:acme")
    two = Policy.from_dict({"scopes": [b, a]}).limits_for("org:acme")
    assert one == two
    assert one.lines[Dimension.STEPS] == {Window.TOTAL: 5}


_amounts = st.one_of(
    st.integers(min_value=-10, max_value=10**12),
    st.decimals(allow_nan=True, allow_infinity=True, places=3).map(str),
    st.text(max_size=8),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)


@given(
    dim=st.sampled_from([d.value for d in Dimension] + ["bogus"]),
    window=st.sampled_from([w.value for w in Window] + ["weekly"]),
    amount=_amounts,
)
def test_parser_never_crashes_and_never_accepts_a_negative(
    dim: str, window: str, amount: object
) -> None:
    """Any input either loads with non-negative integer limits or raises PolicyError."""
    data = {"scopes": [{"match": "org:x", "limits": {dim: {window: amount}}}]}
    try:
        policy = Policy.from_dict(data)
    except PolicyError as exc:
        assert exc.problems
        return
    limits = policy.limits_for("org:x")
    for windows in limits.lines.values():
        assert all(isinstance(v, int) and v >= 0 for v in windows.values())
    for value in (limits.depth, limits.time_ms):
        assert value is None or (isinstance(value, int) and value >= 0)
