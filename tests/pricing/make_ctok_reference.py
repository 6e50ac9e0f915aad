"""
Regenerate ``data/ctok_reference.json``: Claude token counts of the test corpus by ``ctok``.

ctok (an offline reconstruction of Claude's tokenizer, MIT) declares Python >= 3.12, so it
is not a dependency; install it aside and run::

    pip install --no-deps --ignore-requires-python --target /tmp/ctok-pkg ctok==1.3.0
    PYTHONPATH=/tmp/ctok-pkg python -m tests.pricing.make_ctok_reference

Counts are of the text alone: ctok's single-message frame (``token_count("")``) is removed.
"""

from __future__ import annotations

import json
from pathlib import Path

from .corpus import CORPUS

VERSIONS = {"claude-3": "3.0", "claude-4.7": "4.7", "claude-4.8": "4.8"}


def main() -> None:
    import ctok

    out: dict[str, object] = {"ctok_version": "1.3.0", "counts": {}}
    counts: dict[str, dict[str, int]] = {}
    for family, version in VERSIONS.items():
        frame = ctok.token_count("", version)
        counts[family] = {label: ctok.token_count(text, version) - frame for label, text in CORPUS}
    out["counts"] = counts
    target = Path(__file__).with_name("data") / "ctok_reference.json"
    target.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
