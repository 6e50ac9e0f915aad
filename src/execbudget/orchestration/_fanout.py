"""
``run.map`` / ``run.amap``: a budgeted fan-out over threads or asyncio tasks.

Order of events, so no branch starts that the budget cannot admit:

1. admission (``_admission``): the item count against the ``fan_out`` room, the projected
   cost against the ``cost`` room, the worker count against the ``concurrency`` room;
   refused or truncated *before* the first branch starts, then the admitted count is held;
2. each worker holds one ``concurrency`` while it runs branches, one at a time; each branch
   runs ``fn(item)`` in a copy of the run's context, inside a child scope
   ``branch:<name>#<index>`` (so policy rules for ``branch:<name>`` cap each branch, and
   every hold a branch makes lands on the run's chain too);
3. the first failure stops the fan-out (no new branch starts; async branches are
   cancelled), unless ``return_exceptions=True``;
4. at the chain's deadline async branches are cancelled and the caller gets
   ``DeadlineExceeded``; a thread cannot be cancelled, so the sync caller stops waiting at
   the deadline and gets ``DeadlineExceeded`` on time, no new branch starts, and the running
   ones end at their next budget check or when their model call's HTTP timeout (the time
   that was left) fires;
5. the ``fan_out`` hold is settled with the number of branches that started.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ..run import Scope
from ..scopes import CURRENT, Frame
from ._admission import Admission, FanOutReport, OnExcess, admit, settings_for
from ._deadline import deadline_error, remaining_s
from ._drive import adrive, drive

if TYPE_CHECKING:
    from ..enforcer import Hold

T = TypeVar("T")
R = TypeVar("R")

#: threads a sync fan-out starts when no ``max_concurrency`` is given
DEFAULT_THREADS: Final = 32


class FanOutResult(list[R]):
    """The results of a fan-out, in item order, with the ``report`` of what was admitted."""

    report: FanOutReport

    def __init__(self, results: Iterable[R], report: FanOutReport) -> None:
        super().__init__(results)
        self.report = report


def _branch_name(frame: Frame, name: str | None) -> str:
    return name or frame.name


def _open_branch(frame: Frame, name: str, index: int) -> Scope:
    # runs in a copy of the run's context, where CURRENT is already the run's frame
    return Scope(frame.enforcer, "branch", name, instance=str(index), limits=None, is_run=False)


def _run_branch(frame: Frame, name: str, index: int, fn: Callable[[T], R], item: T) -> R:
    with _open_branch(frame, name, index):
        return fn(item)


async def _arun_branch(
    frame: Frame, name: str, index: int, fn: Callable[[T], Awaitable[R]], item: T
) -> R:
    async with _open_branch(frame, name, index):
        return await fn(item)


def _settle(admission: Admission[Any], started: int) -> None:
    if admission.fan_out_hold is not None:
        admission.fan_out_hold.commit({"fan_out": started})


async def _asettle(admission: Admission[Any], started: int) -> None:
    if admission.fan_out_hold is not None:
        await admission.fan_out_hold.acommit({"fan_out": started})


# -- threads -----------------------------------------------------------------------------
class _ThreadFanOut:
    """The shared state of one sync fan-out's workers (guarded by ``lock``)."""

    def __init__(
        self,
        frame: Frame,
        admission: Admission[Any],
        fn: Callable[[Any], Any],
        name: str,
        return_exceptions: bool,
    ) -> None:
        self.frame = frame
        self.admission = admission
        self.fn = fn
        self.name = name
        self.return_exceptions = return_exceptions
        self.results: list[Any] = [None] * len(admission.items)
        self.lock = threading.Lock()
        self.next = 0
        self.started = 0
        self.stopped = False
        self.error: BaseException | None = None
        self.active = 0
        self.done = threading.Event()
        base = contextvars.copy_context()
        base.run(CURRENT.set, frame)
        self.base = base

    def claim(self) -> int | None:
        with self.lock:
            if self.stopped or self.next >= len(self.admission.items):
                return None
            index = self.next
            self.next += 1
            self.started += 1
            return index

    def stop(self, error: BaseException | None = None) -> None:
        with self.lock:
            self.stopped = True
            if error is not None and self.error is None:
                self.error = error

    def worker(self, slot: Hold | None) -> None:
        try:
            while (index := self.claim()) is not None:
                item = self.admission.items[index]
                try:
                    self.results[index] = self.base.copy().run(
                        _run_branch, self.frame, self.name, index, self.fn, item
                    )
                except Exception as exc:
                    if not self.return_exceptions:
                        self.stop(exc)
                        break
                    self.results[index] = exc
                except BaseException as exc:  # KeyboardInterrupt, SystemExit: stop all
                    self.stop(exc)
                    break
        finally:
            try:
                if slot is not None:
                    slot.release()
            finally:
                with self.lock:
                    self.active -= 1
                    if self.active == 0:
                        self.done.set()


