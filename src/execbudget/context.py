"""
Carrying the current scope into threads.

asyncio tasks copy the context when they are created, so they inherit the scope by
themselves. Threads do not: work handed to a pool through these helpers runs in a copy
of the caller's context, so its holds land on the caller's chain.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def bind(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` bound to a copy of the current context, to run in any thread."""
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def bound(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.run(fn, *args, **kwargs)

    return bound


def submit(executor: Executor, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
    """``executor.submit`` that carries the current scope into the worker thread."""
    return executor.submit(bind(fn), *args, **kwargs)


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A thread pool whose tasks run in the submitter's context (scope included)."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        return super().submit(bind(fn), *args, **kwargs)
