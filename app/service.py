"""The reward service: the judge behind the reward routes (/v1/judge, /get_reward, /v1/rewards) and /health.

Each route's method takes the validated body and returns the typed answer. Pairs are built and checked against the
limits in one step (on the event loop when small, else in the work pool), media are loaded under the policy and
budgets, and the pairs go to the micro-batcher, all within the request's deadline. /get_reward answers 200 with
neutral rewards whenever the judge could not decide, because OpenRLHF retries HTTP errors and then silently drops the
sample.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import Request
from PIL import Image

from deltarubric.app.batcher import MicroBatcher
from deltarubric.app.context import ServerContext
from deltarubric.app.errors import InputError
from deltarubric.app.health_protocol import HealthResponse
from deltarubric.app.limits import judge_conversation
from deltarubric.app.media_policy import all_or_none
from deltarubric.app.pools import PixelLease
from deltarubric.app.reward_protocol import GetRewardRequest, GetRewardResponse, JudgeAPIRequest, JudgeAPIResponse
from deltarubric.app.rewards import RewardsPlan, get_reward_answer, reward_requests, rewards_answer, rewards_plan
from deltarubric.rm.judge import Judge
from deltarubric.rm.reward_protocol import RewardsRequest, RewardsResponse
from deltarubric.rm.types import JudgeRequest, Verdict

INLINE_SCORED_PAIRS = 32  # rewards computed from this many pairs' outcomes or fewer on the event loop

Located = list[tuple[JudgeRequest, str]]  # pairs, each with the field that names it in errors


def media_refs(requests: Located) -> tuple[dict[str, str], dict[str, str]]:
    """The distinct image and video references of a request's pairs, each with the first field naming it (errors
    name a field; a group's shared image is loaded once)."""
    images: dict[str, str] = {}
    videos: dict[str, str] = {}
    for req, where in requests:
        for i, x in enumerate(req.images):
            if isinstance(x, str):
                images.setdefault(x, f"{where}.images[{i}]")
        for i, v in enumerate(req.videos):
            videos.setdefault(v, f"{where}.videos[{i}]")
        for side in ("a", "b"):
            c = getattr(req, side)
            if isinstance(c.image, str):
                images.setdefault(c.image, f"{where}.{side}.image")
            elif c.video is not None:
                videos.setdefault(c.video, f"{where}.{side}.video")
    return images, videos


def media_count(requests: Located) -> int:
    """Distinct media a request's pairs name: what is loaded and decoded, so a GRPO group's shared image counts once
    however many pairs show it (each judge call is bounded by --max-batch-pixels on its own)."""
    images, videos = media_refs(requests)
    shown = (x for req, _ in requests for x in [*req.images, req.a.image, req.b.image])
    loaded = {id(x) for x in shown if isinstance(x, Image.Image)}  # in-process callers may pass decoded images
    return len(images) + len(videos) + len(loaded)


def _substitute(req: JudgeRequest, images: dict[str, Any], videos: dict[str, str]) -> JudgeRequest:
    """The request with its references replaced by what the policy loaded: PIL images, so the judge fetches nothing."""
    update: dict[str, Any] = {
        "images": [images.get(x, x) if isinstance(x, str) else x for x in req.images],
        "videos": [videos.get(v, v) for v in req.videos],
    }
    for side in ("a", "b"):
        c = getattr(req, side)
        if isinstance(c.image, str):
            update[side] = c.model_copy(update={"image": images[c.image]})
        elif c.video is not None:
            update[side] = c.model_copy(update={"video": videos[c.video]})
    return req.model_copy(update=update)


