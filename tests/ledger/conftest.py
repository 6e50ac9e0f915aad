from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from execbudget.clock import ManualClock
from execbudget.ledger import AsyncLedger, Ledger

from .backends import BACKENDS, Backend, LoopThread, SyncOverAsync


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def _params() -> list[Any]:
    return [
        pytest.param((backend, face), id=f"{backend.name}-{face}", marks=backend.marks)
        for backend in BACKENDS
        for face in ("sync", "async")
    ]


@pytest.fixture(params=_params())
def ledger(request: pytest.FixtureRequest, clock: ManualClock, tmp_path: Path) -> Iterator[Any]:
    """A fresh ledger on every backend, through both the sync and the async face."""
    backend, face = request.param
    assert isinstance(backend, Backend)
    if face == "sync":
        with backend.make(clock, tmp_path) as storage:
            yield Ledger(storage)
        return
    loop = LoopThread()
    try:
        if backend.make_async is None:
            with backend.make(clock, tmp_path) as storage:
                yield SyncOverAsync(AsyncLedger(storage), loop)
        else:
            factory = backend.make_async(clock, tmp_path)
            storage = loop.run(_enter(factory))
            try:
                yield SyncOverAsync(AsyncLedger(storage), loop)
            finally:
                loop.run(_exit(factory))
    finally:
        loop.close()


async def _enter(factory: Any) -> Any:
    if hasattr(factory, "__aenter__"):
        return await factory.__aenter__()
    return factory.__enter__()


async def _exit(factory: Any) -> None:
    if hasattr(factory, "__aexit__"):
        await factory.__aexit__(None, None, None)
    else:
        factory.__exit__(None, None, None)
