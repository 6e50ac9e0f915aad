"""
``POST /v1/embeddings``: deterministic unit vectors and honest ``prompt_tokens``.

The openai SDK asks for ``encoding_format="base64"`` by default (little-endian float32),
so both that and ``"float"`` are served. Vectors are seeded from the model and the input,
so the same text always embeds the same way.
"""

from __future__ import annotations

import base64
import math
import random
import struct
from typing import Any

from starlette.responses import Response

from execbudget.testing._exchange import BadRequest, Exchange
from execbudget.testing._generator import request_seed
from execbudget.testing._params import optional_int, require_str
from execbudget.testing._prompts import embedding_input_tokens
from execbudget.testing._tokenizers import tokenizer_for_model

__all__ = ["embeddings"]

_DIMENSIONS = {"text-embedding-3-large": 3072}
_DEFAULT_DIMENSIONS = 1536


def _vector(model: str, item: Any, dimensions: int) -> list[float]:
    rng = random.Random(request_seed("embedding", model, item))
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _inputs(raw: Any) -> list[Any]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw:
        if all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
            return [raw]  # one input given as token ids
        if all(isinstance(x, str) for x in raw) or all(
            isinstance(x, list) and all(isinstance(t, int) for t in x) for x in raw
        ):
            return list(raw)
    raise BadRequest(
        "'input' must be a string, an array of strings, or token arrays", param="input"
    )


async def embeddings(ex: Exchange) -> Response:
    body = ex.body
    model = require_str(body, "model")
    inputs = _inputs(body.get("input"))
    dimensions = optional_int(body, "dimensions") or _DIMENSIONS.get(model, _DEFAULT_DIMENSIONS)
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise BadRequest("encoding_format must be 'float' or 'base64'", param="encoding_format")
    tokens = sum(embedding_input_tokens(tokenizer_for_model(model), inputs))
    data = []
    for index, item in enumerate(inputs):
        vector = _vector(model, item, dimensions)
        embedding: Any = vector
        if encoding == "base64":
            embedding = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    payload: dict[str, Any] = {"object": "list", "data": data, "model": model}
    if not ex.config.omit_usage:
        payload["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    await ex.delay()
    return ex.json(payload, input_tokens=tokens, output_tokens=0)
