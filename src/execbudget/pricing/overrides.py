"""
Policy-style price overrides: human-written rates parsed into :class:`ModelPrice`.

A policy prices a model the book does not know (or corrects one it does) like this::

    pricing:
      models:
        my-finetune:
          input: 2.50 USD/Mtok
          output: 10 USD/Mtok
          cache_read: 1.25 USD/Mtok
          tiers:
            - above: 200000          # whole call at these rates when input > 200k tokens
              input: 5 USD/Mtok
              output: 15 USD/Mtok

A rate is ``AMOUNT [CURRENCY]/UNIT`` where UNIT is ``tok``, ``Ktok`` or ``Mtok`` (case does
not matter; ``token``/``tokens`` are accepted) and ``$2.50/Mtok`` means USD. A bare number
(``2.5``, ``"2.5"`` or ``Decimal("2.5")``) is **per million tokens**, the unit of every
price page. Floats from YAML are converted through their shortest ``repr``, so ``2.5``
becomes exactly ``Decimal("2.5")``; no arithmetic is ever done in float.

Every error is a :class:`ConfigurationError` that names the model and the field
(``tiers[0].output``), says what was found and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from ..errors import ConfigurationError
from .rates import ModelPrice, PriceTier

_RATE_KEYS: Final = {
    "input": "input_per_mtok",
    "output": "output_per_mtok",
    "cache_read": "cache_read_per_mtok",
    "cache_write": "cache_write_per_mtok",
    "cache_write_1h": "cache_write_1h_per_mtok",
    "reasoning": "reasoning_per_mtok",
}
_OTHER_KEYS: Final = ("per_request", "tiers", "context_window", "currency", "provider")
_TIER_KEYS: Final = ("above", *_RATE_KEYS)

_UNIT_SCALE: Final = {"tok": Decimal(1_000_000), "ktok": Decimal(1_000), "mtok": Decimal(1)}

_RATE_RE: Final = re.compile(
    r"""^\s*
    (?P<dollar>\$)?\s*
    (?P<amount>[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+)\s*
    (?P<currency>[A-Za-z]{3})?\s*
    (?:/\s*(?P<unit>[A-Za-z]+)\s*)?
    $""",
    re.VERBOSE,
)

_UNIT_ALIASES: Final = {
    "tok": "tok",
    "token": "tok",
    "tokens": "tok",
    "ktok": "ktok",
    "ktoken": "ktok",
    "ktokens": "ktok",
    "mtok": "mtok",
    "mtoken": "mtok",
    "mtokens": "mtok",
    "request": "request",
    "req": "request",
    "call": "request",
}


class _Field:
    """Error helper: knows which model and field it is parsing."""

    def __init__(self, model: str, path: str) -> None:
        self.model = model
        self.path = path

    def error(self, problem: str) -> ConfigurationError:
        return ConfigurationError(
            f"price override for {self.model!r}: field {self.path!r}: {problem}"
        )

    def child(self, name: str) -> _Field:
        return _Field(self.model, f"{self.path}.{name}" if self.path else name)


def _decimal(value: Any, where: _Field) -> Decimal:
    if isinstance(value, bool):
        raise where.error(f"expected an amount, got {value!r}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        # The shortest repr is the literal the user wrote ("2.5"); Decimal(float) is not.
        result = Decimal(repr(value))
    else:
        raise where.error(f"expected an amount, got {type(value).__name__} {value!r}")
    if not result.is_finite() or result < 0:
        raise where.error(f"amount must be finite and >= 0, got {value!r}")
    return result


def parse_rate(value: Any, *, field: str = "rate", model: str = "?") -> tuple[Decimal, str | None]:
    """
    Parse one rate to ``(amount per Mtok, currency or None)``.

    Accepts ``"2.50 USD/Mtok"``, ``"$0.0025/Ktok"``, ``"2.5e-6 USD/tok"``, ``2.5`` (per Mtok).
    """
    return _parse_amount(value, _Field(model, field), per_request=False)


def _parse_amount(value: Any, where: _Field, *, per_request: bool) -> tuple[Decimal, str | None]:
    if not isinstance(value, str):
        return _decimal(value, where), None
    match = _RATE_RE.match(value)
    if match is None:
        want = (
            "'0.005 USD' or '0.005 USD/request'"
            if per_request
            else "'2.50 USD/Mtok' or '$2.50/Mtok'"
        )
        raise where.error(f"cannot read {value!r} as an amount; write it like {want}")
    try:
        amount = Decimal(match["amount"])
    except InvalidOperation as exc:  # pragma: no cover - the regex only admits numbers
        raise where.error(f"cannot read the number in {value!r}") from exc
    currency = match["currency"].upper() if match["currency"] else None
    if match["dollar"]:
        if currency not in (None, "USD"):
            raise where.error(f"{value!r} says both $ and {currency}")
        currency = "USD"
    raw_unit = match["unit"]
    unit = _UNIT_ALIASES.get(raw_unit.lower()) if raw_unit else None
    if raw_unit and unit is None:
        raise where.error(f"unknown unit {raw_unit!r} in {value!r}; use tok, Ktok or Mtok")
    if per_request:
        if unit not in (None, "request"):
            raise where.error(f"a per-request fee is money per call, got {value!r}")
        return amount, currency
    if unit == "request":
        raise where.error(f"a token rate must be per tok, Ktok or Mtok, got {value!r}")
    if not amount.is_finite() or amount < 0:
        raise where.error(f"amount must be finite and >= 0, got {value!r}")
    return amount * _UNIT_SCALE[unit or "mtok"], currency


def _mapping(value: Any, where: _Field) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise where.error(f"expected a mapping, got {type(value).__name__} {value!r}")
    for key in value:
        if not isinstance(key, str):
            raise where.error(f"keys must be strings, got {key!r}")
    return value


def _check_keys(spec: Mapping[str, Any], allowed: tuple[str, ...], where: _Field) -> None:
    for key in spec:
        if key not in allowed:
            raise where.child(key).error(f"unknown field; allowed: {', '.join(allowed)}")


class _Currency:
    """Every amount of one override must be in one currency."""

    def __init__(self, declared: str | None) -> None:
        self.value = declared

    def merge(self, found: str | None, where: _Field) -> None:
        if found is None:
            return
        if self.value is None:
            self.value = found
        elif self.value != found:
            raise where.error(
                f"currency {found} differs from {self.value} used elsewhere in this price"
            )


def parse_price_override(
    model: str, spec: Mapping[str, Any], *, provider: str = "custom"
) -> ModelPrice:
    """
    Parse one policy price (see the module docstring) into a :class:`ModelPrice`.

    ``input`` and ``output`` are required (write ``output: 0`` for an embedding model).
    Tier fields that are left out inherit the base rate.
    """
    top = _Field(model, "")
    spec = _mapping(spec, top)
    _check_keys(spec, (*_RATE_KEYS, *_OTHER_KEYS), top)
    declared = spec.get("currency")
    if declared is not None and (
        not isinstance(declared, str) or len(declared) != 3 or not declared.isalpha()
    ):
        raise top.child("currency").error(f"expected an ISO code like 'USD', got {declared!r}")
    currency = _Currency(declared.upper() if isinstance(declared, str) else None)

    rates: dict[str, Decimal | None] = {}
    for key, attr in _RATE_KEYS.items():
        where = top.child(key)
        if key not in spec or spec[key] is None:
            if key in ("input", "output"):
                raise where.error("missing; every override must price input and output")
            rates[attr] = None
            continue
        amount, cur = _parse_amount(spec[key], where, per_request=False)
        currency.merge(cur, where)
        rates[attr] = amount

    per_request = Decimal(0)
    if spec.get("per_request") is not None:
        where = top.child("per_request")
        per_request, cur = _parse_amount(spec["per_request"], where, per_request=True)
        currency.merge(cur, where)

    context_window = spec.get("context_window")
    if context_window is not None and (
        isinstance(context_window, bool)
        or not isinstance(context_window, int)
        or context_window <= 0
    ):
        raise top.child("context_window").error(f"expected a positive int, got {context_window!r}")

    prov = spec.get("provider", provider)
    if not isinstance(prov, str) or not prov:
        raise top.child("provider").error(f"expected a non-empty string, got {prov!r}")

    tiers = _parse_tiers(spec.get("tiers"), rates, currency, top.child("tiers"))
    input_rate = rates.pop("input_per_mtok")
    output_rate = rates.pop("output_per_mtok")
    assert input_rate is not None and output_rate is not None
    return ModelPrice(
        model=model,
        provider=prov,
        currency=currency.value or "USD",
        input_per_mtok=input_rate,
        output_per_mtok=output_rate,
        per_request=per_request,
        tiers=tiers,
        context_window=context_window,
        cache_read_per_mtok=rates["cache_read_per_mtok"],
        cache_write_per_mtok=rates["cache_write_per_mtok"],
        cache_write_1h_per_mtok=rates["cache_write_1h_per_mtok"],
        reasoning_per_mtok=rates["reasoning_per_mtok"],
        source="policy override",
    )


def _parse_tiers(
    raw: Any, base: Mapping[str, Decimal | None], currency: _Currency, where: _Field
) -> tuple[PriceTier, ...]:
    if raw is None:
        return ()
    if isinstance(raw, (str, bytes)) or not isinstance(raw, (list, tuple)):
        raise where.error(f"expected a list of tiers, got {type(raw).__name__}")
    tiers: list[PriceTier] = []
    last = -1
    for index, item in enumerate(raw):
        here = _Field(where.model, f"{where.path}[{index}]")
        item = _mapping(item, here)
        _check_keys(item, _TIER_KEYS, here)
        above = item.get("above")
        if isinstance(above, bool) or not isinstance(above, int) or above < 0:
            raise here.child("above").error(
                f"expected the input-token threshold as an int >= 0, got {above!r}"
            )
        if above <= last:
            raise here.child("above").error(
                f"tiers must be in strictly increasing order of 'above'; {above} follows {last}"
            )
        last = above
        values = dict(base)
        for key, attr in _RATE_KEYS.items():
            if item.get(key) is not None:
                amount, cur = _parse_amount(item[key], here.child(key), per_request=False)
                currency.merge(cur, here.child(key))
                values[attr] = amount
        input_rate = values.pop("input_per_mtok")
        output_rate = values.pop("output_per_mtok")
        assert input_rate is not None and output_rate is not None
        tiers.append(
            PriceTier(
                threshold=above, input_per_mtok=input_rate, output_per_mtok=output_rate, **values
            )
        )
    return tuple(tiers)


def parse_price_overrides(models: Mapping[str, Any]) -> dict[str, ModelPrice]:
    """Parse a policy's ``pricing.models`` mapping (model name → spec) in one go."""
    if not isinstance(models, Mapping):
        raise ConfigurationError(
            "price overrides: expected a mapping of model name to price, "
            f"got {type(models).__name__}"
        )
    out: dict[str, ModelPrice] = {}
    for name, spec in models.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(
                f"price overrides: model names must be non-empty strings, got {name!r}"
            )
        out[name] = parse_price_override(name, spec)
    return out
