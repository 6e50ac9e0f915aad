"""
The four guarded APIs, as pure adapters: what a request asks for, how to clamp it, what
its response reports, and how to count output locally when nothing is reported.

* OpenAI chat completions (``max_completion_tokens`` / legacy ``max_tokens``, ``n``);
* OpenAI responses (``max_output_tokens``; server-side context held as opaque tokens);
* OpenAI embeddings (input only);
* Anthropic messages (``max_tokens``, required; thinking budgets kept below it).

No adapter does I/O. Request values arrive as the SDK accepts them (dicts, TypedDicts,
pydantic objects, generators): ``normalize`` turns them into plain data once, and the
normalized request is what is both counted and sent, so a generator of messages is never
consumed twice and the count is of exactly what goes on the wire.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from ..pricing import TokenCounter, Usage, get_encoder, usage_from_anthropic, usage_from_openai
from ._plan import CallRequest, Plan

#: Output tokens added per tool call counted locally (call framing the text does not show).
TOOL_CALL_FRAMING: Final = 3
_MAX_FIELDS_OPENAI_CHAT: Final = ("max_completion_tokens", "max_tokens")
#: The Responses API rejects ``max_output_tokens`` below 16: a clamp never goes lower.
RESPONSES_MIN_OUTPUT: Final = 16


def given(value: Any) -> bool:
    """False for None and the SDKs' ``NOT_GIVEN`` / ``omit`` sentinels."""
    return value is not None and type(value).__name__ not in ("NotGiven", "Omit")


def _flat_dicts(value: Any) -> bool:
    """A list of dicts of strings (the common message list): already plain, keep it."""
    return type(value) is list and all(
        type(item) is dict and all(type(v) is str for v in item.values()) for item in value
    )


def plain(value: Any) -> Any:
    """Request data as plain JSON-like values (pydantic objects dumped, iterables listed)."""
    if _flat_dicts(value):
        return value
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items() if given(v)}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return plain(dump(exclude_none=True))
    if isinstance(value, bytes | bytearray):
        return value
    if isinstance(value, Iterable):
        return [plain(v) for v in value]
    return value


#: Whether a type is a Mapping, per type: ``isinstance(obj, Mapping)`` of an SDK object
#: runs ``ABCMeta.__instancecheck__`` (a Python-level call) on every field read.
_IS_MAPPING: dict[type, bool] = {dict: True}


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    cls = type(obj)
    is_mapping = _IS_MAPPING.get(cls)
    if is_mapping is None:
        is_mapping = isinstance(obj, Mapping)
        if len(_IS_MAPPING) < 256:
            _IS_MAPPING[cls] = is_mapping
    if is_mapping:
        return obj.get(name)
    return getattr(obj, name, None)


def mentions(value: Any, key: str, depth: int = 8) -> bool:
    """True if ``key`` appears as a mapping key anywhere in ``value`` (bounded depth)."""
    if depth <= 0:
        return True  # too deep to be sure: assume it does
    if isinstance(value, Mapping):
        return key in value or any(mentions(v, key, depth - 1) for v in value.values())
    if isinstance(value, list | tuple):
        return any(mentions(v, key, depth - 1) for v in value)
    return False


@dataclass(slots=True)
class OutputTally:
    """Output counted locally: a lower and an upper estimate of the provider's tokens.

    ``upper`` is what is charged when the provider reports nothing (an upper bound for
    estimated families); ``lower`` is what proves an overrun: for Claude it is the o200k
    count, which measured Claude counts never fall below (ratios 1.11–2.3). For OpenAI
    models the two are equal. Each non-empty piece counts at least one token.
    """

    counter: TokenCounter
    model: str
    encoding: str
    exact: bool
    lower: int = 0
    upper: int = 0

    @classmethod
    def start(cls, counter: TokenCounter, model: str) -> OutputTally:
        return cls(counter, model, counter.encoding_for(model), not counter.is_upper_bound(model))

    def add(self, piece: Any) -> None:
        if not piece:
            return
        if not isinstance(piece, str):
            piece = json.dumps(piece, ensure_ascii=False, default=str)
        upper = max(1, self.counter.count_text(piece, self.model))
        self.upper += upper
        if self.exact:
            self.lower += upper
        else:
            encoder = get_encoder(self.encoding, backend=self.counter.backend)
            self.lower += max(1, encoder.count(piece))

    def add_tool_call(self, name: Any, arguments: Any) -> None:
        self.add(name)
        self.add(arguments)
        self.upper += TOOL_CALL_FRAMING


