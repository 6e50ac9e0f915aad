"""
Input-token counts as each provider bills them: text tokens plus message framing.

The framing constants resemble what each provider documents or is known to add; they are
this fake provider's rules, written down so execbudget's counter can be measured against
them (and against nothing hidden):

OpenAI chat (the cookbook's "How to count tokens with tiktoken" rules):
    3 tokens per message, the tokens of every string field (role, content, name,
    tool_call_id), +1 for a ``name``, 3 for priming the reply. An assistant tool call adds
    3 + name + arguments. Tools use the cookbook's function-rendering rule: per function
    7 (o200k) or 10 (cl100k) + "name:description", per property 3 + "key:type:description",
    enums -3 + (3 + item) each, and 12 after the list. Images: 85 tokens at
    ``detail="low"``, else 765 (a 1024x1024 high-detail image).
OpenAI responses: the same rules; ``instructions`` is a developer message, a string
    ``input`` is one user message, a ``function_call`` item is 3 + name + arguments, a
    ``function_call_output`` item 3 + output.
Anthropic messages (counted with the Claude stand-in tokenizer):
    7 for the conversation frame, 3 + text for a system prompt, 4 per message, tool_use
    blocks 8 + name + compact JSON input, tool_result blocks 6 + content, images 1,600
    (Anthropic's ceiling for a resized image). Tools add Anthropic's hidden tool-use system
    prompt, 346 tokens (``tool_choice`` auto/none) or 313 (any/tool), and per tool 5 +
    name + description + compact JSON schema.
Embeddings: the tokens of each input, no framing; token-array inputs count their length.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from execbudget.testing._tokenizers import Tokenizer

__all__ = [
    "anthropic_input_tokens",
    "chat_input_tokens",
    "embedding_input_tokens",
    "responses_input_tokens",
]

OPENAI_PER_MESSAGE: Final = 3
OPENAI_PER_NAME: Final = 1
OPENAI_REPLY_PRIMING: Final = 3
OPENAI_IMAGE_LOW: Final = 85
OPENAI_IMAGE_HIGH: Final = 765
ANTHROPIC_FRAME: Final = 7
ANTHROPIC_PER_MESSAGE: Final = 4
ANTHROPIC_SYSTEM: Final = 3
ANTHROPIC_TOOL_USE: Final = 8
ANTHROPIC_TOOL_RESULT: Final = 6
ANTHROPIC_IMAGE: Final = 1600
ANTHROPIC_TOOL_PROMPT_AUTO: Final = 346
ANTHROPIC_TOOL_PROMPT_ANY: Final = 313
ANTHROPIC_PER_TOOL: Final = 5


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _count(tk: Tokenizer, value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return tk.count(value)
    return tk.count(_compact(value))


# -- OpenAI --------------------------------------------------------------------------


def _openai_part_tokens(tk: Tokenizer, part: Any) -> int:
    if isinstance(part, str):
        return tk.count(part)
    if not isinstance(part, Mapping):
        return _count(tk, part)
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text"):
        return _count(tk, part.get("text"))
    if kind == "refusal":
        return _count(tk, part.get("refusal"))
    if kind in ("image_url", "input_image"):
        image = part.get("image_url")
        detail = image.get("detail") if isinstance(image, Mapping) else part.get("detail")
        return OPENAI_IMAGE_LOW if detail == "low" else OPENAI_IMAGE_HIGH
    return _count(tk, part)


def _openai_content_tokens(tk: Tokenizer, content: Any) -> int:
    if isinstance(content, list):
        return sum(_openai_part_tokens(tk, p) for p in content)
    return _count(tk, content)


def _openai_call_tokens(tk: Tokenizer, function: Any) -> int:
    if not isinstance(function, Mapping):
        return OPENAI_PER_MESSAGE + _count(tk, function)
    return (
        OPENAI_PER_MESSAGE
        + _count(tk, function.get("name"))
        + _count(tk, function.get("arguments"))
    )


def _openai_message_tokens(tk: Tokenizer, message: Any) -> int:
    if not isinstance(message, Mapping):
        return OPENAI_PER_MESSAGE + _count(tk, message)
    n = OPENAI_PER_MESSAGE
    for key, value in message.items():
        if key == "content":
            n += _openai_content_tokens(tk, value)
        elif key == "tool_calls" and isinstance(value, list):
            n += sum(
                _openai_call_tokens(tk, c.get("function") if isinstance(c, Mapping) else c)
                for c in value
            )
        elif key == "function_call":
            n += _openai_call_tokens(tk, value)
        elif isinstance(value, str):
            n += tk.count(value)
            if key == "name":
                n += OPENAI_PER_NAME
    return n


def _strip_period(text: str) -> str:
    return text[:-1] if text.endswith(".") else text


def openai_tools_tokens(tk: Tokenizer, tools: Sequence[Any]) -> int:
    """The cookbook's rule for function definitions; other tools count as compact JSON."""
    func_init = 10 if tk.name == "cl100k_base" else 7
    prop_init, prop_key, enum_init, enum_item, func_end = 3, 3, -3, 3, 12
    n = 0
    for tool in tools:
        if not isinstance(tool, Mapping):
            n += _count(tk, tool)
            continue
        function = tool.get("function", tool)
        if tool.get("type", "function") != "function" or not isinstance(function, Mapping):
            n += _count(tk, tool)
            continue
        name = str(function.get("name", ""))
        description = _strip_period(str(function.get("description") or ""))
        n += func_init + tk.count(f"{name}:{description}")
        parameters = function.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
        if isinstance(properties, Mapping) and properties:
            n += prop_init
            for key, prop in properties.items():
                prop = prop if isinstance(prop, Mapping) else {}
                n += prop_key
                enum = prop.get("enum")
                if isinstance(enum, list) and enum:
                    n += enum_init + sum(enum_item + _count(tk, str(item)) for item in enum)
                kind = prop.get("type", "")
                desc = _strip_period(str(prop.get("description") or ""))
                n += tk.count(f"{key}:{kind}:{desc}")
    return n + func_end if tools else 0


