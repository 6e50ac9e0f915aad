"""
``GET /v1/models`` and ``GET /v1/models/{id}`` in both providers' shapes.

Both APIs use the same path; a request carrying ``anthropic-version`` (every Anthropic SDK
request does) gets Anthropic's shape and its Claude models, any other gets OpenAI's.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.responses import Response

from execbudget.testing._exchange import BadRequest, Exchange

__all__ = ["MODELS", "list_models", "retrieve_model"]

MODELS: Final = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "o3",
    "o4-mini",
    "gpt-4-turbo",
    "gpt-3.5-turbo",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
    "claude-opus-4-1",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "claude-3-5-haiku-latest",
)
_CREATED = 1_700_000_000
_CREATED_AT = "2025-01-01T00:00:00Z"


def _is_anthropic(ex: Exchange) -> bool:
    return "anthropic-version" in ex.request.headers


def _openai_model(model: str) -> dict[str, Any]:
    owner = "anthropic" if model.startswith("claude") else "openai"
    return {"id": model, "object": "model", "created": _CREATED, "owned_by": owner}


def _anthropic_model(model: str) -> dict[str, Any]:
    return {"type": "model", "id": model, "display_name": model, "created_at": _CREATED_AT}


async def list_models(ex: Exchange) -> Response:
    if _is_anthropic(ex):
        claude = [m for m in MODELS if m.startswith("claude")]
        payload: dict[str, Any] = {
            "data": [_anthropic_model(m) for m in claude],
            "has_more": False,
            "first_id": claude[0],
            "last_id": claude[-1],
        }
    else:
        payload = {"object": "list", "data": [_openai_model(m) for m in MODELS]}
    return ex.json(payload, input_tokens=0, output_tokens=0)


async def retrieve_model(ex: Exchange) -> Response:
    model = str(ex.request.path_params["model"])
    if model not in MODELS:
        raise BadRequest(f"The model '{model}' does not exist", status=404)
    payload = _anthropic_model(model) if _is_anthropic(ex) else _openai_model(model)
    return ex.json(payload, input_tokens=0, output_tokens=0)