class Api:
    """One guarded API: a pure adapter between the caller's request and the planner."""

    name: ClassVar[str]
    provider: ClassVar[str]
    #: The request field the clamped allowance is written to when the caller gave none.
    max_field: ClassVar[str | None]

    # -- the request -------------------------------------------------------------------
    def normalize(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of the request with iterables materialized (counted = sent)."""
        return {k: v for k, v in kwargs.items()}

    def model(self, kwargs: Mapping[str, Any]) -> str:
        model = kwargs.get("model")
        if not isinstance(model, str) or not model:
            raise TypeError(f"{self.name}: a model name is required, got {model!r}")
        return model

    def describe(self, kwargs: Mapping[str, Any], model: str, counter: TokenCounter) -> CallRequest:
        raise NotImplementedError

    def apply(
        self, kwargs: Mapping[str, Any], plan: Plan, *, stream: bool, attempt: int
    ) -> dict[str, Any]:
        """The request to send: the plan's model and allowance, usage asked for in streams."""
        out = dict(kwargs)
        out["model"] = plan.model
        if attempt:
            headers = dict(out.get("extra_headers") or {})
            headers["x-stainless-retry-count"] = str(attempt)
            out["extra_headers"] = headers
        return out

    # -- the response ------------------------------------------------------------------
    def usage(self, response: Any) -> Usage | None:
        raise NotImplementedError

    def count_response(self, response: Any, tally: OutputTally) -> None:
        """Add the output of a non-streamed response to ``tally``."""

    # -- streams -----------------------------------------------------------------------
    def chunk(self, chunk: Any, tally: OutputTally) -> ChunkInfo:
        """Count a stream chunk's output into ``tally``; report what else it says."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    """What a stream chunk says besides its output text."""

    #: Usage the provider reported in this chunk (final, or Anthropic's start).
    usage: Usage | None = None
    #: True if ``usage`` is the call's final usage.
    final: bool = False
    #: A usage-only chunk the caller did not ask for: hide it from them.
    hidden: bool = False


_NO_INFO: Final = ChunkInfo()


def _clamp_fields(
    out: dict[str, Any], fields: tuple[str, ...], value: int | None, default_field: str | None
) -> None:
    """Write ``value`` into every max field the request (or its extra_body) sets."""
    if value is None:
        return
    extra = out.get("extra_body")
    wrote = False
    for field in fields:
        if given(out.get(field)):
            out[field] = value
            wrote = True
        if isinstance(extra, Mapping) and given(extra.get(field)):
            extra = {**extra, field: value}
            out["extra_body"] = extra
            wrote = True
    if not wrote and default_field is not None:
        out[default_field] = value


def _requested(kwargs: Mapping[str, Any], fields: tuple[str, ...]) -> int | None:
    """The smallest max-tokens value the request sets, in its fields or its extra_body."""
    values: list[int] = []
    extra = kwargs.get("extra_body")
    for source in (kwargs, extra if isinstance(extra, Mapping) else {}):
        for field in fields:
            value = source.get(field)
            if given(value):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise TypeError(f"{field} must be a whole number >= 0, got {value!r}")
                values.append(value)
    return min(values) if values else None


# -- OpenAI chat completions -----------------------------------------------------------------
class ChatCompletions(Api):
    name = "chat.completions"
    provider = "openai"
    max_field = "max_completion_tokens"

    def normalize(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(kwargs)
        for key in ("messages", "tools", "functions"):
            if given(out.get(key)):
                out[key] = plain(out[key])
        return out

    def describe(self, kwargs: Mapping[str, Any], model: str, counter: TokenCounter) -> CallRequest:
        messages = kwargs.get("messages")
        if not isinstance(messages, list):
            raise TypeError("chat.completions.create: messages must be a list of messages")
        tools = kwargs.get("tools") if given(kwargs.get("tools")) else None
        if tools is None and given(kwargs.get("functions")):
            tools = [{"type": "function", "function": f} for f in kwargs["functions"]]
        response_format = kwargs.get("response_format")
        if not isinstance(response_format, Mapping):
            response_format = None
        inputs = counter.count_chat(messages, model, tools, response_format=response_format)
        n = kwargs.get("n")
        choices = n if given(n) and isinstance(n, int) and n > 1 else 1
        return CallRequest(
            model=model,
            input_tokens=inputs,
            requested_output=_requested(kwargs, _MAX_FIELDS_OPENAI_CHAT),
            choices=choices,
            cache_write="none",  # OpenAI bills no prompt-cache writes
        )

    def apply(
        self, kwargs: Mapping[str, Any], plan: Plan, *, stream: bool, attempt: int
    ) -> dict[str, Any]:
        out = super().apply(kwargs, plan, stream=stream, attempt=attempt)
        _clamp_fields(out, _MAX_FIELDS_OPENAI_CHAT, plan.send_output, self.max_field)
        if stream:
            options = out.get("stream_options")
            options = dict(options) if isinstance(options, Mapping) else {}
            options["include_usage"] = True
            out["stream_options"] = options
        return out

    def usage(self, response: Any) -> Usage | None:
        usage = _get(response, "usage")
        return None if usage is None else usage_from_openai(usage)

    def count_response(self, response: Any, tally: OutputTally) -> None:
        for choice in _get(response, "choices") or ():
            message = _get(choice, "message")
            tally.add(_get(message, "content"))
            tally.add(_get(message, "refusal"))
            for call in _get(message, "tool_calls") or ():
                function = _get(call, "function")
                tally.add_tool_call(_get(function, "name"), _get(function, "arguments"))
            function_call = _get(message, "function_call")
            if function_call is not None:
                tally.add_tool_call(_get(function_call, "name"), _get(function_call, "arguments"))

    def chunk(self, chunk: Any, tally: OutputTally) -> ChunkInfo:
        choices = _get(chunk, "choices") or ()
        for choice in choices:
            delta = _get(choice, "delta")
            if delta is None:
                continue
            tally.add(_get(delta, "content"))
            tally.add(_get(delta, "refusal"))
            for call in _get(delta, "tool_calls") or ():
                function = _get(call, "function")
                tally.add(_get(function, "name"))
                tally.add(_get(function, "arguments"))
        usage = _get(chunk, "usage")
        if usage is None:
            return _NO_INFO
        return ChunkInfo(usage_from_openai(usage), final=True, hidden=not choices)


# -- OpenAI responses --------------------------------------------------------------------
_RESPONSES_TEXT_DELTAS: Final = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
        "response.audio.transcript.delta",
        "response.code_interpreter_call_code.delta",
    }
)
_RESPONSES_TERMINAL: Final = frozenset(
    {"response.completed", "response.incomplete", "response.failed"}
)


class Responses(Api):
    name = "responses"
    provider = "openai"
    max_field = "max_output_tokens"

    def normalize(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(kwargs)
        for key in ("input", "tools"):
            if given(out.get(key)) and not isinstance(out[key], str):
                out[key] = plain(out[key])
        return out

    def describe(self, kwargs: Mapping[str, Any], model: str, counter: TokenCounter) -> CallRequest:
        raw = kwargs.get("input")
        items: str | list[Any] = raw if isinstance(raw, str | list) else []
        instructions = kwargs.get("instructions")
        tools = kwargs.get("tools") if given(kwargs.get("tools")) else None
        inputs = counter.count_responses_input(
            items, model, instructions if isinstance(instructions, str) else None, tools
        )
        # Context stored on the server is invisible offline: hold it as opaque content.
        for key in ("previous_response_id", "conversation", "prompt"):
            if given(kwargs.get(key)):
                inputs += counter.opaque_tokens
        return CallRequest(
            model=model,
            input_tokens=inputs,
            requested_output=_requested(kwargs, ("max_output_tokens",)),
            cache_write="none",
            min_output=RESPONSES_MIN_OUTPUT,
        )

    def apply(
        self, kwargs: Mapping[str, Any], plan: Plan, *, stream: bool, attempt: int
    ) -> dict[str, Any]:
        out = super().apply(kwargs, plan, stream=stream, attempt=attempt)
        _clamp_fields(out, ("max_output_tokens",), plan.send_output, self.max_field)
        return out

    def usage(self, response: Any) -> Usage | None:
        usage = _get(response, "usage")
        return None if usage is None else usage_from_openai(usage)

    def count_response(self, response: Any, tally: OutputTally) -> None:
        for item in _get(response, "output") or ():
            kind = _get(item, "type")
            if kind == "message":
                for part in _get(item, "content") or ():
                    tally.add(_get(part, "text"))
                    tally.add(_get(part, "refusal"))
            elif kind in ("function_call", "custom_tool_call"):
                arguments = _get(item, "arguments")
                tally.add_tool_call(
                    _get(item, "name"), arguments if arguments is not None else _get(item, "input")
                )
            elif kind == "reasoning":
                for part in (_get(item, "summary") or []) + (_get(item, "content") or []):
                    tally.add(_get(part, "text"))
            else:
                tally.add(plain(item))

    def chunk(self, chunk: Any, tally: OutputTally) -> ChunkInfo:
        kind = _get(chunk, "type")
        if kind in _RESPONSES_TEXT_DELTAS:
            tally.add(_get(chunk, "delta"))
            return _NO_INFO
        if kind in _RESPONSES_TERMINAL:
            usage = self.usage(_get(chunk, "response"))
            return ChunkInfo(usage, final=True) if usage is not None else _NO_INFO
        return _NO_INFO


# -- OpenAI embeddings -------------------------------------------------------------------
class Embeddings(Api):
    name = "embeddings"
    provider = "openai"
    max_field = None

    def normalize(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(kwargs)
        value = out.get("input")
        if given(value) and not isinstance(value, str | list):
            out["input"] = plain(value)
        return out

    def describe(self, kwargs: Mapping[str, Any], model: str, counter: TokenCounter) -> CallRequest:
        value = kwargs.get("input")
        items: list[Any] = [value] if isinstance(value, str) else list(value or [])
        if items and all(isinstance(x, int) and not isinstance(x, bool) for x in items):
            items = [items]  # one input given as token ids
        tokens = 0
        for item in items:
            if isinstance(item, str):
                tokens += counter.count_text(item, model)
            elif isinstance(item, list):
                tokens += len(item)
            else:
                raise TypeError(f"embeddings: unsupported input item {type(item).__name__}")
        return CallRequest(
            model=model,
            input_tokens=tokens,
            requested_output=None,
            has_output=False,
            cache_write="none",
        )

    def usage(self, response: Any) -> Usage | None:
        usage = _get(response, "usage")
        return None if usage is None else usage_from_openai(usage)

    def chunk(self, chunk: Any, tally: OutputTally) -> ChunkInfo:  # pragma: no cover
        raise TypeError("embeddings do not stream")


# -- Anthropic messages --------------------------------------------------------------------
class Messages(Api):
    name = "messages"
    provider = "anthropic"
    max_field = "max_tokens"

    def normalize(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(kwargs)
        for key in ("messages", "tools", "system"):
            if given(out.get(key)) and not isinstance(out[key], str):
                out[key] = plain(out[key])
        return out

    def describe(self, kwargs: Mapping[str, Any], model: str, counter: TokenCounter) -> CallRequest:
        messages = kwargs.get("messages")
        if not isinstance(messages, list):
            raise TypeError("messages.create: messages must be a list of messages")
        system = kwargs.get("system") if given(kwargs.get("system")) else None
        tools = kwargs.get("tools") if given(kwargs.get("tools")) else None
        inputs = counter.count_anthropic(messages, model, system, tools)
        requested = _requested(kwargs, ("max_tokens",))
        if requested is None:
            raise TypeError("messages.create: max_tokens is required by the Anthropic API")
        # Prompt-cache writes are billed above the input rate, but only if asked for.
        caching = given(kwargs.get("cache_control")) or mentions(
            [messages, system, tools], "cache_control"
        )
        return CallRequest(
            model=model,
            input_tokens=inputs,
            requested_output=requested,
            cache_write="any" if caching else "none",
        )

    def apply(
        self, kwargs: Mapping[str, Any], plan: Plan, *, stream: bool, attempt: int
    ) -> dict[str, Any]:
        out = super().apply(kwargs, plan, stream=stream, attempt=attempt)
        _clamp_fields(out, ("max_tokens",), plan.send_output, self.max_field)
        thinking = out.get("thinking")
        limit = out.get("max_tokens")
        if isinstance(thinking, Mapping) and isinstance(limit, int):
            budget = thinking.get("budget_tokens")
            if isinstance(budget, int) and budget >= limit:
                # The API requires budget_tokens < max_tokens: keep thinking inside it.
                out["thinking"] = {**thinking, "budget_tokens": max(0, limit - 1)}
        return out

    def usage(self, response: Any) -> Usage | None:
        usage = _get(response, "usage")
        return None if usage is None else usage_from_anthropic(usage)

    def count_response(self, response: Any, tally: OutputTally) -> None:
        for block in _get(response, "content") or ():
            kind = _get(block, "type")
            if kind == "text":
                tally.add(_get(block, "text"))
            elif kind in ("tool_use", "server_tool_use"):
                tally.add_tool_call(_get(block, "name"), plain(_get(block, "input")))
            elif kind == "thinking":
                tally.add(_get(block, "thinking"))
            else:
                tally.add(plain(block))

    def chunk(self, chunk: Any, tally: OutputTally) -> ChunkInfo:
        kind = _get(chunk, "type")
        if kind == "content_block_delta":
            delta = _get(chunk, "delta")
            for field in ("text", "partial_json", "thinking"):
                tally.add(_get(delta, field))
            return _NO_INFO
        if kind == "content_block_start":
            block = _get(chunk, "content_block")
            if _get(block, "type") in ("tool_use", "server_tool_use"):
                tally.add(_get(block, "name"))
                tally.upper += TOOL_CALL_FRAMING
            return _NO_INFO
        if kind == "message_start":
            usage = _get(_get(chunk, "message"), "usage")
            return ChunkInfo(usage_from_anthropic(usage)) if usage is not None else _NO_INFO
        if kind == "message_delta":
            usage = _get(chunk, "usage")
            if usage is None:
                return _NO_INFO
            return ChunkInfo(_anthropic_delta_usage(usage), final=True)
        return _NO_INFO


def _anthropic_delta_usage(usage: Any) -> Usage:
    """The cumulative usage of a ``message_delta``; its input fields may be null."""
    return usage_from_anthropic(
        {
            "input_tokens": _get(usage, "input_tokens") or 0,
            "output_tokens": _get(usage, "output_tokens") or 0,
            "cache_read_input_tokens": _get(usage, "cache_read_input_tokens") or 0,
            "cache_creation_input_tokens": _get(usage, "cache_creation_input_tokens") or 0,
        }
    )


CHAT: Final = ChatCompletions()
RESPONSES: Final = Responses()
EMBEDDINGS: Final = Embeddings()
MESSAGES: Final = Messages()
