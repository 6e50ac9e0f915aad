"""
Which tokenizer counts a model's input, and how a count is bounded when it cannot be exact.

OpenAI models are counted **exactly** with their public encoding (o200k_base or
cl100k_base). Every other family has no public tokenizer we can ship offline, so its count
is an **estimate built to stay above the real count**. Text is split into ASCII and
non-ASCII runs and each run is counted with o200k_base (``n`` tokens), then:

* ASCII run: ``(n × ratio_ascii + upper_weight × capital letters + run allowances) ×
  margin``, capped at the run's length (no byte-level BPE emits more tokens than bytes).
  The run allowances cover runs of 8+ identical characters, which o200k_base merges into
  very long tokens and Claude does not (20,000 × "x" is 2,500 o200k tokens and ~20,000
  Claude 4.7 tokens): ``run_weight`` per character of a non-digit run,
  ``space_run_weight`` per character of a whitespace run, and ``pattern_run_weight`` per
  character of a short pattern repeated 4+ times (``abab…``: o200k and Claude agree on it,
  but the fake provider's Claude stand-in counts it at 2× cl100k).
* non-ASCII run: ``n × ratio_other × margin``, capped at its UTF-8 byte length.

Where the Claude numbers come from. ``costmodel.md`` §2.4 publishes Claude/o200k ratios
measured with ``ctok`` (an offline reconstruction of Claude's tokenizer; its author reports
no under-count against 2.3M ``count_tokens`` answers) on five texts: English markdown
1.19 / 1.59 (Claude 3…4.6 / 4.7+), Python 1.26 / 1.61, JSON 1.29 / 1.48, README prose
1.11 / 1.55, Chinese 1.45 / 1.54. It suggests ``o200k × 1.3`` (≤4.6) and ``× 1.65`` (4.7+).
Those ratios are **not** upper bounds outside the five texts: re-measured with ctok 1.3.0
on our test corpus, Claude needs 2.2–2.3× o200k for Korean, Hindi and Thai, 2.6× for
camelCase identifiers on 4.7 (capitals become separate case-marker tokens), and up to 8×
for long runs of one letter. So we keep the largest published ASCII ratio (1.29 / 1.61),
add the capital-letter and run allowances fitted to ctok (0.3 / 1.0 per capital; 1/3 / 1
per run character; 1/8 per whitespace-run character), use 2.3 for non-ASCII text (the
largest ctok ratio seen, Hindi 2.27) and a 10% margin on top. Against ctok on the whole
test corpus (127 texts, ``tests/pricing/data/ctok_reference.json``) this never under-counts;
the median over-count is 1.42× (Claude 3) / 1.47× (4.7+), 1.19–1.41× on prose and code.

Two figures of ``costmodel.md`` do not follow from its own table: it says the 4.7/3 ratios
match Anthropic's "1.0–1.35×", but the README row gives 1.55/1.11 = 1.40; and the Chinese
4.7/3 ratio from the table is 1.54/1.45 = 1.06, not the 1.07 quoted (rounding).

Gemini and all other families are **not measured**: their ratios are deliberately generous
guesses; set your own with ``TokenCounter(profiles=...)``, or use ``strict=True``.

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
        ratio_ascii / ratio_other: provider tokens per encoding token, for ASCII runs and
            for non-ASCII runs of text (ignored when ``exact``).
        upper_weight: extra tokens per capital letter (case markers) in ASCII runs.
        run_weight / space_run_weight: extra tokens per character of a run of 8+ identical
            non-digit characters / whitespace characters.
        pattern_run_weight: extra tokens per character of a short pattern (2–4 characters)
            repeated 4+ times (``abababab``).
        margin: multiplies the estimate of each run (ignored when ``exact``).
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
    upper_weight: Fraction = Fraction(0)
    run_weight: Fraction = Fraction(0)
    space_run_weight: Fraction = Fraction(0)
    pattern_run_weight: Fraction = Fraction(0)
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
    ratio_other=Fraction(230, 100),
    margin=_MARGIN,
    upper_weight=Fraction(3, 10),
    run_weight=Fraction(1, 3),
    space_run_weight=Fraction(1, 8),
    pattern_run_weight=Fraction(1, 4),
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
    ratio_other=Fraction(230, 100),
    margin=_MARGIN,
    upper_weight=Fraction(1),
    run_weight=Fraction(1),
    space_run_weight=Fraction(1, 8),
    pattern_run_weight=Fraction(1, 4),
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
    upper_weight=Fraction(3, 10),
    run_weight=Fraction(1, 3),
    space_run_weight=Fraction(1, 8),
    pattern_run_weight=Fraction(1, 4),
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
    ratio_other=Fraction(230, 100),
    margin=_MARGIN,
    upper_weight=Fraction(1, 2),
    run_weight=Fraction(1),
    space_run_weight=Fraction(1, 8),
    pattern_run_weight=Fraction(1, 4),
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
