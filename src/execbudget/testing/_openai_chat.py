"""``POST /v1/chat/completions``: non-streamed and SSE-streamed, with tool calls and usage."""

from __future__ import annotations

import time
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
from execbudget.testing._prompts import chat_input_tokens
from execbudget.testing._tokenizers import tokenizer_for_model

__all__ = ["chat_completions", "chat_usage", "openai_tools"]

_FINGERPRINT = "fp_fake"


def openai_tools(body: Mapping[str, Any], *, nested: bool) -> tuple[list[ToolSpec], ToolChoice]:
    """Function tools and the tool choice, for chat (``nested``) or responses (flat) shape."""
    specs: list[ToolSpec] = []
    for tool in body.get("tools") or []:
        if not isinstance(tool, Mapping) or tool.get("type", "function") != "function":
            continue
        function = tool.get("function") if nested else tool
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise BadRequest("each function tool needs a name", param="tools")
        parameters = function.get("parameters")
        specs.append(
            ToolSpec(function["name"], parameters if isinstance(parameters, Mapping) else None)
        )
    raw = body.get("tool_choice")
    if raw is None or raw == "auto":
        return specs, "auto"
    if raw in ("none", "required"):
        return specs, raw
    if isinstance(raw, Mapping) and raw.get("type") == "function":
        named = raw.get("function", {}).get("name") if nested else raw.get("name")
        chosen = [s for s in specs if s.name == named]
        if not chosen:
            raise BadRequest(
                f"tool_choice names an unknown function {named!r}", param="tool_choice"
            )
        return chosen, "required"
    raise BadRequest(f"unsupported tool_choice {raw!r}", param="tool_choice")


def chat_usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _message(completion: Completion) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": completion.text.text if not completion.tool_calls else None,
        "refusal": None,
        "annotations": [],
    }
    if completion.tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{c.key}",
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in completion.tool_calls
        ]
    return message


def _frames(
    base: dict[str, Any], completion: Completion, usage: dict[str, Any] | None, include_usage: bool
) -> Iterator[Frame]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload = {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            payload["usage"] = None
        return sse(payload)

    yield Frame(chunk({"role": "assistant", "content": "", "refusal": None}))
    for piece, tokens in zip(completion.text.pieces, completion.text.piece_tokens, strict=True):
        yield Frame(chunk({"content": piece}), tokens, content=True)
    for i, call in enumerate(completion.tool_calls):
        head = {"index": i, "id": f"call_{call.key}", "type": "function"}
        yield Frame(
            chunk({"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]}),
            content=True,
        )
        half = len(call.arguments) // 2
        for part, tokens in ((call.arguments[:half], 0), (call.arguments[half:], call.tokens)):
            delta = {"tool_calls": [{"index": i, "function": {"arguments": part}}]}
            yield Frame(chunk(delta), tokens, content=True)
    yield Frame(chunk({}, completion.finish))
    if usage is not None:
        yield Frame(sse({**base, "choices": [], "usage": usage}))
    yield Frame(sse("[DONE]"))


async def chat_completions(ex: Exchange) -> Response:
    body = ex.body
    model = require_str(body, "model")
    messages = require_list(body, "messages")
    if body.get("n", 1) not in (None, 1):
        raise BadRequest("the fake provider supports only n=1", param="n")
    max_tokens = optional_int(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = optional_int(body, "max_tokens")
    tokenizer = tokenizer_for_model(model)
    input_tokens = chat_input_tokens(tokenizer, body)
    tools, choice = openai_tools(body, nested=True)
    last = messages[-1]
    call_tools = wants_tool_call(
        ex.config.tool_call_policy,
        has_tools=bool(tools),
        choice=choice,
        last_is_user=isinstance(last, Mapping) and last.get("role") == "user",
    )
    seed = request_seed("chat", model, messages, body.get("tools"), ex.config.seed)
    completion = plan_completion(
        tokenizer=tokenizer,
        seed=seed,
        max_tokens=max_tokens,
        config=ex.config,
        tools=tools,
        call_tools=call_tools,
    )
    output_tokens = completion.output_tokens
    usage = None if ex.config.omit_usage else chat_usage(input_tokens, output_tokens)
    base = {
        "id": f"chatcmpl-fake{ex.seq:08d}{seed & 0xFFFFFFFF:08x}",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": _FINGERPRINT,
        "service_tier": "default",
    }
    if body.get("stream"):
        options = body.get("stream_options")
        include_usage = isinstance(options, Mapping) and bool(options.get("include_usage"))
        frames = _frames(
            {**base, "object": "chat.completion.chunk"},
            completion,
            usage if include_usage else None,
            include_usage,
        )
        return ex.stream(frames, input_tokens=input_tokens)
    await ex.delay()
    payload = {
        **base,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": _message(completion),
                "logprobs": None,
                "finish_reason": completion.finish,
            }
        ],
        "usage": usage,
    }
    return ex.json(payload, input_tokens=input_tokens, output_tokens=output_tokens)
