"""The Anthropic-compatible route, through the real anthropic SDK (sync and async)."""

from __future__ import annotations

import anthropic
import pytest

from execbudget.testing import CLAUDE_STANDIN, FakeProvider, count_tokens, encoding_name_for_model

MODEL = "claude-sonnet-4-5"
USER = [{"role": "user", "content": "What is an execution budget?"}]
TOOL = {
    "name": "lookup",
    "description": "Look a term up.",
    "input_schema": {
        "type": "object",
        "properties": {"term": {"type": "string"}, "limit": {"type": "integer"}},
        "required": ["term"],
    },
}


def test_claude_uses_the_stand_in_tokenizer() -> None:
    assert encoding_name_for_model(MODEL) == CLAUDE_STANDIN
    text = "Tokenization of extraordinarily long identifiers"
    assert count_tokens(MODEL, text) > count_tokens("gpt-4", text)


def test_messages_non_stream(ant: anthropic.Anthropic) -> None:
    m = ant.messages.create(model=MODEL, max_tokens=10, system="Be brief.", messages=USER)
    assert m.stop_reason == "max_tokens"
    block = m.content[0]
    assert block.type == "text"
    assert m.usage.output_tokens == 10 == count_tokens(MODEL, block.text)
    c = lambda t: count_tokens(MODEL, t)  # noqa: E731
    # frame 7 + system 3 + text, 4 per message (documented in _prompts)
    assert m.usage.input_tokens == 7 + 3 + c("Be brief.") + 4 + c(USER[0]["content"])


@pytest.mark.parametrize("max_tokens", [1, 13, 100])
def test_max_tokens_exact(
    fake_provider: FakeProvider, ant: anthropic.Anthropic, max_tokens: int
) -> None:
    fake_provider.configure(output_tokens=1000)
    m = ant.messages.create(model=MODEL, max_tokens=max_tokens, messages=USER)
    assert m.usage.output_tokens == max_tokens
    assert m.content[0].type == "text" and count_tokens(MODEL, m.content[0].text) == max_tokens


def test_messages_stream_helper(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(model=MODEL, max_tokens=200, messages=USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 32 == count_tokens(MODEL, text)
    plain = ant.messages.create(model=MODEL, max_tokens=200, messages=USER)
    assert plain.content[0].type == "text" and plain.content[0].text == text


def test_raw_stream_event_sequence(ant: anthropic.Anthropic) -> None:
    events = list(ant.messages.create(model=MODEL, max_tokens=5, messages=USER, stream=True))
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[1] == "content_block_start"
    assert set(types[2:-3]) == {"content_block_delta"}
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start, delta = events[0], events[-2]
    assert start.type == "message_start" and start.message.usage.input_tokens > 0
    assert delta.type == "message_delta"
    assert delta.delta.stop_reason == "max_tokens" and delta.usage.output_tokens == 5


def test_max_tokens_is_required(ant: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        # The SDK refuses to send it, so post the raw body through the client.
        ant.post("/v1/messages", cast_to=object, body={"model": MODEL, "messages": USER})


def test_tool_use_first_turn_then_text(ant: anthropic.Anthropic) -> None:
    m = ant.messages.create(model=MODEL, max_tokens=200, messages=USER, tools=[TOOL])
    assert m.stop_reason == "tool_use"
    use = m.content[0]
    assert use.type == "tool_use" and use.name == "lookup" and set(use.input) == {"term", "limit"}
    follow = [
        *USER,
        {"role": "assistant", "content": [use.model_dump()]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "42"}],
        },
    ]
    m2 = ant.messages.create(model=MODEL, max_tokens=200, messages=follow, tools=[TOOL])
    assert m2.stop_reason == "end_turn" and m2.content[0].type == "text"


def test_tool_use_streams_and_policy_header(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(model=MODEL, max_tokens=200, messages=USER, tools=[TOOL]) as stream:
        final = stream.get_final_message()
    block = final.content[0]
    assert block.type == "tool_use" and isinstance(block.input, dict) and "term" in block.input
    m = ant.messages.create(
        model=MODEL,
        max_tokens=200,
        messages=USER,
        tools=[TOOL],
        extra_headers={"x-fake-tool-call-policy": "never"},
    )
    assert m.stop_reason == "end_turn"


def test_tools_add_the_hidden_tool_prompt(ant: anthropic.Anthropic) -> None:
    bare = ant.messages.create(model=MODEL, max_tokens=1, messages=USER)
    auto = ant.messages.create(
        model=MODEL,
        max_tokens=1,
        messages=USER,
        tools=[TOOL],
        tool_choice={"type": "none"},
    )
    assert auto.usage.input_tokens - bare.usage.input_tokens > 346


def test_models_list_in_anthropic_shape(ant: anthropic.Anthropic) -> None:
    ids = [m.id for m in ant.models.list()]
    assert ids and all(i.startswith("claude") for i in ids)


async def test_async_stream(aant: anthropic.AsyncAnthropic) -> None:
    async with aant.messages.stream(model=MODEL, max_tokens=7, messages=USER) as stream:
        final = await stream.get_final_message()
    assert final.usage.output_tokens == 7 and final.stop_reason == "max_tokens"
    raw = await aant.messages.create(model=MODEL, max_tokens=3, messages=USER, stream=True)
    kinds = [e.type async for e in raw]
    assert kinds[-1] == "message_stop"
