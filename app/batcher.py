"""Micro-batching in front of the judge, with a bounded queue and a verdict cache.

Trainers send many single-pair requests at once (OpenRLHF and verl: one per rollout). Pairs from concurrent requests
queue here; a worker takes up to `max_batch` of them (and at most `max_batch_pixels` decoded image pixels), after
waiting `batch_window_ms` for company, and judges them in one call, so throughput under concurrency approaches
batched throughput. A full queue refuses new work (`Saturated` -> 503 + Retry-After) instead of growing. Every
accepted pair gets exactly one verdict: an error verdict if the judge call failed, was stopped past the timeout, or
the server shut down before judging it.

Work nobody waits for is not done: each queued pair counts the requests waiting for it, and when the last of them
gives up (its request timed out or was cancelled) the pair leaves the queue, and a running judge call whose pairs all
have nobody waiting is cancelled. A call still running at `call_timeout_s` is cancelled too: everyone waiting for it
has been answered by then. Otherwise a local engine would keep generating for nobody while later batches wait for it
(the transformers backend stops at its next token; a remote request is closed).

The cache is keyed by the request's full content (media by pixel hash) under the judge's configuration. When the
judge debiases by judging both orders, a pair and its A/B mirror are the same work: both are keyed by one canonical
orientation and the mirror's verdict is derived by relabelling. Keys are computed off the event loop (hashing pixels
is CPU work proportional to the images).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from deltarubric.app.metrics import Metrics
from deltarubric.rm.aggregate import flip_order, flip_winner
from deltarubric.rm.config import verdict_identity
from deltarubric.rm.judge import Judge
from deltarubric.rm.types import JudgeRequest, Verdict

log = logging.getLogger(__name__)

Offload = Callable[..., Awaitable[Any]]  # runs a blocking function off the event loop: (fn, *args) -> result


SHUT_DOWN = "the server shut down before judging this pair"
ABANDONED = "every request waiting for this pair had gone"


class Saturated(Exception):
    """The queue is full (or the server is shutting down): answer 503 with Retry-After."""


def content_key(request: JudgeRequest, judge_hash: str, hashes: dict[int, str] | None = None) -> str:
    """`hashes` memoises pixel hashes by image object, for images shared by many pairs of one request."""
    memo = {} if hashes is None else hashes

    def media(value: object) -> object:
        if isinstance(value, Image.Image):
            if id(value) not in memo:
                memo[id(value)] = hashlib.sha256(value.tobytes() + str(value.size).encode()).hexdigest()
            return memo[id(value)]
        return value

    data = request.model_dump(exclude={"id"})
    data["images"] = [media(x) for x in request.images]
    for side in ("a", "b"):
        data[side]["image"] = media(getattr(request, side).image)
    return hashlib.sha256((judge_hash + json.dumps(data, sort_keys=True, default=str)).encode()).hexdigest()


def pixels(request: JudgeRequest) -> int:
    """Decoded image pixels a pair carries into a judge call."""
    images = [*request.images, request.a.image, request.b.image]
    return sum(x.width * x.height for x in images if isinstance(x, Image.Image))


def mirrored(v: Verdict, request_id: str) -> Verdict:
    """The verdict for the A/B-swapped pair. Winner, p_a, orders and findings' `favors` are relabelled; each order's
    `label` and the free texts (rationale, findings' text) are in the labels shown, which the mirror shows the same."""

    def rekey(d: dict[str, Any]) -> dict[str, Any]:
        # the mirror pair's 'BA' shows what this pair's 'AB' showed
        return {flip_order(k[:2]) + k[2:]: x for k, x in d.items()}  # type: ignore[arg-type]

    def flip_p(p: float | None) -> float | None:
        return None if p is None else 1.0 - p

    orders = [
        o.model_copy(
            update={"shown_order": flip_order(o.shown_order), "winner": flip_winner(o.winner), "p_a": flip_p(o.p_a)}
        )
        for o in reversed(v.orders)
    ]
    findings = [f.model_copy(update={"favors": flip_winner(f.favors)}) for f in v.findings]
    return v.model_copy(
        update={
            "id": request_id,
            "winner": flip_winner(v.winner),
            "p_a": flip_p(v.p_a),
            "orders": orders,
            "findings": findings,
            "raw": rekey(v.raw),
            "usage": rekey(v.usage),
        }
    )


@dataclass(eq=False)  # compared by identity: removed from the queue as itself
class _Pending:
    request: JudgeRequest
    key: str
    future: asyncio.Future[Verdict]
    pixels: int = 0
    waiters: int = 0  # requests awaiting this verdict now
    batch: _Batch | None = None  # set once taken from the queue


@dataclass(eq=False)
class _Batch:
    pairs: list[_Pending]
    call: asyncio.Task[list[Verdict]] | None = None
    abandoned: bool = False  # cancelled because nobody waited for any of its pairs
    stopping: bool = False  # cancelled (for nobody or past the timeout), counted once


class MicroBatcher:
    def __init__(
        self,
        judge: Judge,
        metrics: Metrics,
        *,
        max_batch: int,
        window_s: float,
        max_queue: int,
        concurrent_batches: int,
        cache_size: int,
        call_timeout_s: float,
        max_batch_pixels: int | None = None,
        offload: Offload | None = None,
    ) -> None:
        """Settings come from ServerSettings (app/settings.py), which holds their defaults."""
        self.judge, self.metrics = judge, metrics
        self.max_batch, self.window_s, self.max_queue = max_batch, window_s, max_queue
        self.max_batch_pixels = max_batch_pixels
        self._offload: Offload = offload or asyncio.to_thread
        self._slots = asyncio.Semaphore(concurrent_batches)
        self._queue: deque[_Pending] = deque()
        self._inflight: dict[str, _Pending] = {}  # by key: queued or being judged
        self._cache: OrderedDict[str, Verdict] = OrderedDict()
        self._cache_size = cache_size
        self._call_timeout_s = call_timeout_s
        self._wakeup = asyncio.Event()
        self._closing = False
        self._worker: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self._pending_batches: dict[asyncio.Task[None], list[_Pending]] = {}
        identity = json.dumps(verdict_identity(judge.config), sort_keys=True) + judge.method.sha256
        self._judge_hash = hashlib.sha256(identity.encode()).hexdigest()
        self._symmetric = judge.config.swap  # both orders judged: a pair and its mirror are the same work

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def close(self, timeout_s: float | None = None) -> None:
        """Judge everything already accepted, then stop. Past `timeout_s` (a wedged engine), stop anyway: running
        calls are cancelled and every pair not judged yet gets an error verdict, so no waiter hangs."""
        self._closing = True
        self._wakeup.set()

        async def drain() -> None:
            if self._worker:
                await self._worker
            while self._batches:
                await asyncio.gather(*self._batches)

        draining = asyncio.get_running_loop().create_task(drain())
        try:
            await asyncio.wait_for(asyncio.shield(draining), timeout_s)
            return
        except TimeoutError:
            pass
        running = sum(map(len, self._pending_batches.values()))
        log.error(
            "shutdown: %d queued and %d running pairs not judged within %.3g s; answering them with errors",
            len(self._queue),
            running,
            timeout_s,
        )
        draining.cancel()
        if self._worker:
            self._worker.cancel()
        for task in list(self._batches):
            task.cancel()  # each answers its own pairs as it stops (see _judge)
        self._answer(list(self._queue), SHUT_DOWN)
        self._queue.clear()
        await asyncio.gather(draining, *self._batches, return_exceptions=True)

    async def submit(self, requests: list[JudgeRequest]) -> list[Verdict]:
        if self._closing:
            raise Saturated("the server is shutting down")
        # Hashing a few small images is quicker than a thread hop; many pairs or big images go off the event loop.
        small = len(requests) <= 8 and sum(map(pixels, requests)) <= 1_000_000
        plans = self._plan_all(requests) if small else await self._offload(self._plan_all, requests)
        if self._closing:
            raise Saturated("the server is shutting down")
        new = {
            key: (req, flip)
            for req, (key, flip) in zip(requests, plans)
            if key not in self._cache and key not in self._inflight
        }
        if len(self._queue) + len(new) > self.max_queue:
            self.metrics.rejected.inc()
            raise Saturated(f"queue full ({len(self._queue)} pairs waiting)")
        loop = asyncio.get_running_loop()
        for key, (req, flip) in new.items():
            self._inflight[key] = _Pending(req.swapped() if flip else req, key, loop.create_future(), pixels(req))
            self._queue.append(self._inflight[key])
        self.metrics.queue_depth.set(len(self._queue))
        self._wakeup.set()
        # Each answer is taken now (cached verdict or the pair that will carry it), before anything is awaited, and
        # this request counted among the pair's waiters until it has the verdict or gives up.
        sources = [self._cache.get(key) or self._inflight[key] for key, _ in plans]
        hits = sum(isinstance(x, Verdict) for x in sources)
        self.metrics.cache_hits.inc(hits)
        waiting = [x for x in sources if isinstance(x, _Pending)]
        for p in waiting:
            p.waiters += 1
        try:
            out = []
            for req, (_, flip), source in zip(requests, plans, sources):
                verdict = source if isinstance(source, Verdict) else await asyncio.shield(source.future)
                out.append(mirrored(verdict, req.id) if flip else verdict.model_copy(update={"id": req.id}))
            return out
        finally:
            for p in waiting:
                self._leave(p)

    def _leave(self, p: _Pending) -> None:
        """A request stops waiting for `p` (answered, or gave up). The last to go takes the work with it: a queued
        pair leaves the queue, and a running call none of whose pairs anyone waits for is cancelled."""
        p.waiters -= 1
        if p.waiters > 0 or p.future.done():
            return
        if p.batch is None:
            self._queue.remove(p)
            self.metrics.queue_depth.set(len(self._queue))
            self._settle(p, Verdict(id=p.request.id, judge=self.judge.config.judge, error=ABANDONED))
            return
        batch = p.batch
        if batch.call is not None and not batch.stopping and all(q.waiters == 0 for q in batch.pairs):
            log.warning(
                "a judge call of %d pairs: every request waiting for it has gone; cancelling it", len(batch.pairs)
            )
            batch.abandoned = batch.stopping = True
            self.metrics.cancelled_calls.inc()
            for q in batch.pairs:  # a request arriving for one of these pairs now gets a fresh one, not this error
                if self._inflight.get(q.key) is q:
                    del self._inflight[q.key]
            batch.call.cancel()

    def _plan_all(self, requests: list[JudgeRequest]) -> list[tuple[str, bool]]:
        hashes: dict[int, str] = {}
        return [self._plan(req, hashes) for req in requests]

    def _plan(self, req: JudgeRequest, hashes: dict[int, str] | None = None) -> tuple[str, bool]:
        """(cache key, whether to judge the mirror instead): with both orders judged, one canonical orientation."""
        key = content_key(req, self._judge_hash, hashes)
        if self._symmetric:
            mirror_key = content_key(req.swapped(), self._judge_hash, hashes)
            if mirror_key < key:
                return mirror_key, True
        return key, False

    def _take_batch(self) -> list[_Pending]:
        """Up to max_batch pairs and max_batch_pixels decoded pixels (always at least one pair)."""
        batch, total = [self._queue.popleft()], 0
        total = batch[0].pixels
        while self._queue and len(batch) < self.max_batch:
            if self.max_batch_pixels is not None and total + self._queue[0].pixels > self.max_batch_pixels:
                break
            batch.append(self._queue.popleft())
            total += batch[-1].pixels
        return batch

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if len(self._queue) < self.max_batch and not self._closing:
                await asyncio.sleep(self.window_s)  # let concurrent requests join this batch
            await self._slots.acquire()
            if not self._queue:  # answered by a shutdown meanwhile
                self._slots.release()
                continue
            batch = self._take_batch()
            self.metrics.queue_depth.set(len(self._queue))
            taken = _Batch(batch)
            for p in batch:
                p.batch = taken  # out of the queue: a request giving up from now on cancels the call instead
            task = asyncio.get_running_loop().create_task(self._judge(taken))
            self._batches.add(task)
            self._pending_batches[task] = batch
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        self._pending_batches.pop(task, None)

    async def _judge(self, taken: _Batch) -> None:
        batch = taken.pairs
        if all(p.waiters == 0 for p in batch):  # every request gave up between taking the batch and now
            self._slots.release()
            self._answer(batch, ABANDONED)
            return
        self.metrics.batch_size.observe(len(batch))
        call = asyncio.get_running_loop().create_task(self.judge.ajudge_batch([p.request for p in batch]))
        taken.call = call
        started = time.monotonic()
        try:
            done, _ = await asyncio.wait({call}, timeout=self._call_timeout_s)
        except asyncio.CancelledError:  # shutdown gave up on this batch: stop the engine too, answer the pairs
            call.cancel()
            self._answer(batch, SHUT_DOWN)
            raise
        finally:
            self._slots.release()
        if not done and not taken.stopping:
            log.warning("a judge call of %d pairs is past %g s; cancelling it", len(batch), self._call_timeout_s)
            taken.stopping = True
            self.metrics.cancelled_calls.inc()
            call.cancel()
        if not done:
            await asyncio.wait({call})
        if call.cancelled():
            waited = time.monotonic() - started
            why = ABANDONED if taken.abandoned else f"past the {self._call_timeout_s:g} s request timeout"
            self._answer(batch, f"judge call stopped after {waited:.0f} s: {why}")
            return
        try:
            verdicts = call.result()
        except Exception as e:  # a bug or an engine crash: every pair still gets its one answer
            log.exception("judge call failed for a batch of %d", len(batch))
            verdicts = [
                Verdict(id=p.request.id, judge=self.judge.config.judge, error=f"judge failed: {type(e).__name__}: {e}")
                for p in batch
            ]
        for p, v in zip(batch, verdicts):
            self.metrics.parse_failures.inc(0 if v.parse_ok or v.error else 1)
            self.metrics.judge_errors.inc(1 if v.error else 0)
            if v.error is None and self._cache_size:
                self._cache[p.key] = v
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            self._settle(p, v)

    def _answer(self, pending: list[_Pending], error: str) -> None:
        for p in pending:
            self.metrics.judge_errors.inc()
            self._settle(p, Verdict(id=p.request.id, judge=self.judge.config.judge, error=error))

    def _settle(self, p: _Pending, v: Verdict) -> None:
        if self._inflight.get(p.key) is p:
            del self._inflight[p.key]
        if not p.future.done():
            p.future.set_result(v)
