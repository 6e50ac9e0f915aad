"""
The call engine, for front ends other than the SDK wrappers (the gateway): the per-API
adapters, the call procedure and its operations, the drivers' helpers and the stream
meter. The wrappers and the gateway run the same procedure, so a call is admitted, sent
and settled the same way whichever door it came in by; this module is the one place the
gateway reaches into, so the layout behind it can change.
"""

from __future__ import annotations

from ._apis import CHAT, EMBEDDINGS, MESSAGES, RESPONSES, Api
from ._drive import background, shielded
from ._procedure import (
    DEFAULT_TIMEOUT_S,
    TTL_MARGIN_S,
    Call,
    ChargeRetry,
    Commit,
    ReadRoom,
    Release,
    Send,
    Settings,
    Sleep,
    Started,
    TryHold,
    call_procedure,
)
from ._settle import StreamMeter, Verdict

__all__ = [
    "CHAT",
    "DEFAULT_TIMEOUT_S",
    "EMBEDDINGS",
    "MESSAGES",
    "RESPONSES",
    "TTL_MARGIN_S",
    "Api",
    "Call",
    "ChargeRetry",
    "Commit",
    "ReadRoom",
    "Release",
    "Send",
    "Settings",
    "Sleep",
    "Started",
    "StreamMeter",
    "TryHold",
    "Verdict",
    "background",
    "call_procedure",
    "shielded",
]
