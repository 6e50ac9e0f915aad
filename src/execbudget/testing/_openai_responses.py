"""
``POST /v1/responses``: non-streamed and streamed with the Responses API event sequence.

A stream runs response.created, response.in_progress, then per output item
output_item.added, (content_part.added, output_text.delta..., output_text.done,
content_part.done | function_call_arguments.delta..., function_call_arguments.done),
output_item.done, and ends with response.completed, or with response.incomplete (reason
``max_output_tokens``) when the cap cut the answer, as the real API does. Usage travels in
that last event.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from starlette.responses import Response

from execbudget.testing._completion import Completion, plan_completion, wants_tool_call
from execbudget.testing._exchange import BadRequest, Exchange, Frame, sse
from execbudget.testing._generator import request_seed
from execbudget.testing._openai_chat import openai_tools
from execbudget.testing._params import optional_int, require_str
from execbudget.testing._prompts import responses_input_tokens
from execbudget.testing._tokenizers import tokenizer_for_model

# The real Responses API rejects max_output_tokens below 16; a clamp must respect that.
MIN_OUTPUT_TOKENS = 16

__all__ = ["count_input_tokens", "responses"]


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def _last_is_user(items: Any) -> bool:
    if isinstance(items, str):
        return True
    if not isinstance(items, list) or not items:
        return False
    last = items[-1]
    return (
        isinstance(last, Mapping)
        and last.get("type", "message") == "message"
        and last.get("role") == "user"
    )


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _output(completion: Completion, key: str, status: str) -> list[dict[str, Any]]:
    if completion.tool_calls:
        return [
            {
                "type": "function_call",
                "id": f"fc_{c.key}",
                "call_id": f"call_{c.key}",
                "name": c.name,
                "arguments": c.arguments,
                "status": "completed",
            }
            for c in completion.tool_calls
        ]
    return [
        {
            "type": "message",
            "id": f"msg_{key}",
            "status": status,
            "role": "assistant",
            "content": [_text_part(completion.text.text)],
        }
    ]


def _frames(
    envelope: dict[str, Any],
    completion: Completion,
    output: list[dict[str, Any]],
    final: dict[str, Any],
) -> Iterator[Frame]:
    seq = 0

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal seq
        data = sse({"type": kind, "sequence_number": seq, **fields}, event=kind)
        seq += 1
        return data

    in_progress = {**envelope, "status": "in_progress", "output": [], "usage": None}
    yield Frame(event("response.created", response=in_progress))
    yield Frame(event("response.in_progress", response=in_progress))
    for index, item in enumerate(output):
        if item["type"] == "function_call":
            call = completion.tool_calls[index]
            added = {**item, "arguments": "", "status": "in_progress"}
            yield Frame(event("response.output_item.added", output_index=index, item=added))
            half = len(call.arguments) // 2
            for part, tokens in ((call.arguments[:half], 0), (call.arguments[half:], call.tokens)):
                delta = event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=part,
                )
                yield Frame(delta, tokens, content=True)
            yield Frame(
                event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=call.name,
                    arguments=call.arguments,
                )
            )
        else:
            added = {**item, "status": "in_progress", "content": []}
            yield Frame(event("response.output_item.added", output_index=index, item=added))
            ids = {"item_id": item["id"], "output_index": index, "content_index": 0}
            yield Frame(event("response.content_part.added", **ids, part=_text_part("")))
            for piece, tokens in zip(
                completion.text.pieces, completion.text.piece_tokens, strict=True
            ):
                delta = event("response.output_text.delta", **ids, delta=piece, logprobs=[])
                yield Frame(delta, tokens, content=True)
            text = completion.text.text
            yield Frame(event("response.output_text.done", **ids, text=text, logprobs=[]))
            yield Frame(event("response.content_part.done", **ids, part=_text_part(text)))
        yield Frame(event("response.output_item.done", output_index=index, item=item))
    kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
    yield Frame(event(kind, response=final))


async def responses(ex: Exchange) -> Response:
    body = ex.body
    model = require_str(body, "model")
    items = body.get("input")
    if not isinstance(items, str | list) or not items:
        raise BadRequest("'input' is required (a string or an array of items)", param="input")
    if body.get("previous_response_id"):
        raise BadRequest("the fake provider keeps no state: previous_response_id is unsupported")
    max_tokens = optional_int(body, "max_output_tokens", minimum=MIN_OUTPUT_TOKENS)
    tokenizer = tokenizer_for_model(model)
    input_tokens = responses_input_tokens(tokenizer, body)
    tools, choice = openai_tools(body, nested=False)
    call_tools = wants_tool_call(
        ex.config.tool_call_policy,
        has_tools=bool(tools),
        choice=choice,
        last_is_user=_last_is_user(items),
    )
    seed = request_seed(
        "responses", model, body.get("instructions"), items, body.get("tools"), ex.config.seed
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
    key = f"fake{ex.seq:08d}{seed & 0xFFFFFFFF:08x}"
    cut = completion.finish == "length"
    status = "incomplete" if cut else "completed"
    envelope: dict[str, Any] = {
        "id": f"resp_{key}",
        "object": "response",
        "created_at": int(time.time()),
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": max_tokens,
        "metadata": body.get("metadata") or {},
        "model": model,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "user": None,
    }
    output = _output(completion, key, status)
    final = {
        **envelope,
        "status": status,
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "output": output,
        "usage": None if ex.config.omit_usage else _usage(input_tokens, output_tokens),
    }
    if body.get("stream"):
        frames = _frames(envelope, completion, output, final)
        return ex.stream(frames, input_tokens=input_tokens)
    await ex.delay()
    return ex.json(final, input_tokens=input_tokens, output_tokens=output_tokens)


async def count_input_tokens(ex: Exchange) -> Response:
    """``POST /v1/responses/input_tokens``: what a responses call would bill as input."""
    model = require_str(ex.body, "model")
    tokens = responses_input_tokens(tokenizer_for_model(model), ex.body)
    return ex.json(
        {"object": "response.input_tokens", "input_tokens": tokens}, input_tokens=0, output_tokens=0
    )
