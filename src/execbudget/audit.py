"""
Enforcement coverage: which budget types a policy enforces at which layer, and its gaps.

Partial enforcement is a failure of its own (DESIGN §2): a platform spend cap with no step
cap lets one runaway loop spend the org's day; a step cap with no fan-out cap lets one
fan-out over 10,000 items through. ``audit`` builds, for every workflow and tenant of a
policy, the matrix of the seven budget types × four layers, then flags:

* **gaps**: a required cell that no rule fills (no step cap, no retry cap, no fan-out cap,
  no time limit, no output cap, no platform spend cap, no run-level cost or token cap);
* **inconsistent caps**: a child limit above its parent's (a team's daily cost above its
  org's), a per-call cap above the run budget, a per-call floor that can never fit;
* **windows that outlive what they guard**: holds living longer than the shortest window,
  calendar windows on per-run scopes (each run is a new scope: its windows never reset
  within it, or reset in the middle), and spend guarded only by a month window.

Gaps and inconsistencies make ``execbudget audit`` exit non-zero, so it can gate CI.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .policy import Policy, ScopeLimits
from .units import Dimension
from .windows import Window

TYPES = ("token", "output", "step", "retry", "fan-out", "time", "cost")
LAYERS = ("invocation", "agent loop", "orchestration", "platform")
PLATFORM_KINDS = ("org", "team", "key", "model", "tenant", "project")
RUN_KINDS = ("run", "agent")
WORKFLOW_KINDS = ("workflow",)

#: The cells a complete policy fills (DESIGN §1–2).
REQUIRED: dict[tuple[str, str], str] = {
    ("output", "invocation"): "no per-call output cap (per_call.max_output_tokens)",
    ("step", "agent loop"): "no step cap on runs (steps or calls)",
    ("retry", "agent loop"): "no retry cap on runs (retries)",
    ("fan-out", "orchestration"): "no fan-out cap (fan_out) on runs or workflows",
    ("time", "orchestration"): "no time limit on runs or workflows (time)",
    ("cost", "platform"): "no platform spend cap (cost on org/team/key)",
}
_RUN_SPEND = "no run-level cost or token cap: one run can spend the whole platform budget"

_TYPE_OF = {
    Dimension.TOKENS: "token",
    Dimension.INPUT_TOKENS: "token",
    Dimension.OUTPUT_TOKENS: "token",
    Dimension.STEPS: "step",
    Dimension.CALLS: "step",
    Dimension.TOOL_CALLS: "step",
    Dimension.DEPTH: "step",
    Dimension.RETRIES: "retry",
    Dimension.FAN_OUT: "fan-out",
    Dimension.CONCURRENCY: "fan-out",
    Dimension.TIME: "time",
    Dimension.COST: "cost",
}
_WINDOW_SECONDS = {
    Window.HOUR: 3600,
    Window.DAY: 86400,
    Window.WEEK: 7 * 86400,
    Window.MONTH: 28 * 86400,
}


@dataclass
class Finding:
    severity: str  # "gap" (fails the audit) or "note"
    subject: str  # the workflow or tenant concerned
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "subject": self.subject, "message": self.message}


@dataclass
class Coverage:
    """One workflow's matrix: (type, layer) → the dimensions that fill the cell."""

    workflow: str
    cells: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def add(self, budget_type: str, layer: str, what: str) -> None:
        self.cells.setdefault((budget_type, layer), set()).add(what)

    def has(self, budget_type: str, layer: str) -> bool:
        return bool(self.cells.get((budget_type, layer)))

    def as_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "matrix": {
                t: {layer: sorted(self.cells.get((t, layer), ())) for layer in LAYERS}
                for t in TYPES
            },
        }


@dataclass
class AuditReport:
    source: str
    coverage: list[Coverage]
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return not any(f.severity == "gap" for f in self.findings)

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.source,
            "ok": self.ok,
            "coverage": [c.as_dict() for c in self.coverage],
            "findings": [f.as_dict() for f in self.findings],
        }


def _kind(match: str) -> str:
    return match.partition(":")[0]


def _name(match: str) -> str:
    return match.partition(":")[2]


def _applies(rule_match: str, kind: str, name: str) -> bool:
    return fnmatch.fnmatchcase(f"{kind}:{name}", rule_match) or (
        _kind(rule_match) == kind and fnmatch.fnmatchcase(name, _name(rule_match))
    )


def _workflows(rules: Iterable[tuple[str, ScopeLimits]]) -> list[str]:
    names = {_name(m) for m, _ in rules if _kind(m) in RUN_KINDS + WORKFLOW_KINDS}
    concrete = sorted(n for n in names if not any(c in n for c in "*?["))
    return concrete or sorted(names) or ["*"]


