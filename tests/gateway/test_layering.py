"""The gateway builds on the other layers' public faces, never on their private modules."""

from __future__ import annotations

import ast
from pathlib import Path

import execbudget.gateway

GATEWAY = Path(execbudget.gateway.__file__).parent


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        # ``from ..invocation._procedure import x``: another package's private module
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level >= 2
            and any(part.startswith("_") for part in node.module.split("."))
        ):
            found.append(f"{path.name}:{node.lineno}: from {'.' * node.level}{node.module}")
    return found


def test_the_gateway_imports_no_private_module_of_another_package() -> None:
    offenders = [hit for path in sorted(GATEWAY.glob("*.py")) for hit in _private_imports(path)]
    assert offenders == [], "use execbudget.invocation.engine or a package's __init__"