def chat_input_tokens(tk: Tokenizer, body: Mapping[str, Any]) -> int:
    """Prompt tokens of a chat-completions request."""
    messages = body.get("messages") or []
    n = OPENAI_REPLY_PRIMING + sum(_openai_message_tokens(tk, m) for m in messages)
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        n += openai_tools_tokens(tk, tools)
    return n


def _responses_item_tokens(tk: Tokenizer, item: Any) -> int:
    if not isinstance(item, Mapping):
        return OPENAI_PER_MESSAGE + _count(tk, item)
    kind = item.get("type", "message")
    if kind == "message" or ("role" in item and "type" not in item):
        return (
            OPENAI_PER_MESSAGE
            + _count(tk, item.get("role"))
            + _openai_content_tokens(tk, item.get("content"))
        )
    if kind == "function_call":
        return _openai_call_tokens(tk, item)
    if kind == "function_call_output":
        output = item.get("output")
        return OPENAI_PER_MESSAGE + _openai_content_tokens(tk, output)
    return OPENAI_PER_MESSAGE + _count(tk, item)


def responses_input_tokens(tk: Tokenizer, body: Mapping[str, Any]) -> int:
    """Input tokens of a responses request."""
    n = OPENAI_REPLY_PRIMING
    instructions = body.get("instructions")
    if instructions:
        n += OPENAI_PER_MESSAGE + tk.count("developer") + _openai_content_tokens(tk, instructions)
    items = body.get("input")
    if isinstance(items, str):
        n += OPENAI_PER_MESSAGE + tk.count("user") + tk.count(items)
    elif isinstance(items, list):
        n += sum(_responses_item_tokens(tk, item) for item in items)
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        n += openai_tools_tokens(tk, tools)
    return n


def embedding_input_tokens(tk: Tokenizer, inputs: Sequence[Any]) -> list[int]:
    """Tokens of each embedding input (strings are counted, token arrays measured)."""
    return [len(x) if isinstance(x, list) else _count(tk, x) for x in inputs]


# -- Anthropic -----------------------------------------------------------------------


def _anthropic_block_tokens(tk: Tokenizer, block: Any) -> int:
    if isinstance(block, str):
        return tk.count(block)
    if not isinstance(block, Mapping):
        return _count(tk, block)
    kind = block.get("type")
    if kind == "text":
        return _count(tk, block.get("text"))
    if kind == "image":
        return ANTHROPIC_IMAGE
    if kind == "tool_use":
        return (
            ANTHROPIC_TOOL_USE
            + _count(tk, block.get("name"))
            + tk.count(_compact(block.get("input", {})))
        )
    if kind == "tool_result":
        return ANTHROPIC_TOOL_RESULT + _anthropic_content_tokens(tk, block.get("content"))
    if kind in ("thinking", "redacted_thinking"):
        return _count(tk, block.get("thinking") or block.get("data"))
    return _count(tk, block)


def _anthropic_content_tokens(tk: Tokenizer, content: Any) -> int:
    if isinstance(content, list):
        return sum(_anthropic_block_tokens(tk, b) for b in content)
    return _count(tk, content)


def anthropic_input_tokens(tk: Tokenizer, body: Mapping[str, Any]) -> int:
    """Input tokens of an Anthropic messages request."""
    n = ANTHROPIC_FRAME
    system = body.get("system")
    if system:
        n += ANTHROPIC_SYSTEM + _anthropic_content_tokens(tk, system)
    for message in body.get("messages") or []:
        n += ANTHROPIC_PER_MESSAGE
        if isinstance(message, Mapping):
            n += _anthropic_content_tokens(tk, message.get("content"))
        else:
            n += _count(tk, message)
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        choice = body.get("tool_choice")
        kind = choice.get("type") if isinstance(choice, Mapping) else "auto"
        n += ANTHROPIC_TOOL_PROMPT_ANY if kind in ("any", "tool") else ANTHROPIC_TOOL_PROMPT_AUTO
        for tool in tools:
            if not isinstance(tool, Mapping):
                n += _count(tk, tool)
                continue
            n += (
                ANTHROPIC_PER_TOOL
                + _count(tk, tool.get("name"))
                + _count(tk, tool.get("description"))
                + tk.count(_compact(tool.get("input_schema", {})))
            )
    return n
