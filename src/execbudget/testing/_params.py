"""Request-body validation shared by the routes: the 400s the real APIs give."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from execbudget.testing._exchange import BadRequest

__all__ = ["optional_int", "require_list", "require_str"]


def require_str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"'{key}' is required and must be a non-empty string", param=key)
    return value


def require_list(body: Mapping[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    if not isinstance(value, list) or not value:
        raise BadRequest(f"'{key}' is required and must be a non-empty array", param=key)
    return value


def optional_int(body: Mapping[str, Any], key: str, *, minimum: int = 1) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadRequest(f"'{key}' must be an integer >= {minimum}, got {value!r}", param=key)
    return value