class RewardService:
    """The judge and its micro-batchers, over the shared server context."""

    def __init__(self, ctx: ServerContext, judge: Judge, model_name: str) -> None:
        self.ctx, self.judge, self.model_name = ctx, judge, model_name
        self.settings = ctx.settings
        # Rewards are always debiased: each pair in both orders, whatever the judge was started with.
        self.reward_judge = (
            judge if judge.config.swap else Judge(judge.config.model_copy(update={"swap": True}), backend=judge.backend)
        )
        self.batcher = self._batcher(judge)
        self.reward_batcher = self.batcher if self.reward_judge is judge else self._batcher(self.reward_judge)

    def _batcher(self, judge: Judge) -> MicroBatcher:
        s = self.settings
        return MicroBatcher(
            judge,
            self.ctx.metrics,
            max_batch=s.max_batch,
            window_s=s.batch_window_ms / 1000,
            max_queue=s.max_queue,
            concurrent_batches=s.concurrent_batches,
            cache_size=s.cache_size,
            call_timeout_s=s.request_timeout_s,
            max_batch_pixels=s.max_batch_pixels,
            offload=self.ctx.work.run,
        )

    def batchers(self) -> list[MicroBatcher]:
        return list(dict.fromkeys([self.batcher, self.reward_batcher]))

    def start(self) -> None:
        for b in self.batchers():
            b.start()

    async def close(self) -> None:
        """Judge what was accepted within what is left of the drain timeout, then stop the batchers."""
        deadline = self.ctx.drain_deadline()
        for b in self.batchers():
            await b.close(max(0.5, deadline - time.monotonic()))

    # ------------------------------------------------------------------------------------------------ routes

    def health(self) -> HealthResponse:
        ctx = self.ctx
        pools = {p.name: p.snapshot() for p in (ctx.work, ctx.policy.decode, ctx.policy.downloads)}
        queued = sum(b.queued for b in self.batchers())
        saturated = [name for name, p in pools.items() if p["busy"] >= p["size"]]
        if queued >= self.settings.max_queue:
            saturated.append("queue")
        pixels = ctx.policy.pixels.snapshot()
        if pixels["waiting"]:
            saturated.append("pixels")
        return HealthResponse.model_validate(
            {
                "status": "saturated" if saturated else "ok",
                "saturated": saturated,
                "pools": pools,
                "queue": {"pairs": queued, "limit": self.settings.max_queue},
                "pixels": pixels,
            }
        )

    async def judge_pairs(self, body: JudgeAPIRequest, request: Request) -> JudgeAPIResponse:
        """/v1/judge: every request judged as the server's judge is configured."""

        def build() -> Located:
            pairs = [(r, f"requests[{i}]") for i, r in enumerate(body.requests)]
            self.check_pairs(pairs)
            return pairs

        async with self.ctx.deadline() as lease:
            pairs = await self.ctx.cpu(self.ctx.light(request, len(body.requests)), build)
            request.state.pairs = len(pairs)
            verdicts = await self.judge_all(pairs, lease)
        return JudgeAPIResponse(results=verdicts, model=self.model_name)

    async def get_reward(self, body: GetRewardRequest, request: Request) -> GetRewardResponse:
        """/get_reward: each response against its label's reference. Out of time, the answer is still 200: neutral
        rewards flagged `judge_timeout`."""

        def build() -> list[JudgeRequest | None]:
            requests = reward_requests(body)
            self.check_pairs([(r, f"labels[{r.id}]") for r in requests if r is not None])
            return requests

        requests: list[JudgeRequest | None] | None = None
        verdicts: list[Verdict] = []
        timed_out = False
        try:
            async with self.ctx.deadline() as lease:
                requests = await self.ctx.cpu(self.ctx.light(request, len(body.query)), build)
                judged = [(r, f"labels[{r.id}]") for r in requests if r is not None]
                request.state.pairs = len(judged)
                verdicts = await self.judge_all(judged, lease, rewards=True) if judged else []
        except TimeoutError:
            timed_out = True
        return get_reward_answer(len(body.query), requests, verdicts, timed_out)

    async def rewards(self, body: RewardsRequest, request: Request) -> RewardsResponse:
        """/v1/rewards: per-rollout rewards, against references or within groups."""

        def build() -> tuple[RewardsPlan, Located]:
            plan = rewards_plan(body, self.settings.max_pairs_per_request)
            judged = plan.judged()
            self.check_pairs(judged)
            return plan, judged

        async with self.ctx.deadline() as lease:
            plan, judged = await self.ctx.cpu(self.ctx.light(request, 2 * len(body.items)), build)
            request.state.pairs = len(judged)
            verdicts = await self.judge_all(judged, lease, rewards=True) if judged else []
        probs = plan.outcomes(verdicts)
        return await self.ctx.cpu(len(plan.pairs) <= INLINE_SCORED_PAIRS, rewards_answer, plan, body, probs)

    # ------------------------------------------------------------------------------------------------ steps

    def check_pairs(self, requests: Located) -> None:
        """Counts (pairs, distinct media they name, media each pair shows) and each pair's prompt tokens as the judge
        will template it."""
        self.ctx.check_counts(len(requests), media_count(requests))
        limit, most = self.settings.max_input_tokens, self.settings.max_images_per_request
        for req, where in requests:
            # Per pair every occurrence counts: the judge sees each one (the same image listed 10,000 times is
            # decoded once but would be 10,000 images in one prompt).
            shown = len(req.images) + len(req.videos) + sum(c.kind != "text" for c in (req.a, req.b))
            if shown > most:
                raise InputError(f"{where}: {shown} images in one pair; the limit is {most}", f"{where}.images", 413)
            self.ctx.tokens.check(judge_conversation(self.judge.method, req), limit, where)

    async def resolve(self, requests: Located, lease: PixelLease) -> list[JudgeRequest]:
        policy = self.ctx.policy
        images, videos = media_refs(requests)
        loaded = await policy.images(images, lease)
        checked = await all_or_none([policy.video(v, where) for v, where in videos.items()])
        return [_substitute(r, loaded, dict(zip(videos, checked))) for r, _ in requests]

    async def judge_all(self, requests: Located, lease: PixelLease, rewards: bool = False) -> list[Verdict]:
        """Load media for and judge a request's pairs (checked by `check_pairs` already); run within the context's
        `deadline`, which cancels downloads and the judge call (once nobody else waits for it) if it comes to that."""
        batcher = self.reward_batcher if rewards else self.batcher
        return await batcher.submit(await self.resolve(requests, lease))
