"""
The cascade cost modeler: what a workflow will cost before it runs, and which caps to set.

Three inputs — the invocation graph (model and tool calls, branches, retries, agent loops,
fan-out), the input envelope (the realistic range of inputs, tails included) and the price
of each call — give the exact mean and variance of every budget dimension (absorbing Markov
chains), the full distribution (vectorised Monte Carlo, with an exact FFT transform as the
oracle for tails), cost per node, cap-hit probabilities, the guaranteed worst case under
caps, and derived caps written as a policy file the runtime loads. See ``docs/modeling.md``.

Needs the ``modeling`` extra (numpy, scipy, networkx, matplotlib).
"""

from __future__ import annotations

from .analysis import Analysis, Check, analyze
from .caps import CapSet, DerivedCap, derive_caps, nice_up
from .compiled import CompiledGraph, CompiledModel, compile_graph
from .distributions import Atoms, Dist, Empirical, Fixed, LogNormal, NegBin, Poisson
from .loader import graph_from_dict, load_graph, read_trace
from .markov import ExactMoments, Sensitivity, envelope_atoms, exact_moments, sensitivities
from .mcstats import Estimate
from .montecarlo import Simulation, simulate
from .plot import plot
from .policy_out import policy_text, write_policy
from .rates import BookPricer, Pricer, RateCard, Rates, StaticPricer
from .report import render, to_json
from .simcaps import SimCaps
from .spec import (
    BinnedP,
    Branch,
    Context,
    DeriveSpec,
    EnvRef,
    FanOutNode,
    GraphSpec,
    Incident,
    LoopNode,
    ModelNode,
    PriceSpec,
    Retry,
    Stuck,
    Subgraph,
    TierSpec,
    ToolNode,
    Volume,
)
from .transform import TransformResult, distribution
from .validate import GraphError, check_graph
from .worstcase import WorstCase, worst_case

__all__ = [
    "Analysis",
    "Atoms",
    "BinnedP",
    "BookPricer",
    "Branch",
    "CapSet",
    "Check",
    "CompiledGraph",
    "CompiledModel",
    "Context",
    "DeriveSpec",
    "DerivedCap",
    "Dist",
    "Empirical",
    "EnvRef",
    "Estimate",
    "ExactMoments",
    "FanOutNode",
    "Fixed",
    "GraphError",
    "GraphSpec",
    "Incident",
    "LogNormal",
    "LoopNode",
    "ModelNode",
    "NegBin",
    "Poisson",
    "PriceSpec",
    "Pricer",
    "RateCard",
    "Rates",
    "Retry",
    "Sensitivity",
    "SimCaps",
    "Simulation",
    "StaticPricer",
    "Stuck",
    "Subgraph",
    "TierSpec",
    "ToolNode",
    "TransformResult",
    "Volume",
    "WorstCase",
    "analyze",
    "check_graph",
    "compile_graph",
    "derive_caps",
    "distribution",
    "envelope_atoms",
    "exact_moments",
    "graph_from_dict",
    "load_graph",
    "nice_up",
    "plot",
    "policy_text",
    "read_trace",
    "render",
    "sensitivities",
    "simulate",
    "to_json",
    "worst_case",
    "write_policy",
]
