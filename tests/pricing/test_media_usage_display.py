"""Media bounds, provider usage conversion, and the ``execbudget prices`` output."""

from __future__ import annotations

import base64
import io
import json
import struct
from decimal import Decimal
from types import SimpleNamespace

import pytest
from rich.console import Console

from execbudget.errors import ConfigurationError
from execbudget.pricing import (
    PriceBook,
    TokenCounter,
    Usage,
    describe_price,
    media,
    parse_price_override,
    price_to_dict,
    prices_command,
    usage_from_anthropic,
    usage_from_openai,
)


def png(width: int, height: int) -> bytes:
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + b"IHDR"
        + struct.pack(">II", width, height)
        + b"\x08\x02\x00\x00\x00"
    )


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00" * 8


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00" + b"\x00" * 9
    sof = b"\xff\xc0" + struct.pack(">HBHH", 17, 8, height, width) + b"\x03" + b"\x00" * 9
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def webp(width: int, height: int) -> bytes:
    body = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4
    body += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body


def wav(seconds: float, byte_rate: int = 32_000) -> bytes:
    data = b"\x00" * int(seconds * byte_rate)
    fmt = struct.pack("<HHIIHH", 1, 1, byte_rate // 2, byte_rate, 2, 16)
    chunks = (
        b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    )
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def data_url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


@pytest.mark.parametrize("make", [png, gif, jpeg, webp])
def test_image_size(make: object) -> None:
    assert media.image_size(make(1234, 567)) == (1234, 567)  # type: ignore[operator]


def test_image_size_unknown() -> None:
    assert media.image_size(b"not an image") is None
    assert media.image_size(b"\xff\xd8\xff") is None
    assert media.decode_base64("data:image/png,rawtext") is None


@pytest.mark.parametrize(
    ("model", "size", "detail", "tokens"),
    [
        ("gpt-4o", (1024, 1024), "high", 765),  # OpenAI's worked example
        ("gpt-4o", (2048, 4096), "high", 1105),  # OpenAI's worked example
        ("gpt-4o", (4096, 8192), "auto", 1105),
        ("gpt-4o", (1024, 1024), "low", 85),
        ("gpt-4o", None, None, 85 + 8 * 170),
        ("gpt-4o-mini", (1024, 1024), "high", 2833 + 4 * 5667),
        ("gpt-4.1-mini", (1024, 1024), None, 1659),  # 1024 patches x 1.62
        ("gpt-4.1-nano", None, None, 3779),  # 1536 patches x 2.46
        ("o1", None, None, 75 + 8 * 150),
        ("gpt-5", (512, 512), "high", 70 + 140),
        ("some-new-model", (16, 16), None, media.UNKNOWN_IMAGE_TOKENS),
    ],
)
def test_openai_image_rules(
    model: str, size: tuple[int, int] | None, detail: str | None, tokens: int
) -> None:
    assert media.openai_image_tokens(model, size, detail) == tokens


def test_claude_image_rule() -> None:
    assert media.claude_image_tokens((1000, 1000), new_tokenizer=False) == 1467
    assert media.claude_image_tokens(None, new_tokenizer=False) == 1760
    assert media.claude_image_tokens((8000, 8000), new_tokenizer=True) == 5500


def test_audio_and_pdf_bounds() -> None:
    assert media.audio_tokens(wav(2.0), "wav") == 2 * media.AUDIO_TOKENS_PER_SECOND
    assert media.audio_tokens(b"\x00" * 32_000, "mp3") == 32 * media.AUDIO_TOKENS_PER_SECOND
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Pages >>\n2 0 obj << /Type /Page >>\n3 0 obj <</Type/Page>>"
    assert media.pdf_pages(pdf) == 2
    assert media.pdf_tokens(pdf) == 2 * media.PDF_PAGE_TOKENS
    assert media.pdf_pages(b"%PDF-1.7 compressed") == 1


def test_images_in_requests() -> None:
    counter = TokenCounter()
    text = [{"type": "text", "text": "What is this?"}]

    def with_image(part: dict[str, object], model: str = "gpt-4o") -> int:
        messages = [{"role": "user", "content": [*text, part]}]
        return counter.count_chat(messages, model) - counter.count_chat(
            [{"role": "user", "content": text}], model
        )

    url = data_url(png(1024, 1024))
    assert with_image({"type": "image_url", "image_url": {"url": url, "detail": "high"}}) == 765
    assert with_image({"type": "image_url", "image_url": {"url": url, "detail": "low"}}) == 85
    remote = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    assert with_image(remote) == 1445
    jpg = data_url(jpeg(2048, 4096), "image/jpeg")
    assert with_image({"type": "image_url", "image_url": {"url": jpg}}) == 1105
    audio = {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(wav(3)).decode(), "format": "wav"},
    }
    assert with_image(audio) == 3 * media.AUDIO_TOKENS_PER_SECOND
    by_id = {"type": "file", "file": {"file_id": "file-123"}}
    assert with_image(by_id) == counter.opaque_tokens
    pdf = {"type": "file", "file": {"file_data": data_url(b"<</Type /Page>>", "application/pdf")}}
    assert with_image(pdf) >= media.PDF_PAGE_TOKENS

    image_block = {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": "image/png",
            "data": base64.b64encode(png(1000, 1000)).decode(),
        },
    }
    base = counter.count_anthropic([{"role": "user", "content": text}], "claude-sonnet-4-5")
    with_block = counter.count_anthropic(
        [{"role": "user", "content": [*text, image_block]}], "claude-sonnet-4-5"
    )
    assert with_block - base == 1467


