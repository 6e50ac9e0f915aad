"""
Token usage of one call, in one convention, whatever the provider reported.

Providers disagree on what their numbers include, and a settlement that mixes the
conventions silently under- or over-charges. :class:`Usage` follows the convention of
``genai-prices`` (and OpenAI):

* ``input_tokens`` is **all** input, cached or not; ``cache_read_tokens`` and
  ``cache_write_tokens`` are parts of it, and ``cache_write_1h_tokens`` is the part of the
  cache writes made with the 1-hour lifetime.
* ``output_tokens`` is **all** output, visible text and reasoning; ``reasoning_tokens`` is
  the part of it that was reasoning ("thinking").

Anthropic reports ``input_tokens`` *without* the cached parts; use
:func:`usage_from_anthropic`, which adds them back. :func:`usage_from_openai` reads chat
completions, responses and embeddings usage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from pydantic import BaseModel

from ..errors import ConfigurationError


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """
    What a provider reports for one call (or what was counted locally when it reports none).

    Invariants (checked): every count is an int >= 0, ``cache_read_tokens +
    cache_write_tokens <= input_tokens``, ``cache_write_1h_tokens <= cache_write_tokens``
    and ``reasoning_tokens <= output_tokens``: the parts are included in the totals.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0

    def __post_init__(self) -> None:
        # The common case in one expression: six exact ints, the parts within their totals
        # (built on every settlement and every usage chunk); anything else is named below.
        i, o = self.input_tokens, self.output_tokens
        read, write, write_1h = (
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.cache_write_1h_tokens,
        )
        reasoning = self.reasoning_tokens
        if (
            type(i) is int
            and type(o) is int
            and type(read) is int
            and type(write) is int
            and type(write_1h) is int
            and type(reasoning) is int
            and read >= 0
            and 0 <= write_1h <= write
            and read + write <= i
            and 0 <= reasoning <= o
        ):
            return
        for name in _FIELDS:
            value = getattr(self, name)
            if type(value) is int and value >= 0:  # the common case, without isinstance
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigurationError(f"usage: {name} must be an int >= 0, got {value!r}")
        if self.cache_read_tokens + self.cache_write_tokens > self.input_tokens:
            raise ConfigurationError(
                f"usage: cache_read_tokens ({self.cache_read_tokens}) + cache_write_tokens "
                f"({self.cache_write_tokens}) exceed input_tokens ({self.input_tokens}); "
                "input_tokens must include the cached parts (see usage_from_anthropic)"
            )
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            raise ConfigurationError(
                f"usage: cache_write_1h_tokens ({self.cache_write_1h_tokens}) exceed "
                f"cache_write_tokens ({self.cache_write_tokens})"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise ConfigurationError(
                f"usage: reasoning_tokens ({self.reasoning_tokens}) exceed output_tokens "
                f"({self.output_tokens}); output_tokens must include reasoning"
            )

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: object) -> Usage:
        """Sum two usages (stream chunks, or the attempts of one logical call)."""
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )


_FIELDS: Final = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cache_write_1h_tokens",
)
_MISSING: Final = object()
_NAMES: Final = frozenset(
    {
        "input_tokens",
        "output_tokens",
        "prompt_tokens",
        "completion_tokens",
        "input_tokens_details",
        "output_tokens_details",
        "prompt_tokens_details",
        "completion_tokens_details",
        "cached_tokens",
        "reasoning_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "cache_creation",
        "ephemeral_1h_input_tokens",
        "ephemeral_5m_input_tokens",
    }
)
_PYDANTIC_GETATTR: Final = getattr(BaseModel, "__getattr__", None)
#: How to read a usage field of an object, per class: 0 ``getattr``; 1 the instance
#: ``__dict__``; 2 the ``__dict__``, then pydantic's extra fields; 3 a mapping's ``get``.
#: The SDKs' usage objects are pydantic models (kind 2), whose fields live in ``__dict__``
#: and whose absent names cost a raised and caught AttributeError through ``getattr``
#: (~2 µs each).
_READ_KIND: dict[type, int] = {}


def _read_kind(cls: type) -> int:
    kind = _READ_KIND.get(cls)
    if kind is None:
        hook = getattr(cls, "__getattr__", None)
        if issubclass(cls, Mapping):
            kind = 3
        elif cls.__getattribute__ is not object.__getattribute__ or any(
            hasattr(cls, name) for name in _NAMES
        ):
            kind = 0  # a class attribute, a property or a proxy: ask getattr
        elif hook is None:
            kind = 1
        elif hook is _PYDANTIC_GETATTR:
            kind = 2
        else:
            kind = 0
        if len(_READ_KIND) < 256:
            _READ_KIND[cls] = kind
    return kind