def fan_out_map(
    scope: Scope,
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    max_concurrency: int | None = None,
    item_cost: object | None = None,
    on_excess: OnExcess | None = None,
    return_exceptions: bool = False,
    name: str | None = None,
) -> FanOutResult[R]:
    """Run ``fn`` over ``items`` on threads, admitted and bounded by the budget (see module)."""
    frame = scope.frame
    frame.enforcer.check_deadline(frame)
    settings = settings_for(frame, item_cost, on_excess)
    admission = drive(
        admit(
            frame,
            items,
            settings,
            max_concurrency=max_concurrency,
            default_workers=DEFAULT_THREADS,
        ),
        frame,
    )
    report = admission.report
    state = _ThreadFanOut(frame, admission, fn, _branch_name(frame, name), return_exceptions)
    slots: list[Hold | None] = [*admission.slots] or [None] * report.workers
    if not admission.items:
        for held in admission.slots:
            held.release()
        _settle(admission, 0)
        return FanOutResult([], report)
    state.active = len(slots)
    try:
        for slot in slots:
            threading.Thread(
                target=state.worker, args=(slot,), daemon=True, name=f"execbudget-{state.name}"
            ).start()
        left = remaining_s(frame)
        if not state.done.wait(None if left is None else max(0.0, left)):
            state.stop()
            raise deadline_error(frame)
    except BaseException:
        state.stop()
        raise
    finally:
        with state.lock:
            report.started = state.started
        _settle(admission, report.started)
    if state.error is not None:
        raise state.error
    return FanOutResult(state.results, report)


# -- asyncio -----------------------------------------------------------------------------
async def fan_out_amap(
    scope: Scope,
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T],
    *,
    max_concurrency: int | None = None,
    item_cost: object | None = None,
    on_excess: OnExcess | None = None,
    return_exceptions: bool = False,
    name: str | None = None,
) -> FanOutResult[R]:
    """Run ``await fn(item)`` over ``items`` as asyncio tasks (see the module docstring)."""
    frame = scope.frame
    frame.enforcer.check_deadline(frame)
    settings = settings_for(frame, item_cost, on_excess)
    admission = await adrive(
        admit(frame, items, settings, max_concurrency=max_concurrency, default_workers=None),
        frame,
    )
    report = admission.report
    branch = _branch_name(frame, name)
    results: list[Any] = [None] * len(admission.items)
    base = contextvars.copy_context()
    base.run(CURRENT.set, frame)
    cursor = 0
    first_error: BaseException | None = None
    workers: list[asyncio.Task[None]] = []

    async def worker(slot: Hold | None) -> None:
        nonlocal cursor, first_error
        try:
            while first_error is None and cursor < len(admission.items):
                index = cursor
                cursor += 1
                report.started += 1
                task = asyncio.create_task(
                    _arun_branch(frame, branch, index, fn, admission.items[index]),
                    context=base.copy(),
                )
                try:
                    results[index] = await task
                except Exception as exc:
                    if not return_exceptions:
                        if first_error is None:
                            first_error = exc
                            me = asyncio.current_task()
                            for other in workers:
                                if other is not me:
                                    other.cancel()
                        return
                    results[index] = exc
        finally:
            if slot is not None:
                await slot.arelease()

    aslots: list[Hold | None] = [*admission.slots] or [None] * report.workers
    try:
        workers.extend(asyncio.create_task(worker(slot)) for slot in aslots)
        left = remaining_s(frame)
        try:
            async with asyncio.timeout(None if left is None else max(0.0, left)):
                if workers:
                    await asyncio.wait(workers)
        except TimeoutError as err:
            raise deadline_error(frame) from err
    finally:
        for task in workers:
            task.cancel()
        if workers:
            await asyncio.gather(*workers, return_exceptions=True)
        await _asettle(admission, report.started)
    if first_error is not None:
        raise first_error
    return FanOutResult(results, report)
