"""
The bundled ``genai-prices`` data, read offline and turned into :class:`ModelPrice`.

Why not call ``genai_prices.calc_price``? Two reasons:

* **Offline, pinned data.** ``calc_price`` reads the *current* snapshot, which another
  library in the same process (Pydantic AI, Logfire) may replace with prices downloaded by
  ``genai_prices.UpdatePrices``. We build our own ``DataSnapshot`` over the data module in
  the wheel (``genai_prices.data.providers``), so the prices a hold uses only change when
  the package is upgraded, never at run time, and no code path here opens a socket.
* **One arithmetic for every source.** Policy overrides have no ``genai-prices`` object,
  so costs are computed by :mod:`execbudget.pricing.book` from a :class:`ModelPrice`;
  ``tests/pricing`` checks that this arithmetic equals ``calc_price`` on the bundled data.

Name matching is ``genai-prices``' own (dated snapshots such as ``gpt-4o-2024-08-06``,
aliases such as ``claude-3-5-haiku-latest``, compact dates), plus one rule of ours: a
``provider/model`` reference whose prefix names a provider (``openai/gpt-4o``,
``anthropic/claude-sonnet-4-5``, ``openrouter/openai/gpt-4o``) is looked up as that model
at that provider.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Final

from .rates import ModelPrice, PriceTier

if TYPE_CHECKING:  # pragma: no cover
    from genai_prices.data_snapshot import DataSnapshot

#: genai-prices price keys this rate card charges, and the ModelPrice field for each.
_TOKEN_KEYS: Final = {
    "input_mtok": "input_per_mtok",
    "output_mtok": "output_per_mtok",
    "cache_read_mtok": "cache_read_per_mtok",
    "cache_write_mtok": "cache_write_per_mtok",
    "cache_write_1h_mtok": "cache_write_1h_per_mtok",
    "output_reasoning_mtok": "reasoning_per_mtok",
}
_REQUEST_KEY: Final = "requests_kcount"

_lock = threading.Lock()
_snapshot: DataSnapshot | None = None


@cache
def genai_prices_version() -> str:
    """The installed ``genai-prices`` version (recorded in every price's ``source``)."""
    try:
        return version("genai-prices")
    except PackageNotFoundError:  # pragma: no cover - it is a hard dependency
        return "unknown"


def bundled_snapshot() -> DataSnapshot:
    """
    Our private snapshot of the data shipped in the wheel (imported lazily: ~0.3 s).

    Deliberately not ``genai_prices.data_snapshot.get_snapshot()``, which returns any
    snapshot installed by ``UpdatePrices`` or ``set_custom_snapshot``.
    """
    global _snapshot
    if _snapshot is None:
        with _lock:
            if _snapshot is None:
                from genai_prices.data import providers
                from genai_prices.data_snapshot import DataSnapshot

                _snapshot = DataSnapshot(providers=providers, from_auto_update=False)
    return _snapshot


def find_model(model: str, provider: str | None) -> tuple[Any, Any] | None:
    """``(provider, model_info)`` from the bundled data, or ``None`` if it has no price."""
    snapshot = bundled_snapshot()
    ref = model.strip()
    attempts: list[tuple[str, str | None]] = [(ref, provider)]
    if "/" in ref:
        prefix, rest = ref.split("/", 1)
        if provider is None:
            attempts.append((rest, prefix))
        elif prefix.lower() == provider.lower():
            attempts.append((rest, provider))
    for model_ref, provider_id in attempts:
        try:
            return snapshot.find_provider_model(model_ref, None, provider_id, None)
        except LookupError:
            continue
    return None


def _times_to_try(model_info: Any, at: datetime) -> list[datetime]:
    """
    ``at`` plus the start and end of every time-of-day window of the model on that day.

    Off-peak discounts (DeepSeek) depend on the minute the provider bills, which a hold
    cannot know, so the rate card takes the dearer of the daily windows.
    """
    from genai_prices.types import ModelPrice as GenaiModelPrice
    from genai_prices.types import TimeOfDateConstraint

    times = [at]
    if isinstance(model_info.prices, GenaiModelPrice):
        return times
    day = at.astimezone(UTC).date() if at.tzinfo is not None else at.date()
    for conditional in model_info.prices:
        constraint = conditional.constraint
        if isinstance(constraint, TimeOfDateConstraint):
            for edge in (constraint.start_time, constraint.end_time):
                moment = datetime.combine(day, edge)
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                times.append(moment)
    return times


def _level_value(value: Any, threshold: int | None) -> Decimal | None:
    """
    The rate of one price key for calls whose input exceeds ``threshold``.

    ``threshold=None`` is the base tier. A ``genai-prices`` tier starting at S applies when
    input > S, so the level "input > T" (T a tier start) uses the tier with the largest
    S <= T.
    """
    from genai_prices.types import TieredPrices

    if value is None:
        return None
    if isinstance(value, TieredPrices):
        chosen: Decimal = value.base
        if threshold is not None:
            for tier in value.tiers:
                if tier.start <= threshold:
                    chosen = tier.price
        return chosen
    assert isinstance(value, Decimal)
    return value


def _to_model_price(prov: Any, info: Any, genai_price: Any) -> ModelPrice | None:
    from genai_prices.types import TieredPrices

    raw: dict[str, Any] = {
        key: value
        for key, value in genai_price.__dict__.items()
        if not key.startswith("_") and value is not None
    }
    if raw.get("input_mtok") is None and raw.get("output_mtok") is None:
        return None  # priced per image, per page, per second...: not a token model
    thresholds = sorted(
        {tier.start for v in raw.values() if isinstance(v, TieredPrices) for tier in v.tiers}
    )

    def rates_at(threshold: int | None) -> dict[str, Decimal | None]:
        values = {attr: _level_value(raw.get(key), threshold) for key, attr in _TOKEN_KEYS.items()}
        values["input_per_mtok"] = values["input_per_mtok"] or Decimal(0)
        values["output_per_mtok"] = values["output_per_mtok"] or Decimal(0)
        return values

    tiers = tuple(PriceTier(threshold=t, **rates_at(t)) for t in thresholds)  # type: ignore[arg-type]
    per_request = Decimal(0)
    if raw.get(_REQUEST_KEY) is not None:
        per_request = _level_value(raw[_REQUEST_KEY], None) or Decimal(0)
        per_request = per_request / 1000
    unmodelled = tuple(sorted(k for k in raw if k not in _TOKEN_KEYS and k != _REQUEST_KEY))
    return ModelPrice(
        model=info.id,
        provider=prov.id,
        currency="USD",
        per_request=per_request,
        tiers=tiers,
        context_window=info.context_window,
        source=f"genai-prices {genai_prices_version()}: {prov.id}/{info.id}",
        unmodelled=unmodelled,
        **rates_at(None),  # type: ignore[arg-type]
    )


def _dearest(prices: list[ModelPrice]) -> ModelPrice:
    """The candidate whose base input + output rates are highest (peak over off-peak)."""
    return max(prices, key=lambda p: (p.input_per_mtok + p.output_per_mtok, p.output_per_mtok))


def lookup(
    model: str,
    provider: str | None,
    *,
    at: datetime,
    context: Mapping[str, str] | None = None,
) -> ModelPrice | None:
    """
    The bundled price of ``model`` in force at ``at``, or ``None`` if it has none.

    ``context`` selects a price variant, e.g. ``{"service_tier": "priority"}`` or
    ``{"processing": "batch"}``, exactly as ``genai-prices`` does.
    """
    found = find_model(model, provider)
    if found is None:
        return None
    prov, info = found
    candidates = []
    for moment in _times_to_try(info, at):
        price = _to_model_price(
            prov, info, info.get_prices(moment, dict(context) if context else None)
        )
        if price is not None:
            candidates.append(price)
    if not candidates:
        return None
    return _dearest(candidates)


def known_providers() -> list[str]:
    """Every provider id of the bundled data (for error messages and the CLI)."""
    return [p.id for p in bundled_snapshot().providers]
