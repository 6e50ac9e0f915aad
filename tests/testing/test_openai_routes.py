"""The OpenAI-compatible routes, through the real openai SDK (sync and async)."""

from __future__ import annotations

import json

import openai
import pytest

from execbudget.testing import FakeProvider, count_tokens

USER = [{"role": "user", "content": "What is an execution budget?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name."},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["city"],
        },
    },
}


def test_chat_non_stream_reports_honest_usage(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=12)
    text = r.choices[0].message.content
    assert text
    assert r.usage is not None
    assert r.usage.completion_tokens == count_tokens("gpt-4o", text) == 12
    # 3 reply priming + 3 per message + role + content (documented in _prompts)
    expected_input = (
        3 + 3 + count_tokens("gpt-4o", "user") + count_tokens("gpt-4o", USER[0]["content"])
    )
    assert r.usage.prompt_tokens == expected_input
    assert r.usage.total_tokens == expected_input + 12
    assert r.choices[0].finish_reason == "length"


def test_chat_counts_names_and_uses_cl100k_for_gpt4(oai: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there", "name": "ana"},
    ]
    r = oai.chat.completions.create(model="gpt-4", messages=messages, max_tokens=5)
    c = lambda t: count_tokens("gpt-4", t)  # noqa: E731
    expected = (
        3 + (3 + c("system") + c("Be brief.")) + (3 + c("user") + c("hello there") + c("ana") + 1)
    )
    assert r.usage is not None and r.usage.prompt_tokens == expected


def test_chat_stream_with_include_usage(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.choices:
            pieces.extend([chunk.choices[0].delta.content or ""])
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    text = "".join(pieces)
    assert finish == "length"
    assert usage is not None and usage.completion_tokens == 20 == count_tokens("gpt-4o", text)
    plain = oai.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=20)
    assert plain.choices[0].message.content == text  # streamed text = non-streamed text


def test_chat_stream_without_include_usage_has_no_usage(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model="gpt-4o", messages=USER, stream=True))
    assert chunks and all(c.usage is None for c in chunks)


def test_chat_stream_helper_accumulates(oai: openai.OpenAI) -> None:
    with oai.chat.completions.stream(
        model="gpt-4o",
        messages=USER,
        max_completion_tokens=90,
        stream_options={"include_usage": True},
    ) as stream:
        final = stream.get_final_completion()
    assert final.usage is not None and final.usage.completion_tokens == 32  # the default length


@pytest.mark.parametrize("max_tokens", [1, 7, 64])
def test_max_tokens_is_honoured_exactly(
    fake_provider: FakeProvider, oai: openai.OpenAI, max_tokens: int
) -> None:
    fake_provider.configure(output_tokens=500)
    r = oai.chat.completions.create(
        model="gpt-4o-mini", messages=USER, max_completion_tokens=max_tokens
    )
    assert r.usage is not None and r.usage.completion_tokens == max_tokens
    assert count_tokens("gpt-4o-mini", r.choices[0].message.content or "") == max_tokens
    assert fake_provider.requests[-1].body["max_completion_tokens"] == max_tokens


def test_short_answer_stops_before_the_cap(fake_provider: FakeProvider, oai: openai.OpenAI) -> None:
    fake_provider.configure(output_tokens=15)
    r = oai.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=100)
    assert r.usage is not None and r.usage.completion_tokens == 15
    assert r.choices[0].finish_reason == "stop"


def test_output_tokens_header_overrides_config(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(
        model="gpt-4o", messages=USER, extra_headers={"x-fake-output-tokens": "3"}
    )
    assert r.usage is not None and r.usage.completion_tokens == 3


def test_same_request_same_text_other_prompt_other_text(oai: openai.OpenAI) -> None:
    a = oai.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=30)
    b = oai.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=30)
    c = oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Something else"}], max_tokens=30
    )
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.choices[0].message.content != c.choices[0].message.content
    short = oai.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=10)
    assert (a.choices[0].message.content or "").startswith(short.choices[0].message.content or "")


