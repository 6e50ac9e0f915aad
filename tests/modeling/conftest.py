"""Helpers for the modeling tests: small graphs from plain data, with explicit prices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from execbudget.modeling import (
    CompiledModel,
    PriceSpec,
    StaticPricer,
    compile_graph,
    graph_from_dict,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "modeling"

#: A Sonnet-like rate card with a 200k-token tier, and a cheap flat one.
PRICES = StaticPricer(
    {
        "big": PriceSpec(
            input_per_mtok=3.0,
            output_per_mtok=15.0,
            cache_read_per_mtok=0.3,
            cache_write_per_mtok=3.75,
            tiers=(
                {
                    "above_input_tokens": 200_000,
                    "input_per_mtok": 6.0,
                    "output_per_mtok": 22.5,
                    "cache_read_per_mtok": 0.6,
                    "cache_write_per_mtok": 7.5,
                },
            ),
        ),
        "small": PriceSpec(input_per_mtok=0.25, output_per_mtok=2.0),
    }
)


def build(nodes: dict[str, Any], **extra: Any) -> CompiledModel:
    """Compile a graph given as plain data (entry: the first node)."""
    data = {
        "name": extra.pop("name", "t"),
        "entry": extra.pop("entry", next(iter(nodes))),
        "nodes": nodes,
    }
    data.update(extra)
    return compile_graph(graph_from_dict(data), PRICES)


@pytest.fixture
def examples() -> Path:
    return EXAMPLES
