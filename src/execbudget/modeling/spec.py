"""
The invocation graph, as data: what a workflow can call, with what probabilities and sizes.

A graph is YAML, TOML or these pydantic models built in Python; both validate the same
way. Node kinds:

* ``model`` — one model call, priced from tokens (``input_tokens``/``output_tokens`` ×
  the price book, or ``price:``) or given a flat ``cost`` per call; optional ``retry``.
* ``tool`` — one tool call with a fixed or distributed ``cost``; optional ``retry``.
* ``agent_loop`` — an agent loop: one model call (+ ``tool_calls_per_step`` tool calls)
  per step, another step with probability ``continue_p``, a context that starts at
  ``context.initial`` and grows by ``context.growth_per_step`` each step (input cost is
  quadratic in the number of steps), optional prompt caching and a "stuck" regime.
* ``fan_out`` — ``count`` items (a count distribution or an envelope variable), each
  running the subgraph ``item`` (a sub-agent, or a map over inputs).

Edges: ``next`` is a node name, ``done``, ``fail``, or a list of branches
``{to, p}`` where ``p`` is a number, ``rest`` (one minus the others) or
``{by: VAR, edges: [...], values: [...]}`` (depends on which bin of an envelope variable
the run falls in). Loops are edges back to an earlier node (a re-validation, a second
retrieval pass).

The **envelope** declares the run's input variables (drawn once per run, shared by every
node that refers to them with ``{from: VAR, times: 1, plus: 0}``). Envelope variables are
independent of each other.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from .distributions import Dist

TERMINALS = ("done", "fail")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class EnvRef(_Spec):
    """``times × envelope[VAR] + plus``: a size that follows the run's input."""

    from_: str = Field(alias="from", min_length=1)
    times: float = Field(default=1.0, ge=0)
    plus: Dist = Field(default=0.0, validate_default=True)


def _quantity_tag(value: Any) -> str:
    if isinstance(value, EnvRef) or (isinstance(value, dict) and "from" in value):
        return "env"
    return "dist"


Quantity = Annotated[
    Annotated[EnvRef, Tag("env")] | Annotated[Dist, Tag("dist")],
    Discriminator(_quantity_tag),
]
"""A distribution, a plain number, or an envelope reference ``{from: VAR, ...}``."""


class Incident(_Spec):
    """An incident regime (outage, rate limiting): with probability ``share`` per visit,
    every attempt of the call fails with ``p_fail`` instead of the normal rate."""

    share: float = Field(gt=0, lt=1)
    p_fail: float = Field(ge=0, lt=1)


class Retry(_Spec):
    """
    Retries of one call: each attempt fails with ``p_fail``; at most ``max_retries``
    re-attempts. A failed attempt costs ``failed_cost`` × a normal one (1 for validation
    or timeout failures that are billed, 0 for rate-limit errors). When every attempt
    fails, ``on_exhaust`` sends the run to ``fail`` or on as if the call had succeeded.
    """

    p_fail: float = Field(ge=0, lt=1)
    max_retries: int = Field(ge=0, le=50)
    failed_cost: float = Field(default=1.0, ge=0, le=1)
    incident: Incident | None = None
    on_exhaust: Literal["fail", "continue"] = "fail"


