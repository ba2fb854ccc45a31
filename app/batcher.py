"""Micro-batching in front of the judge, with a bounded queue and a verdict cache.

Trainers send many single-pair requests at once (OpenRLHF and verl: one per rollout). Pairs from concurrent requests
queue here; a worker takes up to `max_batch` of them, after waiting `batch_window_ms` for company, and judges them in
one call, so throughput under concurrency approaches batched throughput. A full queue refuses new work (`Saturated`
-> 503 + Retry-After) instead of growing. Every accepted pair gets exactly one verdict (an error verdict if the
judge call itself failed).

The cache is keyed by the request's full content (media by pixel hash) under the judge's configuration. When the
judge debiases by judging both orders, a pair and its A/B mirror are the same work: both are keyed by one canonical
orientation and the mirror's verdict is derived by relabelling.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass

from PIL import Image

from app.metrics import Metrics
from rm.aggregate import FLIP
from rm.config import verdict_identity
from rm.judge import Judge
from rm.types import Finding, JudgeRequest, OrderResult, Verdict

log = logging.getLogger(__name__)


class Saturated(Exception):
    """The queue is full (or the server is shutting down): answer 503 with Retry-After."""


def content_key(request: JudgeRequest, judge_hash: str) -> str:
    def media(value: object) -> object:
        if isinstance(value, Image.Image):
            return hashlib.sha256(value.tobytes() + str(value.size).encode()).hexdigest()
        return value

    data = request.model_dump(exclude={"id"})
    data["images"] = [media(x) for x in request.images]
    for side in ("a", "b"):
        data[side]["image"] = media(getattr(request, side).image)
    return hashlib.sha256((judge_hash + json.dumps(data, sort_keys=True, default=str)).encode()).hexdigest()


def mirrored(v: Verdict, request_id: str) -> Verdict:
    """The verdict for the A/B-swapped pair. Winner, p_a, orders and findings' `favors` are relabelled; the free
    texts (rationale, findings' text) quote the labels of the orientation that was judged."""
    order = {"AB": "BA", "BA": "AB"}
    rekey = lambda d: {order[k[:2]] + k[2:]: x for k, x in d.items()}  # noqa: E731
    flip_p = lambda p: None if p is None else 1.0 - p  # noqa: E731
    return v.model_copy(
        update={
            "id": request_id,
            "winner": FLIP.get(v.winner, v.winner),  # type: ignore[arg-type]
            "p_a": flip_p(v.p_a),
            "orders": [OrderResult(order=order[o.order], winner=FLIP.get(o.winner, o.winner), p_a=flip_p(o.p_a), parse_ok=o.parse_ok)  # type: ignore[arg-type]
                       for o in reversed(v.orders)],  # fmt: skip
            "findings": [Finding(item=f.item, text=f.text, favors=FLIP.get(f.favors, f.favors)) for f in v.findings],  # type: ignore[arg-type]
            "raw": rekey(v.raw),
            "usage": rekey(v.usage),
        }
    )


@dataclass
class _Pending:
    request: JudgeRequest
    key: str
    future: asyncio.Future[Verdict]


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
    ) -> None:
        """Settings come from ServerSettings (app/settings.py), which holds their defaults."""
        self.judge, self.metrics = judge, metrics
        self.max_batch, self.window_s, self.max_queue = max_batch, window_s, max_queue
        self._slots = asyncio.Semaphore(concurrent_batches)
        self._queue: deque[_Pending] = deque()
        self._inflight: dict[str, asyncio.Future[Verdict]] = {}
        self._cache: OrderedDict[str, Verdict] = OrderedDict()
        self._cache_size = cache_size
        self._call_timeout_s = call_timeout_s
        self._wakeup = asyncio.Event()
        self._closing = False
        self._worker: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        identity = json.dumps(verdict_identity(judge.config), sort_keys=True) + judge.method.sha256
        self._judge_hash = hashlib.sha256(identity.encode()).hexdigest()
        self._symmetric = judge.config.swap  # both orders judged: a pair and its mirror are the same work

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Judge everything already accepted, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._worker:
            await self._worker
        if self._batches:
            await asyncio.gather(*self._batches)

    async def submit(self, requests: list[JudgeRequest]) -> list[Verdict]:
        if self._closing:
            raise Saturated("the server is shutting down")
        plans = [self._plan(req) for req in requests]
        new = {key: (req, flip) for req, (key, flip) in zip(requests, plans) if key not in self._cache and key not in self._inflight}
        if len(self._queue) + len(new) > self.max_queue:
            self.metrics.rejected.inc()
            raise Saturated(f"queue full ({len(self._queue)} pairs waiting)")
        loop = asyncio.get_running_loop()
        for key, (req, flip) in new.items():
            self._inflight[key] = loop.create_future()
            self._queue.append(_Pending(req.swapped() if flip else req, key, self._inflight[key]))
        self.metrics.queue_depth.set(len(self._queue))
        self._wakeup.set()
        # Each answer is taken now (cached verdict or the future that will carry it), before anything is awaited.
        sources = [self._cache.get(key) or self._inflight[key] for key, _ in plans]
        hits = sum(isinstance(x, Verdict) for x in sources)
        self.metrics.cache_hits.inc(hits)
        out = []
        for req, (_, flip), source in zip(requests, plans, sources):
            verdict = source if isinstance(source, Verdict) else await asyncio.shield(source)
            out.append(mirrored(verdict, req.id) if flip else verdict.model_copy(update={"id": req.id}))
        return out

    def _plan(self, req: JudgeRequest) -> tuple[str, bool]:
        """(cache key, whether to judge the mirror instead): with both orders judged, one canonical orientation."""
        key = content_key(req, self._judge_hash)
        if self._symmetric:
            mirror_key = content_key(req.swapped(), self._judge_hash)
            if mirror_key < key:
                return mirror_key, True
        return key, False

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
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            self.metrics.queue_depth.set(len(self._queue))
            task = asyncio.get_running_loop().create_task(self._judge(batch))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _judge(self, batch: list[_Pending]) -> None:
        self.metrics.batch_size.observe(len(batch))
        call = asyncio.get_running_loop().create_task(self.judge.ajudge_batch([p.request for p in batch]))
        # A call slower than the timeout gives its slot back so later batches are judged; it keeps running, and its
        # verdicts still reach the cache (a retry of a timed-out request then answers at once).
        done, _ = await asyncio.wait({call}, timeout=self._call_timeout_s)
        self._slots.release()
        if not done:
            log.warning("a judge call of %d pairs is past %.0f s; its slot is released", len(batch), self._call_timeout_s)
        try:
            verdicts = await call
        except Exception as e:  # a bug or an engine crash: every pair still gets its one answer
            log.exception("judge call failed for a batch of %d", len(batch))
            verdicts = [Verdict(id=p.request.id, judge=self.judge.config.judge, error=f"judge failed: {type(e).__name__}: {e}") for p in batch]
        for p, v in zip(batch, verdicts):
            self.metrics.parse_failures.inc(0 if v.parse_ok or v.error else 1)
            self.metrics.judge_errors.inc(1 if v.error else 0)
            if v.error is None and self._cache_size:
                self._cache[p.key] = v
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            self._inflight.pop(p.key, None)
            if not p.future.done():
                p.future.set_result(v)
