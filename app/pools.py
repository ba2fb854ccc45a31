"""Bounded pools with visible saturation: threads for CPU work, slots for downloads, a budget of decoded pixels.

The server's own work (parsing bodies, decoding images, hashing, tokenizing) runs in its own thread pool, not in
asyncio's default executor, which the local backends occupy (one thread per generation call, waiting on the engine
lock): a busy engine can then never starve decoding, and a flood of decoding never delays the engine. Downloads get
their own slots on top, so slow image hosts can hold at most those. Each pool reports size, busy and waiting to
/health and /metrics.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import deque
from collections.abc import Callable
from typing import Self, TypeVar

from deltarubric.app.metrics import Metrics

T = TypeVar("T")


class Slots:
    """At most `size` holders at once; the rest wait. Counts are kept on the event loop thread only."""

    def __init__(self, name: str, size: int, metrics: Metrics) -> None:
        self.name, self.size = name, size
        self.busy = self.waiting = 0
        self._free = asyncio.Semaphore(size)
        metrics.pool_size.labels(name).set(size)
        metrics.pool_busy.labels(name).set_function(lambda: self.busy)
        metrics.pool_waiting.labels(name).set_function(lambda: self.waiting)

    async def acquire(self) -> None:
        self.waiting += 1
        try:
            await self._free.acquire()
        finally:
            self.waiting -= 1
        self.busy += 1

    def release(self) -> None:
        self.busy -= 1
        self._free.release()

    @property
    def saturated(self) -> bool:
        return self.busy >= self.size

    def snapshot(self) -> dict[str, int]:
        return {"size": self.size, "busy": self.busy, "waiting": self.waiting}


class WorkPool(Slots):
    """A thread pool whose slot is held until the thread is really done, even if the awaiting request was
    cancelled meanwhile (a running thread cannot be stopped), so `busy` never undercounts."""

    def __init__(self, name: str, size: int, metrics: Metrics) -> None:
        super().__init__(name, size, metrics)
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None  # started on first use, after a shutdown too

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        await self.acquire()
        loop = asyncio.get_running_loop()
        try:
            if self._threads is None:
                self._threads = concurrent.futures.ThreadPoolExecutor(
                    self.size, thread_name_prefix=f"deltarubric-{self.name}"
                )
            job = self._threads.submit(fn, *args)
        except BaseException:
            self.release()
            raise
        job.add_done_callback(lambda _: _call_soon(loop, self.release))
        return await asyncio.wrap_future(job)  # cancelling this cancels a job not yet started

    def shutdown(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> None:
    try:
        loop.call_soon_threadsafe(fn)
    except RuntimeError:  # the loop is closed: the server is gone, nothing left to count
        pass


class PixelBudget:
    """Decoded image pixels held by all requests together, at most `limit`: a request takes its share (summed from
    the images' headers) before decoding and gives it back once answered, so requests waiting in the judge's queue
    cannot multiply the memory decoded images hold. Takers are served first come, first served, so a large request
    is not starved by a stream of small ones; a share over the whole budget waits for all of it. Event loop only."""

    def __init__(self, limit: int, metrics: Metrics) -> None:
        self.limit, self.held = limit, 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        metrics.pixels_limit.set(limit)
        metrics.pixels_held.set_function(lambda: self.held)
        metrics.pixels_waiting.set_function(lambda: self.waiting)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def take(self, pixels: int) -> int:
        """Wait for `pixels` (at most the whole budget) to be free and hold them; returns what is held."""
        n = min(pixels, self.limit)
        if not self._waiters and self.held + n <= self.limit:
            self.held += n
            return n
        entry = (n, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await entry[1]
        except asyncio.CancelledError:
            if entry[1].done() and not entry[1].cancelled():
                self.release(n)  # granted just as its request gave up
            else:
                self._waiters.remove(entry)
                self._grant()  # it may have been the head that held smaller takers back
            raise
        return n

    def release(self, pixels: int) -> None:
        self.held -= pixels
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.held + self._waiters[0][0] <= self.limit:
            n, future = self._waiters.popleft()
            if not future.done():
                self.held += n
                future.set_result(None)

    def snapshot(self) -> dict[str, int]:
        return {"limit": self.limit, "held": self.held, "waiting": self.waiting}


class PixelLease:
    """One request's hold on the PixelBudget: what it took is given back when the `async with` ends (answered,
    failed or cancelled)."""

    def __init__(self, budget: PixelBudget) -> None:
        self.budget, self.held, self.waiting = budget, 0, False

    async def take(self, pixels: int) -> None:
        self.waiting = True
        self.held += await self.budget.take(pixels)
        self.waiting = False  # only once served: a wait cut short stays marked, so the caller can tell why it ended

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.held:
            self.budget.release(self.held)
            self.held = 0
