"""
Deterministic model output: text of an exact token count, and tool-call arguments.

The text is a stream of English-looking sentences drawn from a fixed word list by a
``random.Random`` seeded from the request. It is built piece by piece (a word with its
leading space, or a punctuation mark): the encodings split text at exactly those pieces, so
the token count of the text is the sum of the pieces' counts and the generator can stop on
an exact budget. When the next word does not fit, one-token fillers (``" a"``) make up the
rest, so ``max_tokens = N`` always yields exactly N tokens.

The seed excludes ``max_tokens`` and ``stream``: a shorter answer is a prefix of a longer
one to the same prompt, and the streamed text equals the non-streamed text.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from execbudget.testing._tokenizers import Tokenizer

__all__ = ["GeneratedText", "generate_text", "request_seed", "synthesize_arguments"]

_WORDS = [
    "agent",
    "budget",
    "call",
    "token",
    "model",
    "limit",
    "cost",
    "step",
    "retry",
    "tool",
    "branch",
    "deadline",
    "ledger",
    "window",
    "scope",
    "hold",
    "spend",
    "answer",
    "request",
    "stream",
    "chunk",
    "output",
    "input",
    "price",
    "tier",
    "run",
    "workflow",
    "tenant",
    "team",
    "plan",
    "graph",
    "node",
    "edge",
    "cache",
    "usage",
    "policy",
    "guard",
    "loop",
    "depth",
    "the",
    "a",
    "an",
    "and",
    "of",
    "to",
    "in",
    "on",
    "for",
    "with",
    "by",
    "from",
    "as",
    "at",
    "is",
    "was",
    "are",
    "be",
    "it",
    "this",
    "that",
    "each",
    "every",
    "some",
    "many",
    "few",
    "more",
    "less",
    "most",
    "fast",
    "slow",
    "small",
    "large",
    "quiet",
    "bright",
    "early",
    "late",
    "first",
    "last",
    "next",
    "other",
    "same",
    "new",
    "old",
    "good",
    "clear",
    "simple",
    "exact",
    "careful",
    "checks",
    "holds",
    "counts",
    "moves",
    "keeps",
    "sends",
    "reads",
    "writes",
    "finds",
    "makes",
    "takes",
    "gives",
    "shows",
    "waits",
    "ends",
    "starts",
    "stops",
    "grows",
    "falls",
    "meets",
    "before",
    "after",
    "while",
    "when",
    "where",
    "because",
    "until",
    "unless",
    "although",
]
_FILLER = " a"


def request_seed(*parts: object) -> int:
    """A stable 64-bit seed from JSON-able parts of a request (key order does not matter)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:8], "big")


@dataclass(frozen=True, slots=True)
class GeneratedText:
    """Text cut into the pieces a stream sends, with the token count of each piece."""

    pieces: tuple[str, ...]
    piece_tokens: tuple[int, ...]

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def tokens(self) -> int:
        return sum(self.piece_tokens)


def _pieces(rng: random.Random) -> Iterator[str]:
    first = True
    while True:
        length = rng.randint(6, 14)
        for i in range(length):
            word = rng.choice(_WORDS)
            if i == 0:
                word = word.capitalize()
            yield word if first else " " + word
            first = False
            if 0 < i < length - 1 and rng.random() < 0.08:
                yield ","
        yield "."


# Piece counts per tokenizer: the word list is small, and counting it again is not free.
_piece_counts: dict[tuple[str, str], int] = {}


def _piece_tokens(tokenizer: Tokenizer, piece: str) -> int:
    key = (tokenizer.name, piece)
    n = _piece_counts.get(key)
    if n is None:
        n = tokenizer.count(piece)
        _piece_counts[key] = n
    return n


def generate_text(tokenizer: Tokenizer, seed: int, tokens: int) -> GeneratedText:
    """Exactly ``tokens`` tokens of deterministic text (as counted by ``tokenizer``)."""
    rng = random.Random(seed)
    pieces: list[str] = []
    costs: list[int] = []
    total = 0
    for piece in _pieces(rng):
        if total >= tokens:
            break
        cost = _piece_tokens(tokenizer, piece)
        if total + cost > tokens:
            break
        pieces.append(piece)
        costs.append(cost)
        total += cost
    while total < tokens:
        filler = _FILLER if pieces else _FILLER.strip()
        pieces.append(filler)
        costs.append(_piece_tokens(tokenizer, filler))
        total += costs[-1]
    return GeneratedText(tuple(pieces), tuple(costs))


def _value_for(schema: Mapping[str, Any], rng: random.Random, depth: int) -> Any:
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "integer":
        return rng.randint(1, 100)
    if kind == "number":
        return round(rng.uniform(0, 100), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "array":
        items = schema.get("items")
        if depth > 3 or not isinstance(items, Mapping):
            return []
        return [_value_for(items, rng, depth + 1)]
    if kind == "object":
        return synthesize_arguments(schema, rng, depth + 1) if depth <= 3 else {}
    return rng.choice(_WORDS)


def synthesize_arguments(
    schema: Mapping[str, Any] | None, rng: random.Random, depth: int = 0
) -> dict[str, Any]:
    """Deterministic arguments that fit a JSON schema: every declared property gets a value."""
    if not schema:
        return {}
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return {}
    return {
        str(key): _value_for(sub if isinstance(sub, Mapping) else {}, rng, depth)
        for key, sub in properties.items()
    }
