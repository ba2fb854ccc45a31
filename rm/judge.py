"""The judge: requests in, verdicts out, through one backend and one method from `rubrics/`.

Stages are batched across requests: every request's stage-1 conversation goes to the backend in one call, then every
stage-2 conversation (which extends stage 1's, so prefix caches reuse the encoded image), and so on. The batch calls
(`judge`, `ajudge_batch`, ...) and the stream (`astream`) run the same stage loop, `_events`: the stream yields each
stage's reply as the stage finishes, then the verdict; the batch calls keep only the verdicts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from deltarubric.rm.aggregate import Order, aggregate, flip_winner, presentation_orders, unswap, verdict_probability
from deltarubric.rm.backends import Backend, Conversation, Generation, ImagePart, Message, TextPart, make_backend
from deltarubric.rm.backends.base import run_sync
from deltarubric.rm.config import JudgeConfig
from deltarubric.rm.media import load_image
from deltarubric.rm.prompting import PreparedRequest, assistant_reply, prepare, system_messages, user_turn
from deltarubric.rm.types import Finding, JudgeRequest, OrderResult, Usage, Verdict
from deltarubric.rubrics.parsing import PARSERS, Parsed, Product
from deltarubric.rubrics.prompts import Method, load_method


@dataclass(frozen=True)
class StageResult:
    """One stage's reply for one request shown in one order: what `Judge.astream` yields as each stage finishes.

    Every order of every request in a call runs a stage in one batched backend call; `seconds` is that call's wall
    time, shared by the replies it returned.
    """

    request_id: str
    stage: str  # the stage's name in the prompt file: 'planner', 'verifier', 'judge'
    produces: Product  # 'checklist' (shown to the later stages) or 'verdict' (the method's answer)
    shown_order: Order  # 'AB', or 'BA': the caller's B shown as A
    prompt: str  # the stage's user turn as text, each media part written as <image> or <video>
    text: str  # the model's reply as written ('' after a backend error)
    parsed: Parsed  # the reply as the stage's parser read it, in the labels shown
    usage: Usage
    seconds: float
    error: str | None = None  # the backend failed on this conversation; later stages of this order do not run


JudgeEvent = StageResult | Verdict

# Media are prepared in worker threads one at a time: a caller may pass one lazily opened PIL image to concurrent
# judgments, and PIL does not lock an image while it decodes it.
_MEDIA_LOCK = threading.Lock()


def prompt_summary(turn: Message) -> str:
    """A user turn as plain text, media parts written as <image> / <video>."""
    return "".join(
        p.text if isinstance(p, TextPart) else "<image>" if isinstance(p, ImagePart) else "<video>"
        for p in turn.content
    )


@dataclass
class _Job:
    """One request in one presentation order, carried through the stages."""

    index: int
    shown_order: Order
    prepared: PreparedRequest
    conversation: Conversation
    raw: dict[str, str] = field(default_factory=dict)
    usage: dict[str, Usage] = field(default_factory=dict)
    parsed: Parsed = field(default_factory=Parsed)
    checklist: list[str] = field(default_factory=list)
    last: Generation | None = None
    error: str | None = None


class Judge:
    """A pairwise judge. Build from a `JudgeConfig`; pass `backend` to share one engine between judges."""

    def __init__(self, config: JudgeConfig, backend: Backend | None = None) -> None:
        self.config = config
        self.method: Method = load_method(config.judge)
        self.backend = backend or make_backend(config)

    def judge(self, request: JudgeRequest) -> Verdict:
        return self.judge_batch([request])[0]

    def judge_batch(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        return run_sync(self.ajudge_batch(requests))

    async def ajudge(self, request: JudgeRequest) -> Verdict:
        return (await self.ajudge_batch([request]))[0]

    async def ajudge_batch(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        verdicts: dict[int, Verdict] = {}
        async for index, event in self._events(requests):
            if isinstance(event, Verdict):
                verdicts[index] = event
        return [verdicts[i] for i in range(len(requests))]

    async def astream(self, request: JudgeRequest) -> AsyncIterator[JudgeEvent]:
        """Judge one request, yielding a `StageResult` for each order as each stage finishes (orders in the order
        judged, 'AB' first), then the `Verdict`, always last. An item whose media cannot be loaded yields only its
        verdict (with `error`); a backend error ends that order's stages, its StageResult saying why."""
        async for _, event in self._events([request]):
            yield event

    async def _events(self, requests: Sequence[JudgeRequest]) -> AsyncIterator[tuple[int, JudgeEvent]]:
        """(request index, event): each stage's results as the stage finishes, then every request's verdict."""
        t0 = time.perf_counter()
        paused = 0.0  # time suspended at a yield: the consumer's (a page rendered between stages), not the judge's
        jobs: list[_Job] = []
        for i, req in enumerate(requests):
            try:
                # Off the event loop: decoding a large upload takes seconds, and the loop may serve others (the demo
                # consumes `astream` on Gradio's loop, the reward server its requests).
                prepared = await asyncio.to_thread(self._prepare, req)
            except Exception as e:  # any failure to load this item's media is its own verdict, never the batch's
                message = str(e) if isinstance(e, ValueError) else f"cannot load media: {type(e).__name__}: {e}"
                handed = time.perf_counter()
                yield i, Verdict(id=req.id, judge=self.config.judge, error=message)
                paused += time.perf_counter() - handed
                continue
            seed, swap, presentation = self.config.sampling.seed, self.config.swap, self.config.presentation
            for order in presentation_orders(req.id, seed, swap, presentation):
                jobs.append(_Job(i, order, prepared, system_messages(self.method)))

        for stage in self.method.stages:
            active = [j for j in jobs if j.error is None]
            if not active:
                break
            turns = [user_turn(self.method, stage, job.prepared, job.shown_order, job.checklist) for job in active]
            started = time.perf_counter()
            gens = await self.backend.agenerate(
                [job.conversation + [turn] for job, turn in zip(active, turns)], self.config.sampling
            )
            seconds = time.perf_counter() - started
            for job, turn, gen in zip(active, turns, gens):
                key = f"{job.shown_order}/{stage.name}"
                job.raw[key], job.usage[key], job.last = gen.text, gen.usage, gen
                parsed = Parsed()
                if gen.error:
                    job.error = f"backend error in stage {stage.name!r}: {gen.error}"
                else:
                    parsed = job.parsed = PARSERS[stage.parser](gen.text)
                    if stage.produces == "checklist":
                        job.checklist = parsed.checklist
                    job.conversation = job.conversation + [turn, assistant_reply(stage, gen.text, job.checklist)]
                result = StageResult(
                    request_id=requests[job.index].id,
                    stage=stage.name,
                    produces=stage.produces,
                    shown_order=job.shown_order,
                    prompt=prompt_summary(turn),
                    text=gen.text,
                    parsed=parsed,
                    usage=gen.usage,
                    seconds=seconds,
                    error=job.error if gen.error else None,
                )
                handed = time.perf_counter()
                yield job.index, result
                paused += time.perf_counter() - handed

        latency = time.perf_counter() - t0 - paused
        by_request: dict[int, list[_Job]] = {}
        for job in jobs:
            by_request.setdefault(job.index, []).append(job)
        for i, group in by_request.items():
            yield i, self._verdict(requests[i], group, latency)

    def _prepare(self, req: JudgeRequest) -> PreparedRequest:
        with _MEDIA_LOCK:
            return prepare(
                self.method,
                req,
                self._image,
                no_video_backend=None if self.backend.supports_video else self.backend.name,
            )

    def _image(self, ref: Any) -> ImagePart:
        cfg = self.config
        return ImagePart(load_image(ref, max_input_pixels=cfg.max_input_pixels, max_pixels=cfg.max_pixels))

    def _verdict(self, req: JudgeRequest, jobs: list[_Job], latency: float) -> Verdict:
        results = []
        for job in jobs:
            p_shown = None
            if job.parsed.ok and job.last is not None and job.last.tokens:
                joined = "".join(t.token for t in job.last.tokens)
                pos = PARSERS[self.method.stages[-1].parser](joined).winner_pos
                p_shown = None if pos is None else verdict_probability(job.last.tokens, pos)
            winner, p_a = unswap(job.shown_order, job.parsed.winner, p_shown)
            ok = job.parsed.ok and job.error is None
            results.append(
                OrderResult(
                    shown_order=job.shown_order,
                    winner=winner if ok else None,
                    p_a=p_a if ok else None,
                    parse_ok=ok,
                    label=job.parsed.label if job.error is None else None,
                )
            )
        winner, p_a, consistent, parse_ok = aggregate(results)
        # Explanations come from the AB order when it was judged, so 'A' in their text is the caller's A. With
        # presentation 'random' and B shown first, the texts quote the shown labels; orders[0] says which was shown.
        # Findings' `favors` are always in the caller's labels.
        lead = next((j for j in jobs if j.shown_order == "AB"), jobs[0])
        return Verdict(
            id=req.id,
            judge=self.config.judge,
            winner=winner,  # type: ignore[arg-type]
            p_a=p_a,
            consistent=consistent,
            checklist=lead.checklist,
            findings=[
                Finding(
                    item=lead.checklist[k] if k < len(lead.checklist) else "",
                    text=text,
                    favors=flip_winner(f) if lead.shown_order == "BA" else f,  # type: ignore[arg-type]
                )
                for k, (text, f) in enumerate(lead.parsed.findings)
            ],
            rationale=lead.parsed.rationale,
            task_type_pred=lead.parsed.task_type,
            orders=results,
            raw={k: v for j in jobs for k, v in j.raw.items()},
            parse_ok=parse_ok,
            usage={k: v for j in jobs for k, v in j.usage.items()},
            latency_s=round(latency, 4),
            error=next((j.error for j in jobs if j.error), None),
        )
