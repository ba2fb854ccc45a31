"""The HTTP app: reward routes for RL trainers, OpenAI-compatible routes, health and metrics, over one judge.

Handlers are thin: read the body, then parse it, check it against the limits and build the pairs in one step (in the
server's work pool unless it is small); load media under the policy and budgets; submit the pairs to the
micro-batcher; shape the answer. The event loop only moves bytes and futures and does work too small for a thread
hop, so no request, however large or malformed, stalls the others or /health.

Every error has one JSON shape, `{"error": {"message", "type", "param", "code"}}`; input errors are 4xx, a full queue
is 503 with Retry-After, anything unexpected a counted JSON 500, and /get_reward answers 200 with neutral rewards
whenever the judge could not decide, because OpenRLHF retries HTTP errors and then silently drops the sample.
"""

from __future__ import annotations

import asyncio
import email.message
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from deltarubric.app.batcher import MicroBatcher, Saturated
from deltarubric.app.edge import BodyLimit, DrainingServer, Edge, configure_access_log, server_config
from deltarubric.app.errors import InputError, error_response
from deltarubric.app.limits import TokenCounter, judge_conversation
from deltarubric.app.media_policy import MediaPolicy, all_or_none
from deltarubric.app.metrics import Metrics
from deltarubric.app.pools import PixelLease, WorkPool
from deltarubric.app.protocol import ChatCompletionRequest, ChatMessage, completion_response
from deltarubric.app.reward_protocol import GetRewardRequest, JudgeAPIRequest, RewardsRequest
from deltarubric.app.rewards import (
    IMAGE_ONLY_QUESTION,
    NEUTRAL,
    bradley_terry,
    p_a_wins,
    question_from_prompt,
    response_from_query,
    win_rates,
)
from deltarubric.app.settings import ServerSettings
from deltarubric.rm.backends import Backend, Conversation, ImagePart, Message, TextPart, VideoPart
from deltarubric.rm.config import SamplingConfig
from deltarubric.rm.judge import Judge
from deltarubric.rm.media import MediaError
from deltarubric.rm.types import JudgeRequest, Verdict

GREEDY_BELOW = 1e-5  # vLLM's _SAMPLING_EPS
INLINE_BODY_BYTES = 64 * 1024  # parsed on the event loop: about a millisecond, less than a thread hop
INLINE_TEXT_CHARS = 16 * 1024  # a prompt (or body) this short is tokenized on the event loop
INLINE_PAIRS = 8  # built and checked (tokens counted) on the event loop: about a millisecond a pair
INLINE_MESSAGES = 16  # a chat of this many messages or fewer (and a short body) is checked on the event loop
LARGE_BODY_BYTES = 1 << 20  # parsing more takes long enough to count against `large_bodies`
ROUTES = ("/get_reward", "/v1/judge", "/v1/rewards", "/v1/chat/completions", "/v1/models", "/health", "/metrics")
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

__all__ = ["InputError", "ServerState", "build_app", "error_response", "run_server"]


# ---------------------------------------------------------------------------------------------------- bodies


def _json_content_type(value: str | None) -> bool:
    """As FastAPI decides: no content type, application/json or application/*+json (any charset)."""
    if not value:
        return True
    message = email.message.Message()
    message["content-type"] = value
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def parse_body(raw: bytes, model: type[M], precheck: Callable[[Any], None] | None = None) -> M:
    """JSON bytes -> a validated model, with `precheck` (cheap size limits) between the two, so a body of 20,000
    items is refused before 20,000 are validated. Malformed JSON, however deep, is a 400."""
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "a JSON body is required"}])
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": f"not valid JSON ({type(e).__name__})"}]
        ) from e
    if precheck is not None:
        precheck(data)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False, include_input=False)) from e
    except RecursionError as e:
        raise RequestValidationError([{"type": "too_deep", "loc": ("body",), "msg": "nested too deeply"}]) from e


def _count(field_name: str, limit: int, what: str) -> Callable[[Any], None]:
    def check(data: Any) -> None:
        items = data.get(field_name) if isinstance(data, dict) else None
        if isinstance(items, list) and len(items) > limit:
            raise InputError(f"{len(items)} {what} in one request; the limit is {limit}", field_name, 413)

    return check


# ---------------------------------------------------------------------------------------------------- media


