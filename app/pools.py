"""Bounded pools with visible saturation: threads for CPU work, slots for downloads.

The server's own work (parsing bodies, decoding images, hashing, tokenizing) runs in its own thread pool, not in
asyncio's default executor, which the local backends occupy (one thread per generation call, waiting on the engine
lock): a busy engine can then never starve decoding, and a flood of decoding never delays the engine. Downloads get
their own slots on top, so slow image hosts can hold at most those. Each pool reports size, busy and waiting to
/health and /metrics.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import TypeVar

from app.metrics import Metrics

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
                self._threads = concurrent.futures.ThreadPoolExecutor(self.size, thread_name_prefix=f"deltarubric-{self.name}")
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
