"""
Every ```python block in README.md and docs/*.md runs here, in a fresh directory.

A block that should not run (it needs a real provider key, say) is written as ```py.
Blocks of one file run in order in one namespace, so a page can build on itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import execbudget

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p)], ids=lambda p: p.name)
def test_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    try:
        for number, code in enumerate(_blocks(page), start=1):
            exec(compile(code, f"{page.name} block {number}", "exec"), namespace)
    finally:
        execbudget.configure(None, "memory://")


def test_readme_gives_the_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo" in readme and "make test" in readme
