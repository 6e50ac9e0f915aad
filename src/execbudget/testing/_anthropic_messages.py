"""
``POST /v1/messages``: the Anthropic Messages API, non-streamed and streamed.

A stream is the real event sequence: message_start (usage with the input tokens),
per block content_block_start / ping / content_block_delta... / content_block_stop,
message_delta (stop_reason and the cumulative ``usage.output_tokens``), message_stop.
``max_tokens`` is required, as in the real API. Tool results arrive in user messages, so
"the last message is the user's" means a user message without ``tool_result`` blocks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from starlette.responses import Response

from execbudget.testing._completion import (
    Completion,
    ToolChoice,
    ToolSpec,
    plan_completion,
    wants_tool_call,
)
from execbudget.testing._exchange import BadRequest, Exchange, Frame, sse
from execbudget.testing._generator import request_seed
from execbudget.testing._params import optional_int, require_list, require_str
from execbudget.testing._prompts import anthropic_input_tokens
from execbudget.testing._tokenizers import tokenizer_for_model

__all__ = ["count_message_tokens", "messages"]

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _tools(body: Mapping[str, Any]) -> tuple[list[ToolSpec], ToolChoice]:
    specs: list[ToolSpec] = []
    for tool in body.get("tools") or []:
        if not isinstance(tool, Mapping) or tool.get("type", "custom") != "custom":
            continue  # server tools (web search, ...) are not called by the fake model
        if not isinstance(tool.get("name"), str):
            raise BadRequest("each tool needs a name", param="tools")
        schema = tool.get("input_schema")
        specs.append(ToolSpec(tool["name"], schema if isinstance(schema, Mapping) else None))
    raw = body.get("tool_choice")
    if raw is None:
        return specs, "auto"
    kind = raw.get("type") if isinstance(raw, Mapping) else None
    if kind in ("auto", "none"):
        return specs, "auto" if kind == "auto" else "none"
    if kind == "any":
        return specs, "required"
    if kind == "tool" and isinstance(raw, Mapping):
        chosen = [s for s in specs if s.name == raw.get("name")]
        if not chosen:
            raise BadRequest(f"tool_choice names an unknown tool {raw.get('name')!r}")
        return chosen, "required"
    raise BadRequest(f"unsupported tool_choice {raw!r}", param="tool_choice")


def _last_is_user(messages: list[Any]) -> bool:
    last = messages[-1]
    if not isinstance(last, Mapping) or last.get("role") != "user":
        return False
    content = last.get("content")
    if isinstance(content, list):
        return not any(isinstance(b, Mapping) and b.get("type") == "tool_result" for b in content)
    return True


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    }


def _content(completion: Completion) -> list[dict[str, Any]]:
    if completion.tool_calls:
        return [
            {"type": "tool_use", "id": f"toolu_{c.key}", "name": c.name, "input": c.input}
            for c in completion.tool_calls
        ]
    return [{"type": "text", "text": completion.text.text, "citations": None}]


def _frames(
    message: dict[str, Any],
    completion: Completion,
    usage: dict[str, Any] | None,
) -> Iterator[Frame]:
    def event(kind: str, **fields: Any) -> bytes:
        return sse({"type": kind, **fields}, event=kind)

    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    if usage is not None:
        start["usage"] = {**usage, "output_tokens": min(1, usage["output_tokens"])}
    yield Frame(event("message_start", message=start))
    if completion.tool_calls:
        for index, call in enumerate(completion.tool_calls):
            use = {"type": "tool_use", "id": f"toolu_{call.key}", "name": call.name, "input": {}}
            yield Frame(event("content_block_start", index=index, content_block=use))
            half = len(call.arguments) // 2
            for part, tokens in ((call.arguments[:half], 0), (call.arguments[half:], call.tokens)):
                delta = {"type": "input_json_delta", "partial_json": part}
                yield Frame(event("content_block_delta", index=index, delta=delta), tokens, True)
            yield Frame(event("content_block_stop", index=index))
    else:
        text = {"type": "text", "text": "", "citations": None}
        yield Frame(event("content_block_start", index=0, content_block=text))
        yield Frame(event("ping"))
        for piece, tokens in zip(completion.text.pieces, completion.text.piece_tokens, strict=True):
            delta = {"type": "text_delta", "text": piece}
            yield Frame(event("content_block_delta", index=0, delta=delta), tokens, True)
        yield Frame(event("content_block_stop", index=0))
    end: dict[str, Any] = {
        "delta": {"stop_reason": _STOP_REASONS[completion.finish], "stop_sequence": None}
    }
    if usage is not None:
        end["usage"] = {"output_tokens": usage["output_tokens"]}
    yield Frame(event("message_delta", **end))
    yield Frame(event("message_stop"))


async def messages(ex: Exchange) -> Response:
    body = ex.body
    model = require_str(body, "model")
    conversation = require_list(body, "messages")
    max_tokens = optional_int(body, "max_tokens")
    if max_tokens is None:
        raise BadRequest("max_tokens: Field required")
    tokenizer = tokenizer_for_model(model)
    input_tokens = anthropic_input_tokens(tokenizer, body)
    tools, choice = _tools(body)
    call_tools = wants_tool_call(
        ex.config.tool_call_policy,
        has_tools=bool(tools),
        choice=choice,
        last_is_user=_last_is_user(conversation),
    )
    seed = request_seed(
        "messages", model, body.get("system"), conversation, body.get("tools"), ex.config.seed
    )
    completion = plan_completion(
        tokenizer=tokenizer,
        seed=seed,
        max_tokens=max_tokens,
        config=ex.config,
        tools=tools,
        call_tools=call_tools,
    )
    output_tokens = completion.output_tokens
    usage = None if ex.config.omit_usage else _usage(input_tokens, output_tokens)
    message: dict[str, Any] = {
        "id": f"msg_fake{ex.seq:08d}{seed & 0xFFFFFFFF:08x}",
        "type": "message",
        "role": "assistant",
        "model": model,
    }
    if body.get("stream"):
        return ex.stream(_frames(message, completion, usage), input_tokens=input_tokens)
    await ex.delay()
    payload = {
        **message,
        "content": _content(completion),
        "stop_reason": _STOP_REASONS[completion.finish],
        "stop_sequence": None,
    }
    if usage is not None:
        payload["usage"] = usage
    return ex.json(payload, input_tokens=input_tokens, output_tokens=output_tokens)


async def count_message_tokens(ex: Exchange) -> Response:
    """``POST /v1/messages/count_tokens``: what a messages call would bill as input (free)."""
    model = require_str(ex.body, "model")
    require_list(ex.body, "messages")
    _tools(ex.body)  # the same validation as a real call
    tokens = anthropic_input_tokens(tokenizer_for_model(model), ex.body)
    return ex.json({"input_tokens": tokens}, input_tokens=0, output_tokens=0)
