"""
Which tokenizer counts a model's input, and how far an estimate must be inflated.

OpenAI models are counted **exactly** with their public encoding (o200k_base or
cl100k_base). Every other family has no public tokenizer we can ship offline, so its count
is an **estimate meant as an upper bound**: the o200k_base count of each text, times a
per-family ratio (one for pure-ASCII text, a larger one for anything else), times a safety
margin, rounded up.

Claude ratios (Claude tokens ÷ o200k tokens), from ``costmodel.md`` §2.4, measured with
``ctok`` (an offline reconstruction of Claude's tokenizer; its author reports no
under-count against 2.3M ``count_tokens`` answers):

==================  ==================  ===================
text                Claude 3 … 4.6      Claude 4.7 and later
==================  ==================  ===================
English markdown    1.19                1.59
Python code         1.26                1.61
JSON                1.29                1.48
README prose        1.11                1.55
Chinese             1.45                1.54
==================  ==================  ===================

We take, per family, the largest ratio measured on ASCII text (Claude 3: 1.29, 4.7+: 1.61)
and the largest over all rows for non-ASCII text (1.45 and 1.61), then add a 10% margin
(``costmodel.md`` suggests 1.3 and 1.65 *without* a content split: 1.3 is below the 1.45
measured on Chinese, so it would under-hold CJK prompts on Claude 3 to 4.6). Two figures
of that document do not follow from its own table: the README row's 4.7/3 ratio is
1.55/1.11 = 1.40, outside the "1.0–1.35×" Anthropic states and the document says its
ratios match; and the Chinese 4.7/3 ratio is 1.54/1.45 = 1.06, not the 1.07 quoted
(rounding).

Gemini (ratio 1.15 ASCII / 1.4 other) and all other families (1.35 / 2.0) are **not
measured**: they are deliberately generous guesses; set your own with
``TokenCounter(profiles=...)``, or use ``strict=True`` for a guaranteed bound.

Strict mode: a byte-level BPE token always covers at least one byte, so the UTF-8 length
of a text (of its NFKC form, whichever is longer) bounds any such tokenizer's count. It is
3–4× the real count of English, but it is a proof, not a measurement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Final, Literal

Kind = Literal["openai", "claude", "gemini", "generic"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenizerProfile:
    """
    How to count (or bound) the input tokens of one model family.

    Attributes:
        family: a short id, e.g. ``openai-o200k`` or ``claude-4.7``.
        kind: which chat format and media rules apply.
        encoding: the tiktoken encoding that counts the text.
        exact: True if ``encoding`` *is* the provider's tokenizer.
        ratio_ascii / ratio_other: provider tokens per encoding token, for pure-ASCII text
            and for any other text (ignored when ``exact``).
        margin: multiplies the ratio-scaled count (ignored when ``exact``).
        per_message / per_name / reply_priming: chat framing tokens.
        tool_prompt: hidden system prompt added when tools are given.
        per_tool: framing per tool definition.
        new_claude_tokenizer: Claude 4.7+ (larger images too).
    """

    family: str
    kind: Kind
    encoding: str
    exact: bool
    ratio_ascii: Fraction = Fraction(1)
    ratio_other: Fraction = Fraction(1)
    margin: Fraction = Fraction(1)
    per_message: int = 3
    per_name: int = 1
    reply_priming: int = 3
    tool_prompt: int = 0
    per_tool: int = 8
    new_claude_tokenizer: bool = False
    notes: str = field(default="")


#: Anthropic's published tool-use system prompt sizes (Claude 3 Opus, the largest: 530).
CLAUDE_TOOL_PROMPT: Final = 530
#: Request frame and per-message frame allowances for Claude (role markers, turn tags).
CLAUDE_PER_MESSAGE: Final = 7
CLAUDE_PER_REQUEST: Final = 10
#: OpenAI tool block header (``# Tools`` / ``namespace functions {`` ... ``}``).
OPENAI_TOOLS_HEADER: Final = 16

_MARGIN: Final = Fraction(110, 100)

OPENAI_O200K: Final = TokenizerProfile(
    family="openai-o200k", kind="openai", encoding="o200k_base", exact=True
)
OPENAI_HARMONY: Final = TokenizerProfile(
    family="openai-harmony", kind="openai", encoding="o200k_harmony", exact=True
)
OPENAI_CL100K: Final = TokenizerProfile(
    family="openai-cl100k", kind="openai", encoding="cl100k_base", exact=True
)
OPENAI_CL100K_0301: Final = TokenizerProfile(
    family="openai-cl100k-0301",
    kind="openai",
    encoding="cl100k_base",
    exact=True,
    per_message=4,
    per_name=0,
)
CLAUDE_V3: Final = TokenizerProfile(
    family="claude-3",
    kind="claude",
    encoding="o200k_base",
    exact=False,
    ratio_ascii=Fraction(129, 100),
    ratio_other=Fraction(145, 100),
    margin=_MARGIN,
    per_message=CLAUDE_PER_MESSAGE,
    per_name=0,
    reply_priming=CLAUDE_PER_REQUEST,
    tool_prompt=CLAUDE_TOOL_PROMPT,
    notes="Claude 3 to 4.6 tokenizer; ratios measured with ctok (costmodel.md §2.4)",
)
CLAUDE_V47: Final = TokenizerProfile(
    family="claude-4.7",
    kind="claude",
    encoding="o200k_base",
    exact=False,
    ratio_ascii=Fraction(161, 100),
    ratio_other=Fraction(161, 100),
    margin=_MARGIN,
    per_message=CLAUDE_PER_MESSAGE,
    per_name=0,
    reply_priming=CLAUDE_PER_REQUEST,
    tool_prompt=CLAUDE_TOOL_PROMPT,
    new_claude_tokenizer=True,
    notes="Claude 4.7+ tokenizer; ratios measured with ctok (costmodel.md §2.4)",
)
GEMINI: Final = TokenizerProfile(
    family="gemini",
    kind="gemini",
    encoding="o200k_base",
    exact=False,
    ratio_ascii=Fraction(115, 100),
    ratio_other=Fraction(140, 100),
    margin=_MARGIN,
    per_message=CLAUDE_PER_MESSAGE,
    per_name=0,
    reply_priming=CLAUDE_PER_REQUEST,
    tool_prompt=CLAUDE_TOOL_PROMPT,
    notes="unmeasured guess (costmodel.md suggests 1.1)",
)
GENERIC: Final = TokenizerProfile(
    family="generic",
    kind="generic",
    encoding="o200k_base",
    exact=False,
    ratio_ascii=Fraction(135, 100),
    ratio_other=Fraction(2),
    margin=_MARGIN,
    per_message=CLAUDE_PER_MESSAGE,
    per_name=0,
    reply_priming=CLAUDE_PER_REQUEST,
    tool_prompt=CLAUDE_TOOL_PROMPT,
    notes="unknown tokenizer: generous unmeasured guess",
)

_O200K_RE: Final = re.compile(
    r"^(gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o\d(?:$|-)|gpt-realtime|gpt-audio|codex"
    r"|computer-use|omni-moderation|gpt-image|ft:gpt-4o|ft:gpt-4\.1|ft:o\d)"
)
_CL100K_RE: Final = re.compile(
    r"^(gpt-4|gpt-3\.5|gpt-35|text-embedding-3|text-embedding-ada-002|davinci-002|babbage-002"
    r"|ft:gpt-4|ft:gpt-3\.5|ft:davinci-002|ft:babbage-002)"
)
_CLAUDE_VERSION_RE: Final = (
    # claude-opus-4-7, claude-sonnet-4-5-20250929, claude-fable-5-2, claude-sonnet-4.5
    re.compile(r"claude-[a-z]+-(\d+)(?:[-.](\d{1,2})(?!\d))?"),
    # claude-3-5-sonnet-20241022, claude-3-opus, claude-2.1
    re.compile(r"claude-(\d+)(?:[-.](\d{1,2})(?!\d))?"),
)


def _bare(model: str) -> str:
    """Lower-case model id without ``provider/`` prefixes (``openrouter/openai/gpt-4o``)."""
    return model.strip().lower().rsplit("/", 1)[-1]


def claude_version(model: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a Claude model id, or ``None`` if it names no version."""
    name = _bare(model)
    for pattern in _CLAUDE_VERSION_RE:
        match = pattern.search(name)
        if match:
            return int(match.group(1)), int(match.group(2) or 0)
    return None


def profile_for(model: str) -> TokenizerProfile:
    """The tokenizer profile of ``model`` (unknown models get :data:`GENERIC`)."""
    name = _bare(model)
    if "claude" in name:
        version = claude_version(name)
        # Unknown Claude versions get the newer (larger) ratios: an over-hold, never an under-hold.
        if version is not None and version < (4, 7):
            return CLAUDE_V3
        return CLAUDE_V47
    if "gemini" in name or "gemma" in name:
        return GEMINI
    if name.startswith("gpt-oss"):
        return OPENAI_HARMONY
    if _O200K_RE.match(name):
        return OPENAI_O200K
    if name.startswith(("gpt-3.5-turbo-0301", "gpt-35-turbo-0301")):
        return OPENAI_CL100K_0301
    if _CL100K_RE.match(name):
        return OPENAI_CL100K
    return GENERIC
