"""
Upper bounds for the input tokens of images, audio and PDF files, computed offline.

Providers bill media by rules published in their docs, not by a tokenizer. When the bytes
are in the request (base64 data URLs) we read the image size or audio length from the file
header and apply the rule; when they are not (an ``https://`` URL, a file id) we hold the
most the rule can produce. Every constant below says where it comes from.

OpenAI images (platform docs, "Images and vision → Calculating costs"):

* tile models: scale to fit 2048×2048, then the short side to 768 px; cost is
  ``base + tile × ⌈w/512⌉·⌈h/512⌉``, at most 8 tiles; ``detail: low`` costs ``base``.
  gpt-4o / 4.1 / 4.5: 85 + 170; gpt-4o-mini: 2833 + 5667; o1 / o3: 75 + 150;
  gpt-5: 70 + 140.
* patch models: ``⌈w/32⌉·⌈h/32⌉`` patches, capped at 1536, times a multiplier:
  gpt-4.1-mini and gpt-5-mini 1.62, gpt-4.1-nano and gpt-5-nano 2.46, o4-mini 1.72.
* any other model: :data:`UNKNOWN_IMAGE_TOKENS`, above every rule listed.

Anthropic images (docs, "Vision"): about ``w·h/750`` tokens; images are downscaled to at
most ~1.15 megapixels (about 1,600 tokens) up to Claude Opus 4.6. Newer models accept larger
images; we assume at most ~3.75 megapixels (2576 px long edge), about 5,000 tokens. Both
caps get a 10% margin.

Audio: OpenAI counts user audio at 1 token per 100 ms (Realtime docs); chat-completions
audio models do not publish a rate, so we hold **20 tokens per second**. WAV length is read
from the header; for compressed formats the length is bounded by the lowest MPEG bit rate
(8 kbit/s), a loose but true bound.

PDF: both providers bill each page as its extracted text plus an image of the page
(OpenAI "File inputs"; Anthropic "PDF support": 1,500–3,000 text tokens per page plus
the image). We count pages from the file (``/Type /Page`` objects) and hold
:data:`PDF_PAGE_TOKENS` per page. This one is a documented estimate, not a guarantee: a
page of tiny dense text can exceed it.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from dataclasses import dataclass
from typing import Final

#: Held for an image whose model has no published rule.
UNKNOWN_IMAGE_TOKENS: Final = 6_000
#: Held per PDF page (text + page image), see the module docstring.
PDF_PAGE_TOKENS: Final = 5_000
#: Audio tokens held per second of input audio.
AUDIO_TOKENS_PER_SECOND: Final = 20
#: Lowest MPEG audio bit rate, in bytes per second (8 kbit/s): bounds the length of any
#: compressed clip from its size.
MIN_AUDIO_BYTES_PER_SECOND: Final = 1_000

_CLAUDE_IMAGE_CAP_V3: Final = 1_760  # ~1,600 tokens (1.15 MP / 750) + 10%
_CLAUDE_IMAGE_CAP_V47: Final = 5_500  # ~5,000 tokens (3.75 MP / 750) + 10%


@dataclass(frozen=True, slots=True)
class _TileRule:
    base: int
    tile: int

    def tokens(self, size: tuple[int, int] | None, detail: str | None) -> int:
        if detail == "low":
            return self.base
        if size is None:
            return self.base + 8 * self.tile
        w, h = float(size[0]), float(size[1])
        if max(w, h) > 2048:
            scale = 2048 / max(w, h)
            w, h = w * scale, h * scale
        if min(w, h) > 768:
            scale = 768 / min(w, h)
            w, h = w * scale, h * scale
        tiles = math.ceil(w / 512 - 1e-9) * math.ceil(h / 512 - 1e-9)
        return self.base + min(tiles, 8) * self.tile


@dataclass(frozen=True, slots=True)
class _PatchRule:
    multiplier_percent: int

    def tokens(self, size: tuple[int, int] | None, detail: str | None) -> int:
        del detail  # patch models bill by patches whatever the detail
        patches = 1536
        if size is not None:
            patches = min(1536, math.ceil(size[0] / 32) * math.ceil(size[1] / 32))
        return -(-patches * self.multiplier_percent // 100)


# First match wins: more specific names first.
_OPENAI_IMAGE_RULES: Final[tuple[tuple[re.Pattern[str], _TileRule | _PatchRule], ...]] = (
    (re.compile(r"^gpt-4o-mini"), _TileRule(2833, 5667)),
    (re.compile(r"^(gpt-4\.1-mini|gpt-5(\.\d+)?-mini)"), _PatchRule(162)),
    (re.compile(r"^(gpt-4\.1-nano|gpt-5(\.\d+)?-nano)"), _PatchRule(246)),
    (re.compile(r"^o4-mini"), _PatchRule(172)),
    (
        re.compile(r"^(gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-4-turbo|gpt-4-vision)"),
        _TileRule(85, 170),
    ),
    (re.compile(r"^(o1|o3)(?!-mini)"), _TileRule(75, 150)),
    (re.compile(r"^gpt-5"), _TileRule(70, 140)),
)


def openai_image_tokens(model: str, size: tuple[int, int] | None, detail: str | None) -> int:
    """Tokens OpenAI bills for one image (``size`` ``None`` when unknown: the maximum)."""
    for pattern, rule in _OPENAI_IMAGE_RULES:
        if pattern.search(model):
            return rule.tokens(size, detail)
    return UNKNOWN_IMAGE_TOKENS


def claude_image_tokens(size: tuple[int, int] | None, *, new_tokenizer: bool) -> int:
    """Tokens Anthropic bills for one image, capped by the model's resize limit."""
    cap = _CLAUDE_IMAGE_CAP_V47 if new_tokenizer else _CLAUDE_IMAGE_CAP_V3
    if size is None:
        return cap
    return min(cap, math.ceil(size[0] * size[1] * 11 / 7500))  # w·h/750 + 10%


