"""
A varied text corpus, generated deterministically (no fixture file to drift or rot).

Each entry is ``(label, text)``. It covers what prompts really contain and what breaks
tokenizers: English prose, code, JSON, CJK, emoji (incl. ZWJ sequences), other scripts,
long runs of whitespace and newlines, digits, special-token look-alikes, and random
Unicode (surrogate-free).
"""

from __future__ import annotations

import json
import random

_WORDS = tuple(
    " ".join(
        [
            "budget hold spend model call token agent loop retry fan out deadline ledger price",
            "tier cache window scope limit commit release expire workflow tenant the of and to",
            "in is that for with as on was by be this are or from at an not but which have",
        ]
    ).split(" ")
)

_CODE = '''
def reserve(ledger, scope, amount, *, ttl=300):
    """Hold `amount` on every line of `scope`'s chain, atomically."""
    for line in ledger.chain(scope):
        if line.spent + line.held + amount > line.limit:
            raise BudgetExceeded(scope=line.scope, requested=amount)
    return ledger.hold(scope, amount, ttl=ttl)  # all or nothing

class Foo(Bar):
    x: int = 0x1F; y = [i ** 2 for i in range(10)]
'''

_CJK = (
    "预算在调用之前被保留，而不是在之后报告。每一次模型调用都先预留最坏情况的成本。"
    "日本語の文章もここに含まれます。東京は日本の首都です。"
    "한국어 문장도 포함되어 있습니다. 서울은 대한민국의 수도입니다."
)

_OTHER_SCRIPTS = (
    "Бюджет удерживается до вызова модели. "
    "الميزانية محجوزة قبل الاستدعاء. "
    "बजट कॉल से पहले रोका जाता है। "
    "Ο προϋπολογισμός δεσμεύεται πριν από την κλήση. "
    "งบประมาณถูกกันไว้ก่อนการเรียก "
    "Ngân sách được giữ trước khi gọi. Zürich, façade, naïve, Ærø, łódź."
)

_EMOJI = "🎉🔥👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ✅❌ 🤖💸📈 ⏱️ 🇯🇵🇫🇷 ❤️‍🔥 🫠"


def _prose(rng: random.Random, words: int) -> str:
    out = []
    for i in range(words):
        word = rng.choice(_WORDS)
        if i % 12 == 0:
            word = word.capitalize()
        out.append(word)
        if i % 12 == 11:
            out[-1] += "."
    return " ".join(out)


def _json_blob(rng: random.Random) -> str:
    data = {
        "id": f"call_{rng.getrandbits(64):016x}",
        "items": [
            {
                "name": rng.choice(_WORDS),
                "qty": rng.randint(0, 10_000),
                "price": round(rng.random() * 100, 2),
            }
            for _ in range(12)
        ],
        "nested": {"a": {"b": {"c": [True, False, None, "x\ny\tz"]}}},
        "unicode": "naïve café 東京",
    }
    return json.dumps(data, indent=2, ensure_ascii=False)


def _random_unicode(rng: random.Random, n: int) -> str:
    chars = []
    while len(chars) < n:
        cp = rng.randint(0x20, 0x2FFFF)
        if 0xD800 <= cp <= 0xDFFF:
            continue
        chars.append(chr(cp))
    return "".join(chars)


def build_corpus(seed: int = 20261204) -> list[tuple[str, str]]:
    """The corpus: about 60 texts, from empty to ~40k characters."""
    rng = random.Random(seed)
    corpus: list[tuple[str, str]] = [
        ("empty", ""),
        ("one-char", "a"),
        ("hello", "Hello, world!"),
        ("code", _CODE),
        ("code-x20", _CODE * 20),
        ("cjk", _CJK),
        ("cjk-x10", _CJK * 10),
        ("scripts", _OTHER_SCRIPTS),
        ("emoji", _EMOJI),
        ("emoji-x20", _EMOJI * 20),
        ("spaces-1000", " " * 1000),
        ("spaces-mixed", "a" + " " * 5000 + "b" + "\t" * 300 + "c"),
        ("newlines", "\n" * 2000),
        ("crlf", "line one\r\nline two\r\n\r\n" * 50),
        ("indent", "\n".join(" " * (4 * (i % 9)) + f"x{i} = {i}" for i in range(300))),
        ("digits", "".join(str(rng.randint(0, 9)) for _ in range(3000))),
        ("specials", "<|endoftext|> <|fim_prefix|><|endofprompt|> <|im_start|>user"),
        (
            "urls",
            " ".join(f"https://example.com/{rng.getrandbits(32):x}?q={i}" for i in range(100)),
        ),
        ("repeated", "ab" * 5000),
        ("long-word", "x" * 20_000),
        ("markdown", "# Title\n\n- item **bold** _it_\n\n| a | b |\n|---|---|\n| 1 | 2 |\n" * 30),
        ("mixed", _prose(rng, 100) + " " + _CJK + " " + _EMOJI + " " + _CODE),
    ]
    for i in range(12):
        corpus.append((f"prose-{i}", _prose(rng, rng.randint(5, 3000))))
    for i in range(6):
        corpus.append((f"json-{i}", _json_blob(rng)))
    for i in range(10):
        corpus.append((f"unicode-{i}", _random_unicode(rng, rng.randint(1, 2000))))
    for i in range(8):
        parts = [_prose(rng, 40), _CJK, _OTHER_SCRIPTS, _EMOJI, _CODE, " " * rng.randint(0, 200)]
        rng.shuffle(parts)
        corpus.append((f"shuffle-{i}", "".join(parts)))
    return corpus


CORPUS = build_corpus()
