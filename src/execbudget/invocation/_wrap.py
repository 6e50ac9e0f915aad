"""``execbudget.wrap(client)``: the public entry point of the invocation layer."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ..errors import ConfigurationError
from ..pricing import TokenCounter
from ._clients import (
    AsyncBudgetedAnthropic,
    AsyncBudgetedOpenAI,
    BudgetedAnthropic,
    BudgetedOpenAI,
    _Wrapped,
)
from ._procedure import Mode, Settings

if TYPE_CHECKING:
    from ..enforcer import Enforcer

C = TypeVar("C")
_MODES = ("deny", "clamp", "downgrade")


_WRAPPERS: dict[str, tuple[tuple[str, type[_Wrapped]], ...]] = {
    "openai": (("AsyncOpenAI", AsyncBudgetedOpenAI), ("OpenAI", BudgetedOpenAI)),
    "anthropic": (("AsyncAnthropic", AsyncBudgetedAnthropic), ("Anthropic", BudgetedAnthropic)),
}


def _kind(client: Any) -> type[_Wrapped]:
    """
    Which wrapper fits ``client``. Only the client's own SDK is imported: importing the
    other one costs over a second on first use and may not even be installed.
    """
    sdk = type(client).__module__.partition(".")[0]
    # The client's own SDK first; a subclass defined elsewhere tries each installed SDK.
    for name in sorted(("openai", "anthropic"), key=lambda n: n != sdk):
        try:
            module = importlib.import_module(name)
        except ImportError:  # pragma: no cover - that extra is not installed
            continue
        for cls_name, wrapper in _WRAPPERS[name]:
            if isinstance(client, getattr(module, cls_name)):
                return wrapper
    raise ConfigurationError(
        f"execbudget.wrap supports openai.OpenAI, openai.AsyncOpenAI, anthropic.Anthropic and "
        f"anthropic.AsyncAnthropic clients, got {type(client).__name__}; install the SDK with "
        "pip install 'execbudget[openai]' or 'execbudget[anthropic]'"
    )


def _read_timeout(client: Any) -> float | None:
    timeout = getattr(client, "timeout", None)
    if isinstance(timeout, int | float) and not isinstance(timeout, bool):
        return float(timeout)
    read = getattr(timeout, "read", None)
    return float(read) if isinstance(read, int | float) else None


def wrap(
    client: C,
    *,
    enforcer: Enforcer | None = None,
    retries: int | None = None,
    degradation: Mode | None = None,
    downgrade_model: str | None = None,
    default_max_tokens: int | None = None,
    counter: TokenCounter | None = None,
    admission_rounds: int = 4,
    backoff_base_s: float = 0.5,
    backoff_max_s: float = 8.0,
) -> C:
    """
    Budget every model call of an OpenAI or Anthropic client before it is sent.

    Each guarded call counts its input offline, lowers its ``max_tokens`` to the per-call
    cap (and, when sized, to what the tightest enclosing budget can afford), holds the
    worst case on the whole scope chain, sends the clamped request with a timeout from
    the remaining deadline, and settles the actual usage after. See docs/invocation.md.

    Args:
        client: ``openai.OpenAI``/``AsyncOpenAI`` or ``anthropic.Anthropic``/``AsyncAnthropic``.
        enforcer: the enforcer to hold on; by default the current scope's, else the
            process default (``execbudget.configure``), looked up at each call.
        retries: re-attempts of a failed call (429, 5xx, timeouts), each charged to the
            ``retries`` budget and held anew; the client's ``max_retries`` by default.
            The SDK's own retries are turned off.
        degradation: override the policy's ``degradation.mode``: ``deny`` (an explicit
            ``max_tokens`` that does not fit is denied), ``clamp`` (lowered to what fits,
            down to ``per_call.min_output_tokens``) or ``downgrade`` (switch to
            ``downgrade_model``, clamped, when the requested model cannot fit).
        downgrade_model: override the policy's ``degradation.model``.
        default_max_tokens: the output limit used when a request gives none (otherwise
            the per-call cap or what the budget affords).
        counter: the offline token counter (profiles for unknown families, strict mode);
            by default one with ``memo=True``, shared by every wrapped client.
        admission_rounds: how often a call re-reads the room and re-plans after losing
            the room to a concurrent caller between the read and the reserve.
        backoff_base_s / backoff_max_s: exponential backoff between retries when the
            server does not say (``retry-after``).

    Returns:
        An object that behaves like ``client`` for the guarded methods and passes every
        other attribute through (typed as the client, but not an instance of its class).
    """
    if isinstance(client, _Wrapped):
        client = client.unwrapped
    kind = _kind(client)
    if degradation is not None and degradation not in _MODES:
        raise ConfigurationError(f"degradation must be one of {', '.join(_MODES)}")
    if retries is None:
        retries = int(getattr(client, "max_retries", 2))
    if retries < 0:
        raise ConfigurationError(f"retries must be >= 0, got {retries}")
    if default_max_tokens is not None and default_max_tokens < 1:
        raise ConfigurationError(f"default_max_tokens must be >= 1, got {default_max_tokens}")
    settings = Settings(
        enforcer=enforcer,
        retries=retries,
        counter=counter or _default_counter(),
        degradation=degradation,
        downgrade_model=downgrade_model,
        default_max_tokens=default_max_tokens,
        admission_rounds=admission_rounds,
        backoff_base_s=backoff_base_s,
        backoff_max_s=backoff_max_s,
        client_timeout_s=_read_timeout(client),
    )
    return cast(C, kind(client, settings))


_COUNTER: TokenCounter | None = None


def _default_counter() -> TokenCounter:
    global _COUNTER
    if _COUNTER is None:
        _COUNTER = TokenCounter(memo=True)
    return _COUNTER