def test_tool_call_on_first_turn_then_text(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="gpt-4o", messages=USER, tools=[WEATHER_TOOL])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert set(args) == {"city", "unit", "days"} and args["unit"] == "celsius"
    assert r.usage is not None
    assert r.usage.completion_tokens == count_tokens("gpt-4o", "get_weather") + count_tokens(
        "gpt-4o", call.function.arguments
    )
    follow_up = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    r2 = oai.chat.completions.create(model="gpt-4o", messages=follow_up, tools=[WEATHER_TOOL])
    assert r2.choices[0].finish_reason == "stop" and r2.choices[0].message.content


def test_tool_call_policy_always_and_never(fake_provider: FakeProvider, oai: openai.OpenAI) -> None:
    after_tool = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    fake_provider.configure(tool_call_policy="always", tool_calls_per_turn=2)
    r = oai.chat.completions.create(model="gpt-4o", messages=after_tool, tools=[WEATHER_TOOL])
    assert r.choices[0].message.tool_calls is not None and len(r.choices[0].message.tool_calls) == 2
    r = oai.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        tools=[WEATHER_TOOL],
        extra_headers={"x-fake-tool-call-policy": "never"},
    )
    assert r.choices[0].message.tool_calls is None
    r = oai.chat.completions.create(
        model="gpt-4o", messages=USER, tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert r.choices[0].message.tool_calls is None


def test_tool_call_streams(oai: openai.OpenAI) -> None:
    with oai.chat.completions.stream(model="gpt-4o", messages=USER, tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments)["unit"] == "celsius"


def test_tools_add_input_tokens(oai: openai.OpenAI) -> None:
    bare = oai.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=1)
    tooled = oai.chat.completions.create(
        model="gpt-4o", messages=USER, tools=[WEATHER_TOOL], max_tokens=1, tool_choice="none"
    )
    assert bare.usage is not None and tooled.usage is not None
    assert tooled.usage.prompt_tokens > bare.usage.prompt_tokens + 20


def test_responses_non_stream(fake_provider: FakeProvider, oai: openai.OpenAI) -> None:
    fake_provider.configure(output_tokens=40)
    r = oai.responses.create(
        model="gpt-4.1", input="Explain budgets.", instructions="Be terse.", max_output_tokens=16
    )
    assert r.status == "incomplete"
    assert r.incomplete_details is not None and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage is not None and r.usage.output_tokens == 16 == count_tokens(
        "gpt-4.1", r.output_text
    )
    c = lambda t: count_tokens("gpt-4.1", t)  # noqa: E731
    assert r.usage.input_tokens == 3 + (3 + c("developer") + c("Be terse.")) + (
        3 + c("user") + c("Explain budgets.")
    )
    full = oai.responses.create(model="gpt-4.1", input="Explain budgets.", instructions="Be terse.")
    assert full.status == "completed" and full.usage is not None and full.usage.output_tokens == 40


def test_responses_stream_helper(oai: openai.OpenAI) -> None:
    with oai.responses.stream(model="gpt-5", input=[{"role": "user", "content": "hi"}]) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.usage is not None and final.usage.output_tokens == 32
    assert "".join(deltas) == final.output_text


def test_responses_raw_stream_ends_incomplete_when_cut(oai: openai.OpenAI) -> None:
    events = list(
        oai.responses.create(model="gpt-4o", input="hi", max_output_tokens=16, stream=True)
    )
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.incomplete"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.usage is not None and last.response.usage.output_tokens == 16


def test_responses_reject_max_output_tokens_below_16(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="max_output_tokens"):
        oai.responses.create(model="gpt-4o", input="hi", max_output_tokens=15)


def test_input_token_count_endpoints_match_billing(
    fake_provider: FakeProvider, oai: openai.OpenAI
) -> None:
    counted = oai.responses.input_tokens.count(
        model="gpt-4o", input="Explain budgets.", instructions="Be terse."
    )
    billed = oai.responses.create(
        model="gpt-4o", input="Explain budgets.", instructions="Be terse."
    )
    assert billed.usage is not None and counted.input_tokens == billed.usage.input_tokens
    with fake_provider.anthropic() as ant:
        n = ant.messages.count_tokens(model="claude-haiku-4-5", messages=USER, system="Be terse.")
        m = ant.messages.create(
            model="claude-haiku-4-5", max_tokens=1, messages=USER, system="Be terse."
        )
    assert n.input_tokens == m.usage.input_tokens
    assert (
        fake_provider.stats.input_tokens == billed.usage.input_tokens + m.usage.input_tokens
    )  # counting is free