def _fill(coverage: Coverage, limits: ScopeLimits, layer: str, label: str) -> None:
    for dim in limits.lines:
        coverage.add(_TYPE_OF[dim], layer, f"{label}.{dim.value}")
    if limits.depth is not None:
        coverage.add("step", layer, f"{label}.depth")
    if limits.time_ms is not None:
        coverage.add("time", layer, f"{label}.time")
    caps = limits.per_call
    if caps.max_output_tokens is not None:
        coverage.add("output", "invocation", f"{label}.per_call.max_output_tokens")
        coverage.add("token", "invocation", f"{label}.per_call.max_output_tokens")
    if caps.max_input_tokens is not None:
        coverage.add("output", "invocation", f"{label}.per_call.max_input_tokens")
        coverage.add("token", "invocation", f"{label}.per_call.max_input_tokens")
    if caps.max_cost is not None:
        coverage.add("cost", "invocation", f"{label}.per_call.max_cost")
    if caps.timeout_s is not None:
        coverage.add("time", "invocation", f"{label}.per_call.timeout")


def _layer_of(kind: str) -> str:
    if kind in PLATFORM_KINDS:
        return "platform"
    if kind in WORKFLOW_KINDS:
        return "orchestration"
    return "agent loop"


def audit(policy: Policy) -> AuditReport:
    rules = policy.rules
    findings: list[Finding] = []
    coverage: list[Coverage] = []
    platform = [(m, lim) for m, lim in rules if _kind(m) in PLATFORM_KINDS]
    for workflow in _workflows(rules):
        cov = Coverage(workflow)
        for match, limits in rules:
            kind = _kind(match)
            if kind in PLATFORM_KINDS:
                _fill(cov, limits, "platform", match)
            elif _applies(match, kind, workflow):
                _fill(cov, limits, _layer_of(kind), match)
                # fan-out and concurrency are orchestration controls wherever they are set
                for dim in (Dimension.FAN_OUT, Dimension.CONCURRENCY):
                    if dim in limits.lines:
                        cov.add("fan-out", "orchestration", f"{match}.{dim.value}")
                if kind in RUN_KINDS and limits.time_ms is not None:
                    cov.add("time", "orchestration", f"{match}.time")
        coverage.append(cov)
        subject = f"workflow {workflow}"
        for cell, message in REQUIRED.items():
            if not cov.has(*cell):
                findings.append(Finding("gap", subject, message))
        if not (
            cov.has("cost", "agent loop")
            or cov.has("token", "agent loop")
            or cov.has("cost", "orchestration")
        ):
            findings.append(Finding("gap", subject, _RUN_SPEND))
        if cov.has("cost", "platform") and not cov.has("step", "agent loop"):
            findings.append(
                Finding(
                    "gap",
                    subject,
                    "partial enforcement: platform spend caps "
                    "but no step cap — a runaway loop runs until the platform "
                    "cap, at machine speed",
                )
            )
        if cov.has("step", "agent loop") and not cov.has("fan-out", "orchestration"):
            findings.append(
                Finding(
                    "gap",
                    subject,
                    "partial enforcement: a step cap but no "
                    "fan-out cap — one step can start 10,000 branches",
                )
            )
        findings += _run_consistency(policy, workflow)
    if not platform:
        findings.append(
            Finding(
                "gap",
                "platform",
                "no org/team/key scope: nothing caps the spend of a tenant across runs",
            )
        )
    findings += _parent_child(platform)
    findings += _windows(policy)
    return AuditReport(policy.source, coverage, findings)


def _run_consistency(policy: Policy, workflow: str) -> list[Finding]:
    out: list[Finding] = []
    run = policy.limits_for(f"run:{workflow}")
    flow = policy.limits_for(f"workflow:{workflow}")
    subject = f"workflow {workflow}"
    caps = run.per_call.tighten(flow.per_call)
    for dim in (Dimension.COST, Dimension.TOKENS):
        run_total = run.lines.get(dim, {}).get(Window.TOTAL)
        for window, flow_limit in flow.lines.get(dim, {}).items():
            if run_total is not None and run_total > flow_limit:
                out.append(
                    Finding(
                        "gap",
                        subject,
                        f"inconsistent: one run may spend "
                        f"{dim.value} {run_total} but the workflow's {window.value} "
                        f"limit is {flow_limit} (a child above its parent)",
                    )
                )
    run_cost = run.lines.get(Dimension.COST, {}).get(Window.TOTAL)
    if caps.max_cost is not None and run_cost is not None and caps.max_cost > run_cost:
        out.append(
            Finding("gap", subject, "inconsistent: per_call.max_cost is above the run's cost limit")
        )
    for dim in (Dimension.OUTPUT_TOKENS, Dimension.TOKENS):
        room = run.lines.get(dim, {}).get(Window.TOTAL)
        if room is not None and caps.min_output_tokens > room:
            out.append(
                Finding(
                    "gap",
                    subject,
                    f"inconsistent: per_call.min_output_tokens "
                    f"{caps.min_output_tokens} can never fit in the run's "
                    f"{dim.value} limit {room}: every call would be denied",
                )
            )
    if caps.max_output_tokens is not None and caps.max_output_tokens < caps.min_output_tokens:
        out.append(
            Finding(
                "gap",
                subject,
                "inconsistent: per_call.max_output_tokens is below "
                "per_call.min_output_tokens: every call would be denied",
            )
        )
    return out