class BinnedP(_Spec):
    """A branch probability that depends on the bin of an envelope variable:
    ``values[i]`` applies when ``edges[i-1] < VAR <= edges[i]``."""

    by: str = Field(min_length=1)
    edges: tuple[float, ...] = Field(min_length=1)
    values: tuple[float, ...]

    @field_validator("edges")
    @classmethod
    def _increasing(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(b <= a for a, b in pairwise(v)):
            raise ValueError("edges must be strictly increasing")
        return v


class Branch(_Spec):
    to: str = Field(min_length=1)
    p: float | BinnedP | Literal["rest"]


Next = str | list[Branch] | None


class TierSpec(_Spec):
    """Rates that apply to the whole call once its input exceeds ``above_input_tokens``."""

    above_input_tokens: int = Field(ge=0)
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cache_read_per_mtok: float | None = Field(default=None, ge=0)
    cache_write_per_mtok: float | None = Field(default=None, ge=0)


class PriceSpec(_Spec):
    """A rate card in the graph's currency per million tokens (overrides the price book)."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cache_read_per_mtok: float | None = Field(default=None, ge=0)
    cache_write_per_mtok: float | None = Field(default=None, ge=0)
    per_request: float = Field(default=0.0, ge=0)
    tiers: tuple[TierSpec, ...] = ()
    source: str | None = None


class _Node(_Spec):
    next: Next = None
    description: str | None = None


class ModelNode(_Node):
    kind: Literal["model"] = "model"
    model: str | None = None
    provider: str | None = None
    price: PriceSpec | None = None
    cost: Dist | None = None
    input_tokens: Quantity | None = None
    output_tokens: Quantity | None = None
    cache_read_share: float = Field(default=0.0, ge=0, le=1)
    retry: Retry | None = None
    latency_s: Dist | None = None


class ToolNode(_Node):
    kind: Literal["tool"] = "tool"
    cost: Dist = Field(default=0.0, validate_default=True)
    retry: Retry | None = None
    latency_s: Dist | None = None


class Context(_Spec):
    """The context of an agent loop: ``initial`` tokens at step 1, ``growth_per_step``
    more at each later step (drawn once per loop), clipped at ``max`` (a context window
    or compaction limit)."""

    initial: Quantity
    growth_per_step: Quantity = Field(default=0.0, validate_default=True)
    max: int | None = Field(default=None, gt=0)


class Stuck(_Spec):
    """The "expensive failure" regime: with probability ``share`` a loop is stuck and
    continues with ``continue_p`` (higher than the normal one)."""

    share: float = Field(gt=0, lt=1)
    continue_p: float = Field(ge=0, lt=1)


class LoopNode(_Node):
    kind: Literal["agent_loop"] = "agent_loop"
    model: str | None = None
    provider: str | None = None
    price: PriceSpec | None = None
    cost_per_step: Dist | None = None
    context: Context | None = None
    output_tokens: Quantity | None = None
    continue_p: float = Field(ge=0, lt=1)
    stuck: Stuck | None = None
    max_steps: int | None = Field(default=None, ge=1)
    on_max: Literal["done", "fail"] = "done"
    prompt_cache: bool = False
    tool_calls_per_step: int = Field(default=0, ge=0, le=100)
    tool_cost: Dist = Field(default=0.0, validate_default=True)
    retry: Retry | None = None
    latency_s: Dist | None = None
    tool_latency_s: Dist | None = None


class FanOutNode(_Node):
    kind: Literal["fan_out"] = "fan_out"
    count: Quantity
    item: str = Field(min_length=1)
    max_concurrency: int | None = Field(default=None, ge=1)
    subagents: bool = True


Node = Annotated[ModelNode | ToolNode | LoopNode | FanOutNode, Field(discriminator="kind")]
AnyNode = ModelNode | ToolNode | LoopNode | FanOutNode


class Subgraph(_Spec):
    """A graph run once per fan-out item (a sub-agent, or the work on one input)."""

    entry: str
    nodes: dict[str, Node] = Field(min_length=1)
    description: str | None = None


class Volume(_Spec):
    runs_per_day: int = Field(gt=0)


class DeriveSpec(_Spec):
    """How caps are derived: each cap may truncate at most ``truncation`` of runs."""

    truncation: float = Field(default=1e-3, gt=0, lt=0.5)


class GraphSpec(_Spec):
    """A whole workflow: entry graph, subgraphs, envelope and prices."""

    version: Literal[1] = 1
    name: str = Field(min_length=1)
    description: str | None = None
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    entry: str
    nodes: dict[str, Node] = Field(min_length=1)
    subgraphs: dict[str, Subgraph] = Field(default_factory=dict)
    envelope: dict[str, Dist] = Field(default_factory=dict)
    prices: dict[str, PriceSpec] = Field(default_factory=dict)
    volume: Volume | None = None
    derive: DeriveSpec = Field(default_factory=DeriveSpec)
    sources: tuple[str, ...] = ()


__all__ = [
    "TERMINALS",
    "AnyNode",
    "BinnedP",
    "Branch",
    "Context",
    "DeriveSpec",
    "EnvRef",
    "FanOutNode",
    "GraphSpec",
    "Incident",
    "LoopNode",
    "ModelNode",
    "Next",
    "Node",
    "PriceSpec",
    "Quantity",
    "Retry",
    "Stuck",
    "Subgraph",
    "TierSpec",
    "ToolNode",
    "Volume",
]
