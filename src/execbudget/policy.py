"""
The policy file: which scopes have which budgets, and what to do when things go wrong.

A policy is YAML or TOML, validated in two passes. Pydantic checks the structure (known
keys, types, enumerations); then every amount is parsed in its own unit (money, counts,
durations) with the policy's currency. Every problem found is reported at once, each with
the path to the bad value, what was found and what is allowed::

    version: 1
    currency: USD
    timezone: UTC            # for calendar windows
    failure_mode: closed     # closed (deny when the ledger is unreachable) | open
    hold_ttl: 300s           # how long a hold lives without being settled
    on_expiry: release       # release | charge: what the reaper does with expired holds
    pricing:
      unpriced: deny         # deny | allow
      fallback_model: null   # price unknown models like this one
      models:
        my-model: {input: "1.00 USD/Mtok", output: "2.00 USD/Mtok"}
    degradation: {mode: deny}          # deny | clamp | downgrade (with model:)
    fan_out: {on_excess: refuse, item_cost: "0.02 USD"}   # refuse | truncate; cost estimate
    scopes:
      - match: "org:acme"               # kind:name, shell-style patterns allowed
        limits:
          cost: {month: "500 USD", day: "50 USD"}
          tokens: {day: 10M}
      - match: "run:*"
        limits: {steps: 30, retries: 5, time: 120s, depth: 3}
        per_call: {max_output_tokens: 4096, max_cost: "0.10 USD"}
        fan_out: {item_cost: "0.05 USD"}  # this scope's fan-outs: estimate per branch

Every rule whose pattern matches a scope applies; where two give the same dimension and
window, the smaller limit wins, so the order of rules never matters.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigurationError, PolicyError
from .ledger import OnExpiry
from .units import (
    Dimension,
    money_to_units,
    parse_count,
    parse_duration,
    parse_limit,
    parse_money,
)
from .windows import Window, timezone

if TYPE_CHECKING:
    from .pricing import PriceBook

_WINDOWED_NOT_ALLOWED = {Dimension.DEPTH, Dimension.TIME, Dimension.CONCURRENCY}


# -- structure (pass 1) -------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PerCallSpec(_Strict):
    """Caps on one model call (the output budget type)."""

    max_input_tokens: Any = None
    max_output_tokens: Any = None
    max_cost: Any = None
    min_output_tokens: Any = None
    timeout: Any = None


class FanOutRuleSpec(_Strict):
    """A scope rule's fan-out settings; unset fields fall back to the policy-wide ones."""

    on_excess: Literal["refuse", "truncate"] | None = None
    item_cost: Any = None


class ScopeRule(_Strict):
    match: str
    limits: dict[str, Any] = Field(default_factory=dict)
    per_call: PerCallSpec | None = None
    on_expiry: OnExpiry | None = None
    fan_out: FanOutRuleSpec | None = None


class PricingSpec(_Strict):
    unpriced: Literal["deny", "allow"] = "deny"
    fallback_model: str | None = None
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)


class DegradationSpec(_Strict):
    mode: Literal["deny", "clamp", "downgrade"] = "deny"
    model: str | None = None


class FanOutSpec(_Strict):
    on_excess: Literal["refuse", "truncate"] = "refuse"
    #: estimated cost of one branch ("0.02 USD"): a fan-out whose projected cost exceeds
    #: the cost left on the chain is refused before any branch starts
    item_cost: Any = None


class PolicySpec(_Strict):
    version: Literal[1] = 1
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    timezone: str = "UTC"
    failure_mode: Literal["closed", "open"] = "closed"
    hold_ttl: Any = "300s"
    on_expiry: OnExpiry = OnExpiry.RELEASE
    pricing: PricingSpec = Field(default_factory=PricingSpec)
    degradation: DegradationSpec = Field(default_factory=DegradationSpec)
    fan_out: FanOutSpec = Field(default_factory=FanOutSpec)
    scopes: list[ScopeRule] = Field(default_factory=list)


