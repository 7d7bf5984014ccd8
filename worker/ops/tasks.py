"""Task plumbing for the lifespans: helper tasks whose end is logged, loops run side by side, a task
let finish its work in hand, ends that run to completion whatever cancels them, and what a hung
shutdown still waits on."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import structlog

log = structlog.get_logger(__name__)

Close = Callable[[], Awaitable[None]]
"""A client's end: a close, a stop, a leave."""


def background(work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """A helper task whose unexpected end is logged (`background_task_failed`) instead of lost."""
    task = asyncio.create_task(work, name=name)

    def report(done: asyncio.Task[None]) -> None:
        if not done.cancelled() and (exc := done.exception()) is not None:
            log.error("background_task_failed", task=name, error=f"{type(exc).__name__}: {exc}")

    task.add_done_callback(report)
    return task


async def run_together(work: Sequence[Coroutine[Any, Any, None]]) -> None:
    """Run the loops side by side until all return; the first to raise cancels the others and
    its exception is raised (as it is, not in a group: the CLI maps it to an exit code)."""
    tasks = [asyncio.create_task(coroutine) for coroutine in work]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                raise failure
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def finish_task(task: asyncio.Task[None], stop: asyncio.Event, timeout_s: float) -> None:
    """After `stop`, let `task` finish its work in hand (at most `timeout_s`); else cancel it.

    A cancelled redelivery batch leaves its claims to lapse with their leases.
    """
    try:
        if stop.is_set():
            await asyncio.wait({task}, timeout=timeout_s)
    finally:
        task.cancel()  # a no-op once it has finished
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():  # we are the ones being cancelled
            raise
    except Exception as exc:
        log.error("background_task_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)


def close_on_exit(stack: contextlib.AsyncExitStack, *closes: Close, within_s: float) -> None:
    """Pair clients with their `closes` on `stack`: when it unwinds they run all at once, each for
    at most `within_s`, to their end even if the unwinding task is cancelled meanwhile."""
    stack.push_async_callback(to_the_end, functools.partial(close_all, closes, within_s=within_s))


async def close_all(closes: Sequence[Close], *, within_s: float) -> None:
    """Every `close()` at once, each within `within_s`; a failure (or the timeout) is logged, never raised."""

    async def close_within(close: Close) -> None:
        try:
            await asyncio.wait_for(close(), timeout=within_s)
        except Exception as exc:
            log.warning("close_failed", error=f"{type(exc).__name__}: {exc}", within_s=within_s)

    await asyncio.gather(*(close_within(close) for close in closes))


async def to_the_end(step: Callable[[], Awaitable[None]]) -> None:
    """Await `step()` to its end even if this task is cancelled meanwhile (`serve`'s shutdown
    timeout), then pass the cancellation on. `step` bounds its own wait: a leave, a close."""
    running = asyncio.ensure_future(step())
    try:
        await asyncio.shield(running)
    except asyncio.CancelledError:
        await running
        raise


def waiting_on() -> list[str]:
    """What each task still running awaits, outermost to innermost coroutine, e.g.
    `ConsumerLoop.run > GroupConsumer.poll > ...`: what held the shutdown up."""
    places = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task():
            continue
        chain: list[str] = []
        coroutine: Any = task.get_coro()
        while (frame := getattr(coroutine, "cr_frame", None)) is not None:
            chain.append(f"{frame.f_code.co_qualname}:{frame.f_lineno}")
            coroutine = getattr(coroutine, "cr_await", None)
        places.append(f"{task.get_name()}: {' > '.join(chain)}")
    return sorted(places)