def media_refs(requests: list[tuple[JudgeRequest, str]]) -> tuple[dict[str, str], dict[str, str]]:
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


def media_count(requests: list[tuple[JudgeRequest, str]]) -> int:
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


# ---------------------------------------------------------------------------------------------------- state


@dataclass
class RewardsPlan:
    """A /v1/rewards request turned into pairs: (i, j) rollouts (j None: the reference), their judge requests (None:
    decided without the judge) and fixed outcomes, and each group's pair indices."""

    pairs: list[tuple[int, int | None]]
    requests: list[JudgeRequest | None]
    fixed: list[float | None]
    groups: list[tuple[list[int], list[int]]] = field(default_factory=list)  # (members, indices into pairs)


class ServerState:
    """What handlers share: the judge, its batchers, the pools, the media policy, metrics and settings."""

    def __init__(self, judge: Judge, settings: ServerSettings) -> None:
        self.judge, self.settings = judge, settings
        self.metrics = Metrics()
        self.work = WorkPool("work", settings.work_threads, self.metrics)
        # Large bodies take at most half the work threads, so small requests always find one.
        self.large_bodies = asyncio.Semaphore(max(1, settings.work_threads // 2))
        self.policy = MediaPolicy(settings, self.metrics)
        self.tokens = TokenCounter(judge.backend)
        # Rewards are always debiased: each pair in both orders, whatever the judge was started with.
        self.reward_judge = (
            judge if judge.config.swap else Judge(judge.config.model_copy(update={"swap": True}), backend=judge.backend)
        )
        self.batcher = self._batcher(judge)
        self.chat_inflight = 0  # OpenAI-route generations running; bounded like the judge queue
        self.reward_batcher = self.batcher if self.reward_judge is judge else self._batcher(self.reward_judge)
        self.shutdown_deadline: float | None = None  # set on SIGTERM by run_server's DrainingServer

    def _batcher(self, judge: Judge) -> MicroBatcher:
        s = self.settings
        return MicroBatcher(
            judge,
            self.metrics,
            max_batch=s.max_batch,
            window_s=s.batch_window_ms / 1000,
            max_queue=s.max_queue,
            concurrent_batches=s.concurrent_batches,
            cache_size=s.cache_size,
            call_timeout_s=s.request_timeout_s,
            max_batch_pixels=s.max_batch_pixels,
            offload=self.work.run,
        )

    def batchers(self) -> list[MicroBatcher]:
        return list(dict.fromkeys([self.batcher, self.reward_batcher]))

    async def close(self) -> None:
        """Drain the batchers within what is left of the drain timeout, then release pools and connections."""
        deadline = self.shutdown_deadline or time.monotonic() + self.settings.drain_s
        for b in self.batchers():
            await b.close(max(0.5, deadline - time.monotonic()))
        await self.policy.close()
        self.work.shutdown()

    def health(self) -> dict[str, Any]:
        pools = {p.name: p.snapshot() for p in (self.work, self.policy.decode, self.policy.downloads)}
        queued = sum(b.queued for b in self.batchers())
        saturated = [name for name, p in pools.items() if p["busy"] >= p["size"]]
        if queued >= self.settings.max_queue:
            saturated.append("queue")
        pixels = self.policy.pixels.snapshot()
        if pixels["waiting"]:
            saturated.append("pixels")
        return {
            "status": "saturated" if saturated else "ok",
            "saturated": saturated,
            "pools": pools,
            "queue": {"pairs": queued, "limit": self.settings.max_queue},
            "pixels": pixels,
        }

    async def parse(self, request: Request, model: type[M], precheck: Callable[[Any], None] | None = None) -> M:
        """The body, validated: on the event loop when small (a thread hop would cost more), else in the work pool,
        large ones in at most half of it. The body's size is kept in `request.state.body_bytes` (see `light`)."""
        if not _json_content_type(request.headers.get("content-type")):
            raise InputError("the body must be JSON (Content-Type: application/json)", "content-type", 415)
        raw = await request.body()
        request.state.body_bytes = len(raw)
        if len(raw) <= INLINE_BODY_BYTES:
            return parse_body(raw, model, precheck)
        if len(raw) < LARGE_BODY_BYTES:
            return await self.work.run(parse_body, raw, model, precheck)
        async with self.large_bodies:
            return await self.work.run(parse_body, raw, model, precheck)

    @staticmethod
    def light(request: Request, pairs: int) -> bool:
        """Whether building and checking a parsed body's pairs (tokens counted, about a millisecond a pair, more for
        long texts) is small enough for the event loop."""
        return pairs <= INLINE_PAIRS and request.state.body_bytes <= INLINE_TEXT_CHARS

    async def cpu(self, inline: bool, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` here when `inline` (small work: building and checking a few pairs, counting a short prompt's
        tokens, about a millisecond each), else in the work pool."""
        return fn(*args) if inline else await self.work.run(fn, *args)

    def check_counts(self, pairs: int, media: int) -> None:
        s = self.settings
        if pairs > s.max_pairs_per_request:
            raise InputError(f"{pairs} pairs in one request; the limit is {s.max_pairs_per_request}", "requests", 413)
        if media > s.max_images_per_request:
            raise InputError(f"{media} images in one request; the limit is {s.max_images_per_request}", "images", 413)

    def check_pairs(self, requests: list[tuple[JudgeRequest, str]]) -> None:
        """Counts (pairs, distinct media they name, media each pair shows) and each pair's prompt tokens as the judge
        will template it."""
        self.check_counts(len(requests), media_count(requests))
        limit, most = self.settings.max_input_tokens, self.settings.max_images_per_request
        for req, where in requests:
            # Per pair every occurrence counts: the judge sees each one (the same image listed 10,000 times is
            # decoded once but would be 10,000 images in one prompt).
            shown = len(req.images) + len(req.videos) + sum(c.kind != "text" for c in (req.a, req.b))
            if shown > most:
                raise InputError(f"{where}: {shown} images in one pair; the limit is {most}", f"{where}.images", 413)
            self.tokens.check(judge_conversation(self.judge.method, req), limit, where)

    async def resolve(self, requests: list[tuple[JudgeRequest, str]], lease: PixelLease) -> list[JudgeRequest]:
        images, videos = media_refs(requests)
        loaded = await self.policy.images(images, lease)
        checked = await all_or_none([self.policy.video(v, where) for v, where in videos.items()])
        return [_substitute(r, loaded, dict(zip(videos, checked))) for r, _ in requests]

    async def judge_all(
        self, requests: list[tuple[JudgeRequest, str]], lease: PixelLease, rewards: bool = False
    ) -> list[Verdict]:
        """Load media for and judge a request's pairs (checked by `check_pairs` already); run within `deadline`,
        which cancels downloads and the judge call (once nobody else waits for it) if it comes to that."""
        batcher = self.reward_batcher if rewards else self.batcher
        return await batcher.submit(await self.resolve(requests, lease))

    @asynccontextmanager
    async def deadline(self) -> AsyncIterator[PixelLease]:
        """The request timeout over everything a route does after reading its body (building and checking pairs,
        loading media, judging), and the request's hold on the decoded-pixel budget, given back when the route ends.
        A request that spent its time waiting for that budget is a 503 with Retry-After (others' images filled it:
        retrying later helps), any other a TimeoutError (504)."""
        async with self.policy.lease() as lease:
            try:
                async with asyncio.timeout(self.settings.request_timeout_s):
                    yield lease
            except TimeoutError:
                if not lease.waiting:
                    raise
                self.metrics.rejected.inc()
                budget = self.policy.pixels
                raise Saturated(
                    f"other requests' decoded images hold the --max-held-pixels budget ({budget.limit} "
                    f"pixels; {budget.waiting - 1} more requests waiting)"
                ) from None


# ---------------------------------------------------------------------------------------------------- routes' logic


def _label(raw: str | dict | None, i: int) -> dict[str, Any]:
    """OpenRLHF's `labels[i]`: a JSON object (or its string) with at least `reference`."""
    if raw is None:
        raise InputError("labels are required: each a JSON object with 'reference' (and 'images')", "labels")
    try:
        label = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as e:
        raise InputError(f"labels[{i}] is not JSON: {e.msg}", f"labels[{i}]") from e
    except RecursionError as e:  # nested deeper than the parser goes
        raise InputError(f"labels[{i}] is nested too deeply", f"labels[{i}]") from e
    if not isinstance(label, dict) or not str(label.get("reference") or "").strip():
        raise InputError(f"labels[{i}] must be a JSON object with a non-empty 'reference'", f"labels[{i}]")
    if not isinstance(label.get("images", []), list) or not all(isinstance(x, str) for x in label.get("images", [])):
        raise InputError(f"labels[{i}].images must be a list of strings", f"labels[{i}].images")
    for key in ("question", "task_type"):
        if label.get(key) is not None and not isinstance(label[key], str):
            raise InputError(f"labels[{i}].{key} must be a string", f"labels[{i}].{key}")
    return label


def reward_requests(body: GetRewardRequest) -> list[JudgeRequest | None]:
    """/get_reward's samples as pairs (response vs reference); None for an empty response, which loses unjudged."""
    requests: list[JudgeRequest | None] = []
    for i, query in enumerate(body.query):
        label = _label(body.labels[i] if body.labels else None, i)
        prompt = body.prompts[i] if body.prompts else None
        images = label.get("images") or []
        response = response_from_query(query, prompt)
        try:
            req = JudgeRequest(
                id=str(i),
                task_type=label.get("task_type") or ("image_understanding" if images else "text"),
                question=label.get("question") or question_from_prompt(prompt or query),
                images=images,
                a=response or "-",
                b=label["reference"],
            )
        except ValueError as e:
            raise InputError(f"labels[{i}]: {e}", f"labels[{i}]") from e
        requests.append(req if response else None)
    return requests


def rewards_plan(body: RewardsRequest, settings: ServerSettings) -> RewardsPlan:
    """/v1/rewards' rollouts as pairs. Every pair counts against the pair limit, decided ones included, and the
    work is linear in the pairs."""
    items = body.items
    limit = settings.max_pairs_per_request
    groups: list[tuple[list[int], list[int]]] = []
    if body.mode == "reference":
        pairs: list[tuple[int, int | None]] = [(i, None) for i in range(len(items))]
    else:
        members: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            members.setdefault(item.group_id or "", []).append(i)
        # G(G-1)/2 pairs per group: checked before any is built, so a huge group is refused at once
        total = sum(len(m) * (len(m) - 1) // 2 for m in members.values())
        if total > limit:
            raise InputError(f"{total} pairs in one request; the limit is {limit}", "items", 413)
        pairs = []
        for group in members.values():
            start = len(pairs)
            pairs += [(a, b) for x, a in enumerate(group) for b in group[x + 1 :]]
            groups.append((group, list(range(start, len(pairs)))))
    if len(pairs) > limit:
        raise InputError(f"{len(pairs)} pairs in one request; the limit is {limit}", "items", 413)
    requests: list[JudgeRequest | None] = []  # None: an empty side, decided without the judge
    fixed: list[float | None] = []
    for k, (i, j) in enumerate(pairs):
        item = items[i]
        other = item.reference if j is None else items[j].response
        first_empty, second_empty = not item.response.strip(), not (other or "").strip()
        fixed.append(0.5 if first_empty and second_empty else 0.0 if first_empty else 1.0 if second_empty else None)
        # A prompt that is only an image (captioning) has no question text; ask neutrally, as /get_reward does.
        question = item.question if item.question.strip() or not item.images else IMAGE_ONLY_QUESTION
        try:
            req = JudgeRequest(
                id=str(k),
                task_type=item.task_type or ("image_understanding" if item.images else "text"),
                question=question,
                images=item.images,
                a=item.response or "-",
                b=other or "-",
            )
        except ValueError as e:
            raise InputError(f"items[{i}]: {e}", f"items[{i}]") from e
        requests.append(None if fixed[-1] is not None else req)
    return RewardsPlan(pairs, requests, fixed, groups)


def rewards_answer(plan: RewardsPlan, body: RewardsRequest, probs: list[float | None]) -> dict[str, Any]:
    """Rewards, validity and per-rollout counts from the pairs' outcomes, in one pass over the pairs."""
    n = len(body.items)
    comparisons, parsed = [0] * n, [0] * n
    for (i, j), p in zip(plan.pairs, probs):
        for k in (i, j):
            if k is not None:
                comparisons[k] += 1
                parsed[k] += p is not None
    if body.mode == "reference":
        values: list[float | None] = list(probs)
        neutral = NEUTRAL
    else:
        # Each group is scored on its own comparisons only, so a group's rewards never depend on its neighbours.
        scorer = bradley_terry if body.group_scoring == "bradley_terry" else win_rates
        values = [None] * n
        for members, indices in plan.groups:
            local = {g: k for k, g in enumerate(members)}
            outcomes = [(local[plan.pairs[x][0]], local[plan.pairs[x][1]], probs[x]) for x in indices]  # type: ignore[index]
            for g, v in zip(members, scorer(len(members), outcomes)):
                values[g] = v
        neutral = 0.0 if body.group_scoring == "bradley_terry" else NEUTRAL
    return {
        "rewards": [neutral if v is None else v for v in values],
        "valid": [v is not None for v in values],
        "details": [{"comparisons": c, "parsed": p} for c, p in zip(comparisons, parsed)],
    }


def _image_refs(messages: list[ChatMessage]) -> dict[str, str]:
    """The chat request's images (data URLs only: this route fetches nothing by itself), each with its field."""
    refs: dict[str, str] = {}
    for i, m in enumerate(messages):
        for j, p in enumerate(m.content if isinstance(m.content, list) else []):
            if p.type == "text":
                continue
            url = (p.image_url or p.video_url).url  # type: ignore[union-attr]
            if not url.startswith("data:"):
                raise MediaError(f"messages[{i}].content[{j}]: only base64 data URLs are accepted")
            if p.type == "image_url":
                refs.setdefault(url, f"messages[{i}].content[{j}]")
    return refs


def to_conversation(messages: list[ChatMessage], images: dict[str, Any] | None = None) -> Conversation:
    """Wire messages -> Conversation; images from `images` (decoded by the policy), or placeholders for counting."""
    conv: Conversation = []
    for m in messages:
        if m.content is None or isinstance(m.content, str):
            conv.append(Message.text(m.role, m.content or ""))
            continue
        parts: list[Any] = []
        for p in m.content:
            if p.type == "text":
                parts.append(TextPart(p.text or ""))
            elif p.type == "video_url":
                parts.append(VideoPart(p.video_url.url))  # type: ignore[union-attr]
            else:
                parts.append(ImagePart(images[p.image_url.url] if images else None))  # type: ignore[union-attr,arg-type]
        conv.append(Message(m.role, tuple(parts)))
    return conv


# ---------------------------------------------------------------------------------------------------- the app


def build_app(judge: Judge, settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    state = ServerState(judge, settings)
    backend: Backend = judge.backend
    model_name = settings.served_model_name
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        for b in state.batchers():
            b.start()
        yield
        await state.close()  # uvicorn has stopped accepting; judge what was accepted (within the drain), then stop

    app = FastAPI(title="deltarubric reward server", version="0.1.0", lifespan=lifespan)
    app.state.server = state
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, timeout_s=settings.request_timeout_s)
    app.add_middleware(
        Edge, metrics=state.metrics, routes=ROUTES, api_key=settings.api_key, access_log=settings.access_log
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        param = ".".join(str(x) for x in first["loc"] if x != "body") or None
        return error_response(400, f"{param or 'body'}: {first['msg']}", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), type_="http_error")

    @app.exception_handler(InputError)
    async def _input(_: Request, exc: InputError) -> JSONResponse:
        return error_response(exc.status, str(exc), param=exc.param)

    @app.exception_handler(MediaError)
    async def _media(_: Request, exc: MediaError) -> JSONResponse:
        return error_response(400, str(exc), param="media")

    @app.exception_handler(Saturated)
    async def _saturated(_: Request, exc: Saturated) -> JSONResponse:
        return error_response(
            503, f"server busy: {exc}; retry shortly", type_="overloaded", headers={"Retry-After": "1"}
        )

    @app.exception_handler(TimeoutError)
    async def _timeout(_: Request, exc: TimeoutError) -> JSONResponse:
        return error_response(504, f"no answer within {settings.request_timeout_s:g} s", type_="timeout")

    @app.get("/health")
    @app.head("/health", include_in_schema=False)  # load balancers probe with HEAD
    async def health() -> dict[str, Any]:
        """`status` is "saturated" while a pool (work threads, downloads) or the queue is full; 200 either way, so
        a liveness probe does not restart a server that is merely busy."""
        return state.health()

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/judge", openapi_extra=_schema(JudgeAPIRequest))
    async def judge_route(request: Request) -> JSONResponse:
        def build(body: JudgeAPIRequest) -> list[tuple[JudgeRequest, str]]:
            pairs = [(r, f"requests[{i}]") for i, r in enumerate(body.requests)]
            state.check_pairs(pairs)
            return pairs

        body = await state.parse(request, JudgeAPIRequest, _count("requests", settings.max_pairs_per_request, "pairs"))
        async with state.deadline() as lease:
            pairs = await state.cpu(state.light(request, len(body.requests)), build, body)
            request.state.pairs = len(pairs)
            verdicts = await state.judge_all(pairs, lease)

        def answer() -> JSONResponse:  # 256 verdicts with their raw texts are megabytes of JSON: off the loop
            return JSONResponse({"results": [v.model_dump(mode="json") for v in verdicts], "model": model_name})

        return await state.cpu(len(verdicts) <= 8, answer)

    @app.post("/get_reward", openapi_extra=_schema(GetRewardRequest))
    async def get_reward(request: Request) -> dict[str, Any]:
        def build(body: GetRewardRequest) -> list[JudgeRequest | None]:
            requests = reward_requests(body)
            state.check_pairs([(r, f"labels[{r.id}]") for r in requests if r is not None])
            return requests

        body = await state.parse(request, GetRewardRequest, _count("query", settings.max_items_per_request, "queries"))
        requests: list[JudgeRequest | None] | None = None
        found: Iterator[Verdict | None] = iter(())
        timed_out = 0.0
        try:
            async with state.deadline() as lease:
                requests = await state.cpu(state.light(request, len(body.query)), build, body)
                judged = [r for r in requests if r is not None]
                request.state.pairs = len(judged)
                pairs = [(r, f"labels[{r.id}]") for r in judged]
                found = iter(await state.judge_all(pairs, lease, rewards=True) if judged else [])
        except TimeoutError:
            timed_out = 1.0  # answer in time with neutral rewards, flagged
        if requests is None:  # the time ran out while the samples were checked: all neutral
            verdicts: list[Verdict | None] = [None] * len(body.query)
            probs: list[float | None] = [None] * len(body.query)
        else:
            verdicts = [next(found, None) if r is not None else None for r in requests]
            probs = [0.0 if r is None else (p_a_wins(v) if v else None) for r, v in zip(requests, verdicts)]
        rewards = [NEUTRAL if p is None else p for p in probs]
        return {
            "rewards": rewards,
            "scores": rewards,
            "extra_logs": {
                "judge_valid": [0.0 if p is None else 1.0 for p in probs],
                "p_win": rewards,
                "judge_latency_s": [v.latency_s if v else 0.0 for v in verdicts],
                "judge_timeout": [timed_out] * len(body.query),
            },
        }

    @app.post("/v1/rewards", openapi_extra=_schema(RewardsRequest))
    async def rewards_route(request: Request) -> dict[str, Any]:
        def build(body: RewardsRequest) -> tuple[RewardsPlan, list[tuple[JudgeRequest, str]]]:
            plan = rewards_plan(body, settings)
            judged = [(r, f"items[{i}]") for r, (i, _) in zip(plan.requests, plan.pairs) if r is not None]
            state.check_pairs(judged)
            return plan, judged

        body = await state.parse(request, RewardsRequest, _count("items", settings.max_items_per_request, "items"))
        async with state.deadline() as lease:
            plan, judged = await state.cpu(state.light(request, 2 * len(body.items)), build, body)
            request.state.pairs = len(judged)
            verdicts = iter(await state.judge_all(judged, lease, rewards=True) if judged else [])
        probs = [f if r is None else p_a_wins(next(verdicts)) for r, f in zip(plan.requests, plan.fixed)]
        return await state.cpu(len(plan.pairs) <= 32, rewards_answer, plan, body, probs)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": model_name, "object": "model", "created": created, "owned_by": "deltarubric"}
        return {"object": "list", "data": [card]}

    def chat_precheck(data: Any) -> None:
        """Before validating or templating anything, from the message count alone: a prompt that cannot fit the
        token limit (every message costs its chat-template tokens, even empty) or too many messages is a 413."""
        messages = data.get("messages") if isinstance(data, dict) else None
        if isinstance(messages, list):
            state.tokens.check_message_count(len(messages), settings.max_input_tokens, "messages")
            if len(messages) > settings.max_chat_messages:
                raise InputError(
                    f"{len(messages)} messages in one request; the limit is {settings.max_chat_messages} "
                    "(--max-chat-messages)",
                    "messages",
                    413,
                )

    @app.post("/v1/chat/completions", openapi_extra=_schema(ChatCompletionRequest))
    async def chat(request: Request) -> Any:
        req = await state.parse(request, ChatCompletionRequest, chat_precheck)
        if req.model != model_name:
            return error_response(404, f"model {req.model!r} is not served here; use {model_name!r}", param="model")
        asked = req.max_completion_tokens or req.max_tokens
        cap = settings.max_completion_tokens
        if asked is not None and asked > cap:
            param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
            return error_response(
                400, f"{param} is {asked}; this server allows at most {cap} (--max-completion-tokens)", param=param
            )
        refs = _image_refs(req.messages)
        media = [p.type for m in req.messages if isinstance(m.content, list) for p in m.content if p.type != "text"]
        state.check_counts(1, len(media))
        videos = media.count("video_url")
        if videos and not backend.supports_video:
            return error_response(
                400, f"video input is not supported by the {backend.name!r} backend here", param="messages"
            )
        if state.chat_inflight >= settings.max_queue:
            state.metrics.rejected.inc()
            raise Saturated(f"{state.chat_inflight} chat completions in flight")
        sampling = SamplingConfig(
            # As vLLM does: a temperature this close to 0 is greedy (dividing logits by 1e-45 makes them inf, then NaN).
            temperature=0.0 if req.temperature is None or req.temperature < GREEDY_BELOW else req.temperature,
            top_p=req.top_p or 1.0,
            max_tokens=asked or min(1024, cap),
            seed=req.seed or 0,
            # logprobs=true alone still needs the chosen token's logprob, which comes with the top list
            top_logprobs=max(req.top_logprobs or 0, 1) if req.logprobs else 0,
        )
        # Many messages cost template work even when their text is short: inline only when both are small.
        light = request.state.body_bytes <= INLINE_TEXT_CHARS and len(req.messages) <= INLINE_MESSAGES
        state.chat_inflight += 1
        try:
            async with state.deadline() as lease:
                gen = await _generate(req.messages, refs, sampling, light, lease)
        finally:
            state.chat_inflight -= 1
        if isinstance(gen, Response):
            return gen
        if gen.error:
            return error_response(500, f"generation failed: {gen.error}", type_="server_error")
        return completion_response(model_name, gen, (req.top_logprobs or 0) if req.logprobs else None)

    def check_text(messages: list[ChatMessage]) -> None:
        text = to_conversation(messages)
        state.tokens.check_placeholders(text, "messages")
        state.tokens.check(text, settings.max_input_tokens, "messages")

    async def _generate(
        messages: list[ChatMessage], refs: dict[str, str], sampling: SamplingConfig, light: bool, lease: PixelLease
    ) -> Any:
        """Tokens checked on the text (before decoding any image; in the work pool unless the chat is small), images
        decoded under the budgets, then one generation; a timeout cancels it (a local engine stops at its next
        token)."""
        await state.cpu(light, check_text, messages)
        conv = await state.cpu(light, to_conversation, messages, await state.policy.images(refs, lease))
        try:
            (gen,) = await backend.agenerate([conv], sampling)
        except Exception as e:  # noqa: BLE001  (an engine crash is still answered in the one error shape)
            return error_response(500, f"generation failed: {type(e).__name__}: {e}", type_="server_error")
        return gen

    _with_body_schemas(app)
    return app


_BODIES = (JudgeAPIRequest, GetRewardRequest, RewardsRequest, ChatCompletionRequest)


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    """The request body for /docs: routes read their bodies themselves (off the event loop), so FastAPI cannot see
    them; the schemas go into the document's components (`_with_body_schemas`)."""
    body = {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
    return {"requestBody": {"required": True, "content": {"application/json": body}}}


def _with_body_schemas(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            _, defs = models_json_schema(
                [(m, "validation") for m in _BODIES], ref_template="#/components/schemas/{model}"
            )
            doc.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def run_server(app: FastAPI, *, host: str, port: int) -> None:
    """Serve `app` (from build_app) with uvicorn: header deadline, access log, and a shutdown bounded by the drain
    timeout however the backend behaves."""
    state: ServerState = app.state.server
    s = state.settings
    configure_access_log(s.access_log)
    config = server_config(app, host=host, port=port, header_timeout_s=s.header_timeout_s, drain_s=s.drain_s)

    def on_deadline(deadline: float) -> None:
        state.shutdown_deadline = deadline

    DrainingServer(config, s.drain_s, on_deadline).run()