def _field(obj: Any, key: str) -> Any:
    """``obj[key]`` of a mapping or ``obj.key`` of an object; ``None`` if absent."""
    if type(obj) is dict:
        return obj.get(key)
    kind = _read_kind(type(obj))
    if kind == 3:
        return obj.get(key)
    if kind:
        found = getattr(obj, "__dict__", {}).get(key, _MISSING)
        if found is not _MISSING:
            return found
        if kind == 1:
            return None
        # pydantic's __getattr__: extra fields (private names start with "_"; ours do not)
        extra = getattr(obj, "__pydantic_extra__", None)
        return extra.get(key) if extra else None
    return getattr(obj, key, None)


def _get(obj: Any, *path: str) -> Any:
    """Follow ``path`` through mappings or attributes (SDK objects); ``None`` if absent."""
    for key in path:
        if obj is None:
            return None
        obj = _field(obj, key)
    return obj


def _int(obj: Any, *path: str) -> int:
    return _count(_get(obj, *path), path)


def _count(value: Any, path: tuple[str, ...]) -> int:
    if value is None:
        return 0
    if type(value) is int:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"usage: {'.'.join(path)} must be an int, got {value!r}")
    return value


def _view(obj: Any) -> Mapping[str, Any] | None:
    """A mapping whose ``get(key)`` is ``_field(obj, key)`` for any key, or None."""
    if type(obj) is dict:
        return obj
    kind = _read_kind(type(obj))
    if kind == 3:
        return obj  # type: ignore[no-any-return]
    if kind == 1 or (kind == 2 and not getattr(obj, "__pydantic_extra__", None)):
        found: dict[str, Any] = getattr(obj, "__dict__", _NO_FIELDS)
        return found
    return None


def _sub(view: Mapping[str, Any], key: str, field: str) -> Any:
    """``view[key].field`` (``None`` if absent), through ``_view`` when it can."""
    obj = view.get(key)
    if obj is None:
        return None
    inner = _view(obj)
    return inner.get(field) if inner is not None else _field(obj, field)


_NO_FIELDS: Final[dict[str, Any]] = {}
_RESPONSES_NAMES: Final = (
    ("input_tokens",),
    ("output_tokens",),
    ("input_tokens_details", "cached_tokens"),
    ("output_tokens_details", "reasoning_tokens"),
)
_CHAT_NAMES: Final = (
    ("prompt_tokens",),
    ("completion_tokens",),
    ("prompt_tokens_details", "cached_tokens"),
    ("completion_tokens_details", "reasoning_tokens"),
)


def usage_from_openai(usage: Any) -> Usage:
    """
    Convert an OpenAI ``usage`` (dict or SDK object) to :class:`Usage`.

    Reads chat completions (``prompt_tokens``, ``completion_tokens``,
    ``prompt_tokens_details.cached_tokens``, ``completion_tokens_details.reasoning_tokens``),
    the Responses API (``input_tokens``, ``output_tokens``, ``input_tokens_details``,
    ``output_tokens_details``) and embeddings (``prompt_tokens`` only). OpenAI's totals
    already include the cached and reasoning parts.
    """
    view = _view(usage)
    if view is None:  # an object read through getattr
        responses = (
            _get(usage, "input_tokens") is not None or _get(usage, "output_tokens") is not None
        )
        inputs, outputs, cached, reasoning = _RESPONSES_NAMES if responses else _CHAT_NAMES
        return Usage(
            input_tokens=_int(usage, *inputs),
            output_tokens=_int(usage, *outputs),
            cache_read_tokens=_int(usage, *cached),
            reasoning_tokens=_int(usage, *reasoning),
        )
    # a dict or an SDK model: one read of its fields (the hot path of every settlement)
    get = view.get
    responses = get("input_tokens") is not None or get("output_tokens") is not None
    inputs, outputs, cached, reasoning = _RESPONSES_NAMES if responses else _CHAT_NAMES
    return Usage(
        input_tokens=_count(get(inputs[0]), inputs),
        output_tokens=_count(get(outputs[0]), outputs),
        cache_read_tokens=_count(_sub(view, *cached), cached),
        reasoning_tokens=_count(_sub(view, *reasoning), reasoning),
    )


def usage_from_anthropic(usage: Any) -> Usage:
    """
    Convert an Anthropic ``usage`` (dict or SDK object) to :class:`Usage`.

    Anthropic's ``input_tokens`` excludes ``cache_read_input_tokens`` and
    ``cache_creation_input_tokens``; they are added back so ``input_tokens`` is the total
    (which is also what decides the context-length tier). ``cache_creation`` splits the
    writes by lifetime when present. Extended-thinking tokens are billed as output and are
    inside ``output_tokens``; Anthropic does not report them separately, so
    ``reasoning_tokens`` is 0.
    """
    uncached = _int(usage, "input_tokens")
    cache_read = _int(usage, "cache_read_input_tokens")
    cache_write = _int(usage, "cache_creation_input_tokens")
    write_1h = _int(usage, "cache_creation", "ephemeral_1h_input_tokens")
    write_5m = _int(usage, "cache_creation", "ephemeral_5m_input_tokens")
    cache_write = max(cache_write, write_1h + write_5m)
    return Usage(
        input_tokens=uncached + cache_read + cache_write,
        output_tokens=_int(usage, "output_tokens"),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=write_1h,
    )