# -- resolved values (pass 2) -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CallCaps:
    """Per-call caps in ledger units; ``None`` means no cap."""

    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    max_cost: int | None = None  # nano-units
    min_output_tokens: int = 1
    timeout_s: float | None = None

    def tighten(self, other: CallCaps) -> CallCaps:
        """The caps that satisfy both: the smaller of each cap, the larger floor."""
        return CallCaps(
            _min(self.max_input_tokens, other.max_input_tokens),
            _min(self.max_output_tokens, other.max_output_tokens),
            _min(self.max_cost, other.max_cost),
            max(self.min_output_tokens, other.min_output_tokens),
            _min(self.timeout_s, other.timeout_s),
        )


_N = TypeVar("_N", int, float)
_T = TypeVar("_T")


def _min(a: _N | None, b: _N | None) -> _N | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


@dataclass(frozen=True, slots=True)
class FanOutRule:
    """Fan-out settings of a scope (``None``: not set here; ask the next scope out)."""

    on_excess: Literal["refuse", "truncate"] | None = None
    item_cost: int | None = None  # nano-units of the policy currency

    def merge(self, other: FanOutRule) -> FanOutRule:
        """Both rules at once: the larger cost estimate, and ``refuse`` over ``truncate``."""
        excess = self.on_excess or other.on_excess
        if "refuse" in (self.on_excess, other.on_excess):
            excess = "refuse"
        cost = other.item_cost if self.item_cost is None else self.item_cost
        if self.item_cost is not None and other.item_cost is not None:
            cost = max(self.item_cost, other.item_cost)
        return FanOutRule(excess, cost)


@dataclass(frozen=True, slots=True)
class ScopeLimits:
    """Everything the policy says about one scope, merged over all matching rules."""

    #: ledger dimension → window → limit in ledger units
    lines: Mapping[Dimension, Mapping[Window, int]] = field(default_factory=dict)
    depth: int | None = None
    time_ms: int | None = None
    per_call: CallCaps = field(default_factory=CallCaps)
    on_expiry: OnExpiry | None = None
    fan_out: FanOutRule = field(default_factory=FanOutRule)

    def merge(self, other: ScopeLimits) -> ScopeLimits:
        lines: dict[Dimension, dict[Window, int]] = {d: dict(w) for d, w in self.lines.items()}
        for dim, windows in other.lines.items():
            mine = lines.setdefault(dim, {})
            for window, limit in windows.items():
                mine[window] = min(limit, mine.get(window, limit))
        return ScopeLimits(
            lines,
            _min(self.depth, other.depth),
            _min(self.time_ms, other.time_ms),
            self.per_call.tighten(other.per_call),
            self.on_expiry or other.on_expiry,
            self.fan_out.merge(other.fan_out),
        )

    @property
    def empty(self) -> bool:
        return not self.lines and self.depth is None and self.time_ms is None


@dataclass(frozen=True, slots=True)
class _Rule:
    match: str
    limits: ScopeLimits