_PARENTS = {"team": "org", "key": "team", "project": "org"}


def _parent_child(platform: list[tuple[str, ScopeLimits]]) -> list[Finding]:
    out: list[Finding] = []
    for child_match, child in platform:
        parent_kind = _PARENTS.get(_kind(child_match))
        if parent_kind is None:
            continue
        tenant = _name(child_match).split("/")[0]
        for parent_match, parent in platform:
            if _kind(parent_match) != parent_kind:
                continue
            if not fnmatch.fnmatchcase(tenant, _name(parent_match)):
                continue
            for dim, windows in child.lines.items():
                for window, limit in windows.items():
                    cap = parent.lines.get(dim, {}).get(window)
                    if cap is not None and limit > cap:
                        out.append(
                            Finding(
                                "gap",
                                child_match,
                                f"inconsistent: {dim.value} "
                                f"{window.value} limit {limit} is above its parent "
                                f"{parent_match}'s {cap}",
                            )
                        )
    return out


def _windows(policy: Policy) -> list[Finding]:
    out: list[Finding] = []
    shortest: int | None = None
    for match, limits in policy.rules:
        kinds_windows = {w for windows in limits.lines.values() for w in windows}
        for window in kinds_windows - {Window.TOTAL}:
            seconds = _WINDOW_SECONDS[window]
            shortest = seconds if shortest is None else min(shortest, seconds)
        if _kind(match) in RUN_KINDS and kinds_windows - {Window.TOTAL}:
            out.append(
                Finding(
                    "gap",
                    match,
                    "calendar windows on a per-run scope: every run "
                    "is a new scope, so the window never guards more than one run "
                    "and may reset in the middle of it; use a plain limit, or put "
                    "the window on the workflow",
                )
            )
        cost_windows = set(limits.lines.get(Dimension.COST, {}))
        if _kind(match) in PLATFORM_KINDS and cost_windows == {Window.MONTH}:
            out.append(
                Finding(
                    "note",
                    match,
                    "spend is guarded only by a month window: a "
                    "runaway can spend the whole month in an hour; add a day limit",
                )
            )
    if shortest is not None and policy.hold_ttl_s > shortest:
        out.append(
            Finding(
                "gap",
                "policy",
                f"hold_ttl {policy.hold_ttl_s:g}s is longer than "
                f"the shortest window ({shortest}s): a hold can outlive the window "
                "it was made in",
            )
        )
    return out


def audit_command(path: str, as_json: bool) -> int:
    """``execbudget audit POLICY``: print the matrix and findings; 1 if anything is a gap."""
    import json

    from rich.console import Console
    from rich.table import Table

    report = audit(Policy.load(path))
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0 if report.ok else 1
    console = Console(highlight=False)
    for cov in report.coverage:
        table = Table("budget type", *LAYERS, title=f"coverage of workflow {cov.workflow}")
        for budget_type in TYPES:
            row = []
            for layer in LAYERS:
                found = sorted(cov.cells.get((budget_type, layer), ()))
                required = (budget_type, layer) in REQUIRED
                if found:
                    names = sorted({f.split(".")[-1] for f in found})
                    row.append("[green]✓[/] " + ", ".join(names))
                else:
                    row.append("[red]✗ missing[/]" if required else "[dim]–[/]")
            table.add_row(budget_type, *row)
        console.print(table)
    for f in report.findings:
        mark = "[red]gap[/]" if f.severity == "gap" else "[yellow]note[/]"
        console.print(f"{mark} {f.subject}: {f.message}")
    console.print(
        "[green]complete: every required cell is filled[/]"
        if report.ok
        else "[red]incomplete: see the gaps above[/]"
    )
    return 0 if report.ok else 1
