"""
What the fake model answers, independent of any wire format: text or tool calls, its
length, and why it stopped. Each dialect module only renders a ``Completion``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from execbudget.testing._config import FakeConfig, ToolCallPolicy
from execbudget.testing._generator import GeneratedText, generate_text, synthesize_arguments
from execbudget.testing._tokenizers import Tokenizer

__all__ = [
    "Completion",
    "FinishReason",
    "ToolCall",
    "ToolChoice",
    "ToolSpec",
    "plan_completion",
    "wants_tool_call",
]

FinishReason = Literal["stop", "length", "tool_calls"]
ToolChoice = Literal["auto", "none", "required"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the request offers, whatever the dialect called its schema."""

    name: str
    parameters: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call the fake model makes; ``key`` is a hex id each dialect prefixes."""

    key: str
    name: str
    arguments: str
    tokens: int

    @property
    def input(self) -> Any:
        return json.loads(self.arguments)


@dataclass(frozen=True, slots=True)
class Completion:
    """A planned answer. ``output_tokens`` is what the provider bills for it."""

    text: GeneratedText
    tool_calls: tuple[ToolCall, ...]
    finish: FinishReason

    @property
    def output_tokens(self) -> int:
        return self.text.tokens + sum(c.tokens for c in self.tool_calls)


def wants_tool_call(
    policy: ToolCallPolicy, *, has_tools: bool, choice: ToolChoice, last_is_user: bool
) -> bool:
    """
    Whether the fake model calls a tool this turn.

    ``last_is_user`` is true when the conversation ends with a user turn that is not a tool
    result. ``tool_choice="none"`` and ``policy="never"`` always win; ``"required"`` forces
    a call otherwise.
    """
    if not has_tools or choice == "none" or policy == "never":
        return False
    if choice == "required" or policy == "always":
        return True
    return last_is_user


def _tool_calls(
    tk: Tokenizer, seed: int, tools: Sequence[ToolSpec], count: int
) -> tuple[ToolCall, ...]:
    calls = []
    for i in range(count):
        tool = tools[i % len(tools)]
        rng = random.Random(seed + i)
        arguments = json.dumps(
            synthesize_arguments(tool.parameters, rng), separators=(",", ":"), ensure_ascii=False
        )
        key = f"{(seed + i) & 0xFFFFFFFFFFFFFFFF:016x}{i:02d}"
        calls.append(ToolCall(key, tool.name, arguments, tk.count(tool.name) + tk.count(arguments)))
    return tuple(calls)


def plan_completion(
    *,
    tokenizer: Tokenizer,
    seed: int,
    max_tokens: int | None,
    config: FakeConfig,
    tools: Sequence[ToolSpec] = (),
    call_tools: bool = False,
) -> Completion:
    """
    Plan the answer: tool calls if asked and they fit in ``max_tokens``, else text.

    Text is ``config.output_tokens`` long, cut to ``max_tokens`` (finish ``"length"``);
    with ``config.ignore_max_tokens`` it is exactly that many tokens whatever the cap.
    """
    empty = GeneratedText((), ())
    if config.ignore_max_tokens is not None:
        return Completion(generate_text(tokenizer, seed, config.ignore_max_tokens), (), "stop")
    if call_tools and tools:
        calls = _tool_calls(tokenizer, seed, tools, config.tool_calls_per_turn)
        if max_tokens is None or sum(c.tokens for c in calls) <= max_tokens:
            return Completion(empty, calls, "tool_calls")
    wanted = config.output_tokens
    if max_tokens is not None and wanted > max_tokens:
        return Completion(generate_text(tokenizer, seed, max_tokens), (), "length")
    return Completion(generate_text(tokenizer, seed, wanted), (), "stop")
