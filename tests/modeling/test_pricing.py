"""Prices come from the node, the graph, or the project's price book, in that order."""

from __future__ import annotations

import pytest

from execbudget.modeling import (
    BookPricer,
    GraphError,
    compile_graph,
    exact_moments,
    graph_from_dict,
)
from execbudget.pricing import PriceBook


def call(model: str, **extra: object) -> dict[str, object]:
    return {"kind": "model", "model": model, "input_tokens": 1000, "output_tokens": 100, **extra}


def test_the_price_book_prices_model_nodes() -> None:
    spec = graph_from_dict({"name": "t", "entry": "a", "nodes": {"a": call("gpt-4o-mini")}})
    model = compile_graph(spec)  # default: the price book
    price = PriceBook().price("gpt-4o-mini")
    want = (1000 * float(price.input_per_mtok) + 100 * float(price.output_per_mtok)) / 1e6
    assert float(exact_moments(model).mean[0]) == pytest.approx(want)
    assert model.price_sources["a"].startswith("price book: ")


def test_book_tiers_are_kept() -> None:
    card = BookPricer().rate_card("claude-sonnet-4-5", "anthropic")
    assert card.thresholds == (200_000.0,)
    assert card.levels[1].input == pytest.approx(2 * card.levels[0].input)


def test_graph_and_node_prices_override_the_book() -> None:
    spec = graph_from_dict(
        {
            "name": "t",
            "entry": "a",
            "nodes": {
                "a": call("gpt-4o-mini", next="b"),
                "b": call("gpt-4o-mini", price={"input_per_mtok": 10, "output_per_mtok": 20}),
            },
            "prices": {
                "gpt-4o-mini": {"input_per_mtok": 1, "output_per_mtok": 2, "source": "contract"}
            },
        }
    )
    model = compile_graph(spec)
    assert model.price_sources == {"a": "contract", "b": "node b price"}
    assert float(exact_moments(model).mean[0]) == pytest.approx((1000 + 200 + 10_000 + 2000) / 1e6)


def test_unknown_models_fail_at_their_node() -> None:
    spec = graph_from_dict({"name": "t", "entry": "a", "nodes": {"a": call("no-such-model-xyz")}})
    with pytest.raises(GraphError, match="node a: model 'no-such-model-xyz' has no usable price"):
        compile_graph(spec)