def test_responses_function_call(oai: openai.OpenAI) -> None:
    tool = {"type": "function", **WEATHER_TOOL["function"]}
    r = oai.responses.create(model="gpt-4o", input="weather?", tools=[tool])
    item = r.output[0]
    assert item.type == "function_call" and item.name == "get_weather"
    with oai.responses.stream(model="gpt-4o", input="weather?", tools=[tool]) as stream:
        final = stream.get_final_response()
    assert final.output[0].type == "function_call"
    after = [
        {"role": "user", "content": "weather?"},
        {
            "type": "function_call",
            "call_id": item.call_id,
            "name": item.name,
            "arguments": item.arguments,
        },
        {"type": "function_call_output", "call_id": item.call_id, "output": "sunny"},
    ]
    r2 = oai.responses.create(model="gpt-4o", input=after, tools=[tool])
    assert r2.output[0].type == "message" and r2.output_text


def test_embeddings_base64_and_float(oai: openai.OpenAI) -> None:
    r = oai.embeddings.create(model="text-embedding-3-small", input=["budget", "hold before spend"])
    assert [len(d.embedding) for d in r.data] == [1536, 1536]
    assert r.usage.prompt_tokens == count_tokens("text-embedding-3-small", "budget") + count_tokens(
        "text-embedding-3-small", "hold before spend"
    )
    f = oai.embeddings.create(
        model="text-embedding-3-small", input="budget", encoding_format="float", dimensions=8
    )
    again = oai.embeddings.create(
        model="text-embedding-3-small", input="budget", encoding_format="float", dimensions=8
    )
    assert len(f.data[0].embedding) == 8 and f.data[0].embedding == again.data[0].embedding
    assert abs(sum(v * v for v in f.data[0].embedding) - 1.0) < 1e-6
    tokens = oai.embeddings.create(
        model="text-embedding-3-large", input=[[1, 2, 3]], encoding_format="float"
    )
    assert tokens.usage.prompt_tokens == 3 and len(tokens.data[0].embedding) == 3072


def test_models(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list()]
    assert "gpt-4o" in ids and "claude-sonnet-4-5" in ids
    assert oai.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("no-such-model")


def test_invalid_requests_get_openai_errors(
    fake_provider: FakeProvider, oai: openai.OpenAI
) -> None:
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="gpt-4o", messages=[])
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="gpt-4o", messages=USER, n=2)
    with pytest.raises(openai.BadRequestError, match="x-fake"):
        oai.chat.completions.create(
            model="gpt-4o", messages=USER, extra_headers={"x-fake-bogus": "1"}
        )
    assert fake_provider.stats.invalid == 3


async def test_async_chat_stream_and_concurrency(
    fake_provider: FakeProvider, aoai: openai.AsyncOpenAI
) -> None:
    import asyncio

    stream = await aoai.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [c.usage async for c in stream if c.usage is not None]
    assert usage and usage[0].completion_tokens == 8

    async def one(i: int) -> int:
        r = await aoai.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": f"q{i}"}], max_tokens=5
        )
        assert r.usage is not None
        return r.usage.completion_tokens

    assert await asyncio.gather(*(one(i) for i in range(32))) == [5] * 32
    assert fake_provider.stats.by_path["/v1/chat/completions"] == 33


async def test_async_responses_and_embeddings(aoai: openai.AsyncOpenAI) -> None:
    r = await aoai.responses.create(model="o4-mini", input="hi", max_output_tokens=16)
    assert r.usage is not None and r.usage.output_tokens == 16 and r.status == "incomplete"
    e = await aoai.embeddings.create(model="text-embedding-3-small", input="x")
    assert len(e.data[0].embedding) == 1536
