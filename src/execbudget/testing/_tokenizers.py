"""
The fake provider's own tokenizers: what it "bills", independent of execbudget's counter.

execbudget's pre-call counter (``execbudget.pricing``) must bound what the provider bills.
To measure that honestly the fake provider never imports it: it counts with its own
tokenizers, chosen per model name the way the real providers do.

* OpenAI models: the real BPE encodings, ``o200k_base`` for the gpt-4o / gpt-4.1 / gpt-4.5 /
  gpt-5 / o1 / o3 / o4 / gpt-oss / chatgpt families and ``cl100k_base`` for gpt-4, gpt-3.5 and
  the ``text-embedding-*`` models. Unknown names get ``o200k_base``.
* Claude models: Claude's tokenizer is private, so we use a documented **stand-in**,
  ``claude-standin-v1``: the cl100k_base tokens of the text, plus one extra token for every
  cl100k token longer than 5 bytes (a smaller vocabulary splits long pieces in two). On
  sample texts this gives 1.19-1.24x the o200k count for English prose, 1.31x for Python,
  1.14x for JSON and 1.69x for Chinese, close to the ratios measured with a reconstruction
  of Claude's tokenizer (1.11-1.19, 1.26, 1.29, 1.45). It is a stand-in, not Claude's
  tokenizer: it only has to be different from any encoding execbudget counts with, and
  plausible.

Every count is additive over the encodings' pre-tokenizer pieces, which is what lets the
text generator hit an exact token count word by word.
"""

from __future__ import annotations

import threading
from typing import Final, Protocol

import tiktoken

from execbudget.testing._encodings import get_encoding

__all__ = [
    "CLAUDE_STANDIN",
    "ClaudeStandIn",
    "TiktokenCounter",
    "Tokenizer",
    "count_tokens",
    "encoding_name_for_model",
    "tokenizer_for_model",
    "warm_tokenizers",
]

CLAUDE_STANDIN: Final = "claude-standin-v1"
_LONG_TOKEN_BYTES: Final = 5

_O200K_PREFIXES: Final = (
    "gpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "o1",
    "o3",
    "o4",
    "gpt-oss",
    "chatgpt",
    "omni-moderation",
    "codex",
    "computer-use",
)
_CL100K_PREFIXES: Final = (
    "gpt-4",
    "gpt-3.5",
    "gpt-35",
    "text-embedding-",
    "davinci-002",
    "babbage-002",
)


class Tokenizer(Protocol):
    """Counts the tokens of a text the way one provider would bill them."""

    @property
    def name(self) -> str: ...

    def count(self, text: str) -> int: ...


class TiktokenCounter:
    """An exact OpenAI encoding; special-token text is counted as ordinary text."""

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self._encoding = encoding

    @property
    def name(self) -> str:
        return self._encoding.name

    def count(self, text: str) -> int:
        return len(self._encoding.encode_ordinary(text))


class ClaudeStandIn:
    """``claude-standin-v1``: cl100k_base tokens, and long tokens (> 5 bytes) count twice."""

    def __init__(self, base: tiktoken.Encoding) -> None:
        self._base = base
        long_ids: set[int] = set()
        for token in range(base.n_vocab):
            try:
                piece = base.decode_single_token_bytes(token)
            except KeyError:  # gaps between the ordinary ranks and the special tokens
                continue
            if len(piece) > _LONG_TOKEN_BYTES:
                long_ids.add(token)
        self._long_ids = frozenset(long_ids)

    @property
    def name(self) -> str:
        return CLAUDE_STANDIN

    def count(self, text: str) -> int:
        tokens = self._base.encode_ordinary(text)
        long_ids = self._long_ids
        return len(tokens) + sum(1 for t in tokens if t in long_ids)


def encoding_name_for_model(model: str) -> str:
    """The tokenizer name the fake provider bills ``model`` with."""
    name = model.lower().rsplit("/", 1)[-1]
    if name.startswith("claude"):
        return CLAUDE_STANDIN
    if name.startswith(_O200K_PREFIXES):
        return "o200k_base"
    if name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return "o200k_base"


_lock = threading.Lock()
_tokenizers: dict[str, Tokenizer] = {}


def _build(name: str) -> Tokenizer:
    if name == CLAUDE_STANDIN:
        return ClaudeStandIn(get_encoding("cl100k_base"))
    return TiktokenCounter(get_encoding(name))


def tokenizer_for_model(model: str) -> Tokenizer:
    """The (cached) tokenizer the fake provider bills ``model`` with."""
    name = encoding_name_for_model(model)
    tokenizer = _tokenizers.get(name)
    if tokenizer is None:
        with _lock:
            tokenizer = _tokenizers.get(name)
            if tokenizer is None:
                tokenizer = _build(name)
                _tokenizers[name] = tokenizer
    return tokenizer


def count_tokens(model: str, text: str) -> int:
    """Tokens of ``text`` as the fake provider counts them for ``model`` (no message framing)."""
    return tokenizer_for_model(model).count(text)


def warm_tokenizers() -> None:
    """Build every tokenizer now (about a second, once per process).

    A server calls this before it listens, so no request pays for loading a vocabulary,
    which would otherwise stall its event loop past a short client timeout.
    """
    for name in ("o200k_base", "cl100k_base", CLAUDE_STANDIN):
        with _lock:
            if name not in _tokenizers:
                _tokenizers[name] = _build(name)
