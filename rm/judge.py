"""The judge: requests in, verdicts out, through one backend and one method from `rubrics/`.

Stages are batched across requests: every request's stage-1 conversation goes to the backend in one call, then every
stage-2 conversation (which extends stage 1's, so prefix caches reuse the encoded image), and so on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rm.aggregate import Order, aggregate, presentation_orders, unswap, verdict_probability
from rm.backends import Backend, Conversation, Generation, ImagePart, Message, TextPart, VideoPart, make_backend
from rm.backends.base import Part, run_sync
from rm.config import JudgeConfig
from rm.media import MediaError, describe, load_image, local_file
from rm.types import Candidate, Finding, JudgeRequest, OrderResult, Usage, Verdict
from rubrics.parsing import PARSERS, Parsed
from rubrics.prompts import Method, load_method, media_marker, render, split_media

@dataclass
class _Prepared:
    """A request with its media loaded once, shared by both orders and all stages."""

    request: JudgeRequest
    context: list[Part]
    candidates: dict[str, Part | str]  # "a"/"b" -> text or media part


@dataclass
class _Job:
    """One request in one presentation order, carried through the stages."""

    index: int
    order: Order
    prepared: _Prepared
    conversation: Conversation
    raw: dict[str, str] = field(default_factory=dict)
    usage: dict[str, Usage] = field(default_factory=dict)
    parsed: Parsed = field(default_factory=Parsed)
    checklist: list[str] = field(default_factory=list)
    last: Generation | None = None
    error: str | None = None

    def context_vars(self, words: dict[str, dict[str, str]]) -> tuple[dict[str, Any], list[Part]]:
        """Template variables for this order; media become markers indexing the returned parts."""
        media: list[Part] = []

        def show(x: Part | str) -> str:
            if isinstance(x, str):
                return x
            media.append(x)
            return media_marker(len(media) - 1)

        req = self.prepared.request
        first, second = ("a", "b") if self.order == "AB" else ("b", "a")
        variables = {
            "task_type": req.task_type,
            "question": req.question,
            "reference": req.reference,
            "noun": words["noun"][req.a.kind],
            "media_word": words["media_word"][req.task_type],
            "context": [show(p) for p in self.prepared.context],
            "a": show(self.prepared.candidates[first]),
            "b": show(self.prepared.candidates[second]),
            "checklist": self.checklist,
        }
        return variables, media


def _user_turn(text: str, media: list[Part]) -> Message:
    return Message("user", tuple(media[x] if isinstance(x, int) else TextPart(x) for x in split_media(text)))


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
        t0 = time.perf_counter()
        verdicts: list[Verdict | None] = [None] * len(requests)
        jobs: list[_Job] = []
        for i, req in enumerate(requests):
            try:
                prepared = self._prepare(req)
            except Exception as e:  # any failure to load this item's media is its own verdict, never the batch's
                message = str(e) if isinstance(e, ValueError) else f"cannot load media: {type(e).__name__}: {e}"
                verdicts[i] = Verdict(id=req.id, judge=self.config.judge, error=message)
                continue
            for order in presentation_orders(req.id, self.config.sampling.seed, self.config.swap, self.config.order):
                system = [Message.text("system", self.method.system)] if self.method.system else []
                jobs.append(_Job(i, order, prepared, system))

        for stage in self.method.stages:
            active = [j for j in jobs if j.error is None]
            turns = []
            for job in active:
                variables, media = job.context_vars(self.method.words)
                turns.append(_user_turn(render(stage.user, variables), media))
            gens = await self.backend.agenerate(
                [job.conversation + [turn] for job, turn in zip(active, turns)], self.config.sampling
            )
            parse = PARSERS[stage.parser]
            for job, turn, gen in zip(active, turns, gens):
                key = f"{job.order}/{stage.name}"
                job.raw[key], job.usage[key], job.last = gen.text, gen.usage, gen
                if gen.error:
                    job.error = f"backend error in stage {stage.name!r}: {gen.error}"
                    continue
                job.parsed = parse(gen.text)
                if stage.parser == "checklist":
                    job.checklist = job.parsed.checklist
                reply = render(stage.reply, {"checklist": job.checklist}) if stage.reply else gen.text
                job.conversation = job.conversation + [turn, Message.text("assistant", reply)]

        latency = time.perf_counter() - t0
        by_request: dict[int, list[_Job]] = {}
        for job in jobs:
            by_request.setdefault(job.index, []).append(job)
        for i, group in by_request.items():
            verdicts[i] = self._verdict(requests[i], group, latency)
        return [v for v in verdicts if v is not None]

    def _prepare(self, req: JudgeRequest) -> _Prepared:
        if req.task_type not in self.method.task_types:
            raise ValueError(
                f"judge {self.method.name!r} is written for {', '.join(self.method.task_types)}, not {req.task_type}"
            )
        if req.videos or req.a.kind == "video":
            if not self.backend.supports_video:
                raise MediaError(
                    f"video input is not supported by the {self.backend.name!r} backend here: it needs torchvision "
                    "for decoding (install it on a GPU machine), or use --backend openai/vllm"
                )
            for v in list(req.videos) + [c.video for c in (req.a, req.b) if c.video]:
                if not v.startswith(("http://", "https://", "data:")) and not local_file(v).is_file():
                    raise MediaError(f"{describe(v)}: file not found")

        def part(c: Candidate) -> Part | str:
            if c.text is not None:
                return c.text
            return self._image(c.image) if c.image is not None else VideoPart(c.video)  # type: ignore[arg-type]

        context: list[Part] = [self._image(img) for img in req.images] + [VideoPart(v) for v in req.videos]
        return _Prepared(req, context, {"a": part(req.a), "b": part(req.b)})

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
            winner, p_a = unswap(job.order, job.parsed.winner, p_shown)
            ok = job.parsed.ok and job.error is None
            results.append(OrderResult(order=job.order, winner=winner if ok else None, p_a=p_a if ok else None, parse_ok=ok))
        winner, p_a, consistent, parse_ok = aggregate(results)
        # Explanations come from the AB order when it was judged, so 'A' in their text is the caller's A. With
        # order='random' and B shown first, the texts quote the shown labels; orders[0].order says so. Findings'
        # `favors` are always in the caller's labels.
        lead = next((j for j in jobs if j.order == "AB"), jobs[0])
        flip = {"A": "B", "B": "A"} if lead.order == "BA" else {}
        return Verdict(
            id=req.id,
            judge=self.config.judge,
            winner=winner,  # type: ignore[arg-type]
            p_a=p_a,
            consistent=consistent,
            checklist=lead.checklist,
            findings=[
                Finding(item=lead.checklist[k] if k < len(lead.checklist) else "", text=text, favors=flip.get(f, f))  # type: ignore[arg-type]
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
