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

_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNk+A8AAQUBAScY42YAAAAASUVORK5CYII="
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
    corpus.extend(_stress_samples())
    return corpus


def _stress_samples() -> list[tuple[str, str]]:
    """Content where Claude/o200k ratios are far from the published ones (measured with ctok)."""
    out: list[tuple[str, str]] = []
    for ch in (" ", "\t", "\n", "-", "=", "x", "0", ".", "#", "*", "_", "a", "A", "é", "中", "🎉"):
        for n in (16, 100, 1000):
            out.append((f"run-{ord(ch):x}-{n}", ch * n))
    out += [
        (
            "cjk-zh",
            "预算在调用之前被保留，而不是在之后报告。每一次模型调用都先预留最坏情况的成本。" * 10,
        ),
        ("ja", "日本語の文章もここに含まれます。東京は日本の首都です。" * 10),
        ("ko", "한국어 문장도 포함되어 있습니다. 서울은 대한민국의 수도입니다." * 10),
        (
            "ru",
            "Бюджет удерживается до вызова модели. Каждый вызов резервирует худший случай." * 10,
        ),
        ("ar", "الميزانية محجوزة قبل الاستدعاء. كل استدعاء يحجز أسوأ حالة أولاً." * 10),
        ("hi", "बजट कॉल से पहले रोका जाता है। हर कॉल पहले सबसे खराब स्थिति आरक्षित करती है।" * 10),
        ("th", "งบประมาณถูกกันไว้ก่อนการเรียก ทุกการเรียกจะจองกรณีที่แย่ที่สุดก่อน" * 10),
        ("el", "Ο προϋπολογισμός δεσμεύεται πριν από την κλήση." * 10),
        ("emoji-faces", "😀😃😄😁😆😅😂🤣😊😇🙂🙃😉😌😍🥰😘😗😙😚" * 20),
        ("pi", "3141592653589793238462643383279502884197169399375105820974944592" * 20),
        ("hex", "a3f9c2e1b7d4086f5e2a9c1b3d7f0e4a" * 20),
        (
            "base64",
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNk+A8AAQUBAScY42YAAAAASUVORK5CYII="
            * 10,
        ),
        (
            "upper",
            "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG. BUDGETS ARE HELD BEFORE THE CALL. " * 10,
        ),
        ("camel", "getUserAccountBalanceForTenantIdWithRetryPolicyAndDeadline " * 20),
        (
            "pascal",
            "class AccountBalanceService(BaseService): HTTPRequestHandler XMLParser IOError " * 20,
        ),
        ("title", "The Quick Brown Fox Jumps Over The Lazy Dog In New York City " * 20),
        (
            "csv",
            "id,name,amount,currency\n"
            + "".join(f"{i},Name{i},{i * 3.14:.2f},USD\n" for i in range(200)),
        ),
        (
            "sql",
            "SELECT u.id, u.email FROM users u JOIN orders o ON o.user_id = u.id "
            "WHERE o.total > 100;\n" * 20,
        ),
        ("uuid", " ".join("550e8400-e29b-41d4-a716-446655440000" for _ in range(50))),
        ("en-emoji", "Great job on the release 🎉 the budget held perfectly. " * 30),
        ("en-cjk", "The model 模型 holds the budget 预算 before the call 调用. " * 30),
    ]
    return out


CORPUS = build_corpus()