def generic_image_tokens(size: tuple[int, int] | None) -> int:
    """Models without a published rule: the largest rule we know (unknown size or not)."""
    del size
    return UNKNOWN_IMAGE_TOKENS


# -- reading the media ------------------------------------------------------------------

_DATA_URL: Final = re.compile(r"^data:([^;,]*)(;[^,]*)?,", re.IGNORECASE)


def decode_base64(data: str) -> bytes | None:
    """Decode base64 (or a ``data:...;base64,`` URL); ``None`` if it is not base64."""
    match = _DATA_URL.match(data)
    if match is not None:
        if not (match.group(2) or "").lower().endswith("base64"):
            return None
        data = data[match.end() :]
    try:
        return base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG, GIF, JPEG or WebP header; ``None`` if not recognised."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return int(w), int(h)
        if data[:6] in (b"GIF87a", b"GIF89a"):
            w, h = struct.unpack("<HH", data[6:10])
            return int(w), int(h)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
    except struct.error:
        return None
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return int(w & 0x3FFF), int(h & 0x3FFF)
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    return None


_JPEG_SOF: Final = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    n = len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _JPEG_SOF:
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + length
    return None


def audio_seconds_bound(data: bytes, fmt: str | None) -> float:
    """An upper bound of the length of an audio clip, in seconds."""
    if (fmt or "").lower() in ("wav", "wave", "") and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        seconds = _wav_seconds(data)
        if seconds is not None:
            return seconds
    return len(data) / MIN_AUDIO_BYTES_PER_SECOND


def _wav_seconds(data: bytes) -> float | None:
    i = 12
    byte_rate = 0
    while i + 8 <= len(data):
        chunk, size = data[i : i + 4], int.from_bytes(data[i + 4 : i + 8], "little")
        if chunk == b"fmt " and i + 20 <= len(data):
            byte_rate = int.from_bytes(data[i + 16 : i + 20], "little")
        elif chunk == b"data":
            if byte_rate <= 0:
                return None
            # A streamed WAV may declare a bogus size: never trust more than the bytes present.
            return max(min(size, len(data) - i - 8), 0) / byte_rate
        i += 8 + size + (size & 1)
    return None


def audio_tokens(data: bytes, fmt: str | None) -> int:
    """Input tokens held for one audio clip."""
    return max(1, math.ceil(audio_seconds_bound(data, fmt) * AUDIO_TOKENS_PER_SECOND))


_PDF_PAGE: Final = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


def pdf_pages(data: bytes) -> int:
    """Pages of a PDF (page objects), or a bound from its size when they are compressed."""
    pages = len(_PDF_PAGE.findall(data))
    if pages:
        return pages
    return max(1, len(data) // 2_000)  # object streams hide the page objects


def pdf_tokens(data: bytes) -> int:
    """Input tokens held for one PDF file."""
    return pdf_pages(data) * PDF_PAGE_TOKENS