def test_usage_from_openai() -> None:
    chat = {
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "prompt_tokens_details": {"cached_tokens": 40},
        "completion_tokens_details": {"reasoning_tokens": 30},
    }
    assert usage_from_openai(chat) == Usage(
        input_tokens=100, output_tokens=50, cache_read_tokens=40, reasoning_tokens=30
    )
    responses = SimpleNamespace(
        input_tokens=10,
        output_tokens=5,
        input_tokens_details=SimpleNamespace(cached_tokens=2),
        output_tokens_details=SimpleNamespace(reasoning_tokens=1),
    )
    assert usage_from_openai(responses) == Usage(
        input_tokens=10, output_tokens=5, cache_read_tokens=2, reasoning_tokens=1
    )
    assert usage_from_openai({"prompt_tokens": 7, "total_tokens": 7}) == Usage(input_tokens=7)
    with pytest.raises(ConfigurationError, match="must be an int"):
        usage_from_openai({"prompt_tokens": "7"})


def test_usage_from_anthropic() -> None:
    usage = {
        "input_tokens": 10,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 50,
        "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 30},
        "output_tokens": 7,
    }
    assert usage_from_anthropic(usage) == Usage(
        input_tokens=160,
        output_tokens=7,
        cache_read_tokens=100,
        cache_write_tokens=50,
        cache_write_1h_tokens=30,
    )
    book = PriceBook()
    # 10 x 3 + 100 x 0.3 + 20 x 3.75 + 30 x 6 + 7 x 15, per Mtok
    assert book.cost("claude-sonnet-4-5", usage_from_anthropic(usage)) == Decimal("0.00042")


def test_prices_command_text() -> None:
    out = io.StringIO()
    assert prices_command("claude-sonnet-4-5", None, False, stdout=out) == 0
    text = out.getvalue()
    assert "anthropic/claude-sonnet-4-5" in text
    assert "genai-prices" in text
    assert "200,000" in text


def test_prices_command_json() -> None:
    out = io.StringIO()
    assert prices_command("gpt-4o-2024-08-06", "openai", True, stdout=out) == 0
    data = json.loads(out.getvalue())
    assert data["model"] == "gpt-4o"
    assert data["input_per_mtok"] == "2.5"
    assert data["tiers"] == []
    assert data["example_worst_case"]["cost"] == "0.0125"


def test_prices_command_unknown() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert prices_command("acme-llm", None, False, stdout=out, stderr=err) == 1
    assert "no known price" in err.getvalue()
    assert prices_command("acme-llm", None, True, stdout=out, stderr=err) == 1
    assert json.loads(out.getvalue())["error"]["requested"] == "acme-llm"
    assert prices_command(" ", None, False, stdout=out, stderr=err) == 2


def test_prices_command_with_policy_book() -> None:
    book = PriceBook({"acme-llm": parse_price_override("acme-llm", {"input": 1, "output": 2})})
    out = io.StringIO()
    assert prices_command("acme-llm", None, True, book=book, stdout=out) == 0
    assert json.loads(out.getvalue())["source"] == "policy override"


def test_describe_price_renders_tiers() -> None:
    price = PriceBook().price("gemini-2.5-pro")
    console = Console(record=True, width=120)
    console.print(describe_price(price))
    text = console.export_text()
    assert "> 200,000" in text and "≤ 200,000" in text
    assert price_to_dict(price)["tiers"][0]["above_input_tokens"] == 200_000


def test_usage_from_sdk_objects() -> None:
    """SDK models are read from their fields, extras included; other objects by getattr."""
    from anthropic.types import Usage as AnthropicUsage
    from openai.types import CompletionUsage
    from openai.types.responses import ResponseUsage

    chat = CompletionUsage(prompt_tokens=16, completion_tokens=8, total_tokens=24)
    assert usage_from_openai(chat) == Usage(input_tokens=16, output_tokens=8)
    # an extra field a newer server sends is seen, as getattr would see it
    extra = CompletionUsage.model_validate(
        {"prompt_tokens": 16, "completion_tokens": 8, "total_tokens": 24, "input_tokens": 5}
    )
    assert usage_from_openai(extra) == Usage(input_tokens=5)
    responses = ResponseUsage.model_construct(
        input_tokens=10,
        output_tokens=5,
        total_tokens=15,
        input_tokens_details=SimpleNamespace(cached_tokens=2),
        output_tokens_details=SimpleNamespace(reasoning_tokens=1),
    )
    assert usage_from_openai(responses) == Usage(
        input_tokens=10, output_tokens=5, cache_read_tokens=2, reasoning_tokens=1
    )
    claude = AnthropicUsage(input_tokens=10, output_tokens=5, cache_read_input_tokens=3)
    assert usage_from_anthropic(claude) == Usage(
        input_tokens=13, output_tokens=5, cache_read_tokens=3
    )

    class Computed:
        def __init__(self) -> None:
            self.prompt_tokens = 4

        @property
        def completion_tokens(self) -> int:
            return 9

    assert usage_from_openai(Computed()) == Usage(input_tokens=4, output_tokens=9)