class _Problems:
    """Collects every problem of a policy so the user fixes them in one pass."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def run(self, path: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T | None:
        try:
            return fn(*args, **kwargs)
        except ConfigurationError as exc:
            self.items.append(f"{path}: {_strip_what(str(exc))}")
            return None


def _strip_what(message: str) -> str:
    """Drop a leading ``what:`` (the path already says where) but keep longer prefixes."""
    head, sep, rest = message.partition(": ")
    return rest if sep and len(head) < 40 and " " not in head.strip() else message


def parse_limits(
    raw: Mapping[str, Any], currency: str, path: str, problems: _Problems
) -> tuple[dict[Dimension, dict[Window, int]], int | None, int | None]:
    """Parse a ``limits:`` mapping; returns (ledger lines, depth, time in ms)."""
    lines: dict[Dimension, dict[Window, int]] = {}
    depth = time_ms = None
    windows_allowed = ", ".join(w.value for w in Window)
    for name, value in raw.items():
        where = f"{path}.{name}"
        try:
            dim = Dimension(name)
        except ValueError:
            allowed = ", ".join(d.value for d in Dimension)
            problems.items.append(f"{where}: unknown dimension {name!r}; allowed: {allowed}")
            continue
        per_window = value if isinstance(value, Mapping) else {Window.TOTAL.value: value}
        if dim in _WINDOWED_NOT_ALLOWED and set(per_window) != {Window.TOTAL.value}:
            problems.items.append(
                f"{where}: {name} is not a windowed budget; give a single value, not {value!r}"
            )
            continue
        for window_name, amount in per_window.items():
            try:
                window = Window(window_name)
            except ValueError:
                problems.items.append(
                    f"{where}.{window_name}: unknown window {window_name!r}; "
                    f"allowed: {windows_allowed}"
                )
                continue
            limit = problems.run(
                f"{where}" + ("" if window is Window.TOTAL else f".{window_name}"),
                parse_limit,
                dim,
                amount,
                currency=currency,
            )
            if limit is None:
                continue
            if dim is Dimension.DEPTH:
                depth = int(limit)
            elif dim is Dimension.TIME:
                time_ms = int(limit)
            else:
                lines.setdefault(dim, {})[window] = int(limit)
    return lines, depth, time_ms


def parse_per_call(spec: PerCallSpec, currency: str, path: str, problems: _Problems) -> CallCaps:
    def count(name: str) -> int | None:
        value = getattr(spec, name)
        return None if value is None else problems.run(f"{path}.{name}", parse_count, value)

    cost = None
    if spec.max_cost is not None:
        money = problems.run(f"{path}.max_cost", parse_money, spec.max_cost, currency=currency)
        cost = None if money is None else money_to_units(money)
    timeout = None
    if spec.timeout is not None:
        seconds = problems.run(f"{path}.timeout", parse_duration, spec.timeout)
        timeout = None if seconds is None else float(seconds)
    floor = count("min_output_tokens")
    return CallCaps(
        count("max_input_tokens"),
        count("max_output_tokens"),
        cost,
        1 if floor is None else max(1, floor),
        timeout,
    )


def _item_cost(value: Any, currency: str, path: str, problems: _Problems) -> int | None:
    if value is None:
        return None
    money = problems.run(f"{path}.item_cost", parse_money, value, currency=currency)
    return None if money is None else money_to_units(money)


def _price_overrides(models: Mapping[str, Any]) -> dict[str, Any]:
    if not models:
        return {}
    from .pricing import parse_price_overrides

    return parse_price_overrides(models)


def _check_match(pattern: str) -> str | None:
    kind, sep, name = pattern.partition(":")
    if not sep or not kind or not name:
        return (
            f"match {pattern!r} must be 'kind:name' (for example 'org:acme', 'team:acme/*', "
            "'run:*')"
        )
    return None


# -- the policy ---------------------------------------------------------------------------
class Policy:
    """A validated policy. ``Policy.load(path)``, ``Policy.from_dict(data)``."""

    def __init__(self, spec: PolicySpec, *, source: str = "<policy>") -> None:
        self.spec = spec
        self.source = source
        problems = _Problems()
        problems.run("timezone", timezone, spec.timezone)
        ttl = problems.run("hold_ttl", parse_duration, spec.hold_ttl)
        if ttl is not None and ttl <= 0:
            problems.items.append("hold_ttl: must be longer than 0s")
        self.hold_ttl_s = float(ttl) if ttl else 300.0
        rules = []
        for i, rule in enumerate(spec.scopes):
            where = f"scopes[{i}]"
            bad = _check_match(rule.match)
            if bad:
                problems.items.append(f"{where}.match: {bad}")
            lines, depth, time_ms = parse_limits(
                rule.limits, spec.currency, f"{where}.limits", problems
            )
            caps = (
                parse_per_call(rule.per_call, spec.currency, f"{where}.per_call", problems)
                if rule.per_call
                else CallCaps()
            )
            fan_out = FanOutRule()
            if rule.fan_out is not None:
                fan_out = FanOutRule(
                    rule.fan_out.on_excess,
                    _item_cost(rule.fan_out.item_cost, spec.currency, f"{where}.fan_out", problems),
                )
            rules.append(
                _Rule(rule.match, ScopeLimits(lines, depth, time_ms, caps, rule.on_expiry, fan_out))
            )
        #: the policy-wide estimate of one fan-out branch, in nano-units (None: no estimate)
        self.fan_out_item_cost = _item_cost(
            spec.fan_out.item_cost, spec.currency, "fan_out", problems
        )
        self._price_overrides = (
            problems.run("pricing.models", _price_overrides, spec.pricing.models) or {}
        )
        if spec.degradation.mode == "downgrade" and not spec.degradation.model:
            problems.items.append(
                "degradation.model: mode 'downgrade' needs the name of the cheaper model"
            )
        if problems.items:
            raise PolicyError(source, problems.items)
        self._rules = tuple(rules)
        self._cache: dict[str, ScopeLimits] = {}
        self._book: PriceBook | None = None

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> Policy:
        if not isinstance(data, Mapping):
            raise PolicyError(
                source, [f"the top level must be a mapping, found {type(data).__name__}"]
            )
        try:
            spec = PolicySpec.model_validate(dict(data))
        except ValidationError as exc:
            raise PolicyError(source, [_describe_error(e) for e in exc.errors()]) from None
        return cls(spec, source=source)

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Load a ``.yaml``/``.yml`` or ``.toml`` policy file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from None
        except UnicodeDecodeError:
            raise PolicyError(str(path), ["the file is not UTF-8 text"]) from None
        return cls.from_text(text, source=str(path), toml=path.suffix.lower() == ".toml")

    @classmethod
    def from_text(cls, text: str, *, source: str = "<text>", toml: bool = False) -> Policy:
        try:
            data = tomllib.loads(text) if toml else yaml.safe_load(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(source, [f"not valid TOML: {exc}"]) from None
        except yaml.YAMLError as exc:
            raise PolicyError(source, [f"not valid YAML: {exc}".replace("\n", " ")]) from None
        if data is None:
            data = {}
        return cls.from_dict(data, source=source)

    @classmethod
    def empty(cls) -> Policy:
        """No budgets at all (every dimension unbounded); useful with inline limits."""
        return cls(PolicySpec(), source="<empty policy>")

    # -- questions the runtime asks ------------------------------------------------------
    @property
    def currency(self) -> str:
        return self.spec.currency

    @property
    def timezone(self) -> str:
        return self.spec.timezone

    @property
    def fail_open(self) -> bool:
        return self.spec.failure_mode == "open"

    @property
    def rules(self) -> tuple[tuple[str, ScopeLimits], ...]:
        return tuple((r.match, r.limits) for r in self._rules)

    def limits_for(self, scope: str) -> ScopeLimits:
        """The merged limits of every rule matching ``scope`` (``kind:name``)."""
        cached = self._cache.get(scope)
        if cached is None:
            cached = ScopeLimits()
            for rule in self._rules:
                if fnmatch.fnmatchcase(scope, rule.match):
                    cached = cached.merge(rule.limits)
            if len(self._cache) < 10_000:
                self._cache[scope] = cached
        return cached

    def inline_limits(self, limits: Mapping[str, Any], *, what: str = "limits") -> ScopeLimits:
        """Limits given in code (``run(..., limits={"steps": 10})``), parsed like the file's."""
        problems = _Problems()
        lines, depth, time_ms = parse_limits(limits, self.currency, what, problems)
        if problems.items:
            raise ConfigurationError("; ".join(problems.items))
        return ScopeLimits(lines, depth, time_ms)

    def price_book(self) -> PriceBook:
        """The price book this policy describes: bundled prices, overrides, fallback."""
        if self._book is None:
            from .pricing import PriceBook

            self._book = PriceBook(
                self._price_overrides,
                fallback_model=self.spec.pricing.fallback_model,
                allow_unpriced=self.spec.pricing.unpriced == "allow",
                currency=self.currency,
            )
        return self._book

    def on_expiry_for(self, limits: ScopeLimits) -> OnExpiry:
        return limits.on_expiry or self.spec.on_expiry


def _describe_error(error: Any) -> str:
    loc = error.get("loc", ())
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    found = error.get("input")
    kind = error.get("type", "")
    message = str(error.get("msg", "invalid"))
    if kind == "extra_forbidden":
        message = "unknown key; remove it or check its spelling"
    elif kind == "literal_error":
        message = message.replace("Input should be", "allowed:")
    text = f"{path or '<top level>'}: {message}"
    if kind != "missing":
        text += f" (found {found!r})"
    return text
