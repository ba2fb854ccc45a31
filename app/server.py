"""The HTTP app: reward routes for RL trainers, OpenAI-compatible routes, health and metrics, over one judge.

Handlers are thin: validate at the edge (schema, limits, media policy), submit pairs to the micro-batcher, shape
the answer. Every error has one JSON shape, `{"error": {"message", "type", "param", "code"}}`; input errors are
4xx, a full queue is 503 with Retry-After, and /get_reward answers 200 with neutral rewards whenever the judge
could not decide, because OpenRLHF retries HTTP errors and then silently drops the sample.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.batcher import MicroBatcher, Saturated
from app.media_policy import MediaPolicy
from app.metrics import Metrics
from app.protocol import ChatCompletionRequest, ChatMessage, completion_response
from app.reward_protocol import GetRewardRequest, JudgeAPIRequest, RewardsRequest
from app.rewards import (
    IMAGE_ONLY_QUESTION,
    NEUTRAL,
    bradley_terry,
    p_first_wins,
    question_from_prompt,
    response_from_query,
    win_rates,
)
from app.settings import ServerSettings
from rm.backends import Backend, Conversation, ImagePart, Message, TextPart, VideoPart
from rm.config import SamplingConfig
from rm.judge import Judge
from rm.media import MediaError, load_image
from rm.types import JudgeRequest, Verdict

ROUTES = ("/get_reward", "/v1/judge", "/v1/rewards", "/v1/chat/completions", "/v1/models", "/health", "/metrics")


class InputError(ValueError):
    """A request that breaks a limit or the media policy: 400 (or the given status), naming the field."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param, self.status = param, status


def error_response(status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    body = {"error": {"message": message, "type": type_, "param": param, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def to_conversation(messages: list[ChatMessage], max_input_pixels: int) -> Conversation:
    """Wire messages -> Conversation. Images must be base64 data URLs: this route fetches nothing by itself."""
    conv: Conversation = []
    for i, m in enumerate(messages):
        if m.content is None or isinstance(m.content, str):
            conv.append(Message.text(m.role, m.content or ""))
            continue
        parts: list[Any] = []
        for j, p in enumerate(m.content):
            where = f"messages[{i}].content[{j}]"
            if p.type == "text":
                parts.append(TextPart(p.text or ""))
                continue
            url = (p.image_url or p.video_url).url  # type: ignore[union-attr]
            if not url.startswith("data:"):
                raise MediaError(f"{where}: only base64 data URLs are accepted")
            if p.type == "video_url":
                parts.append(VideoPart(url))
            else:
                try:
                    parts.append(ImagePart(load_image(url, max_input_pixels=max_input_pixels)))
                except MediaError as e:
                    raise MediaError(f"{where}: {e}") from e
        conv.append(Message(m.role, tuple(parts)))
    return conv


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse bodies over the limit, by Content-Length or while streaming, before parsing them."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = error_response(413, f"request body is over {self.max_bytes} bytes", param="body")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            return await too_large(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _BodyTooLarge
            return message

        # Read the body first (the app would buffer it anyway), so an oversize chunked body is a 413, not a parse error.
        messages = []
        while True:
            try:
                message = await counted()
            except _BodyTooLarge:
                return await too_large(scope, receive, send)
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        replay = iter(messages)

        async def replayed() -> dict:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)


class ServerState:
    """What handlers share: the judge, its batcher, the media policy, metrics and settings."""

    def __init__(self, judge: Judge, settings: ServerSettings) -> None:
        self.judge, self.settings = judge, settings
        self.metrics = Metrics()
        self.policy = MediaPolicy(settings)
        # Rewards are always debiased: each pair in both orders, whatever the judge was started with.
        self.reward_judge = judge if judge.config.swap else Judge(judge.config.model_copy(update={"swap": True}), backend=judge.backend)
        self.batcher = self._batcher(judge)
        self.chat_inflight = 0  # OpenAI-route generations running; bounded like the judge queue
        self.reward_batcher = self.batcher if self.reward_judge is judge else self._batcher(self.reward_judge)

    def _batcher(self, judge: Judge) -> MicroBatcher:
        s = self.settings
        return MicroBatcher(judge, self.metrics, max_batch=s.max_batch, window_s=s.batch_window_ms / 1000,
                            max_queue=s.max_queue, concurrent_batches=s.concurrent_batches, cache_size=s.cache_size,
                            call_timeout_s=s.request_timeout_s)  # fmt: skip

    def batchers(self) -> list[MicroBatcher]:
        return list(dict.fromkeys([self.batcher, self.reward_batcher]))

    def resolve(self, req: JudgeRequest, where: str) -> JudgeRequest:
        """Media of a wire request loaded under the policy; PIL images from here on, so the judge fetches nothing."""
        images = [self.policy.image(x, f"{where}.images[{i}]") if isinstance(x, str) else x for i, x in enumerate(req.images)]
        videos = [self.policy.video(v, f"{where}.videos[{i}]") for i, v in enumerate(req.videos)]
        sides = {}
        for side in ("a", "b"):
            c = getattr(req, side)
            if isinstance(c.image, str):
                sides[side] = c.model_copy(update={"image": self.policy.image(c.image, f"{where}.{side}.image")})
            elif c.video is not None:
                sides[side] = c.model_copy(update={"video": self.policy.video(c.video, f"{where}.{side}.video")})
        return req.model_copy(update={"images": images, "videos": videos, **sides})

    def check_counts(self, pairs: int, images: int) -> None:
        s = self.settings
        if pairs > s.max_pairs_per_request:
            raise InputError(f"{pairs} pairs in one request; the limit is {s.max_pairs_per_request}", "requests", 413)
        if images > s.max_images_per_request:
            raise InputError(f"{images} images in one request; the limit is {s.max_images_per_request}", "images", 413)

    async def judge_all(self, requests: list[tuple[JudgeRequest, str]], rewards: bool = False) -> list[Verdict]:
        """Load each request's media (named by its field for errors) and judge them, all within the request timeout.
        Media load in a worker thread: a slow download or a big decode never stalls the event loop."""
        batcher = self.reward_batcher if rewards else self.batcher

        async def run() -> list[Verdict]:
            resolved = await asyncio.to_thread(lambda: [self.resolve(r, where) for r, where in requests])
            return await batcher.submit(resolved)

        return await asyncio.wait_for(run(), timeout=self.settings.request_timeout_s)


def _media_count(req: JudgeRequest) -> int:
    return len(req.images) + len(req.videos) + sum(c.kind != "text" for c in (req.a, req.b))


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
        for b in state.batchers():  # uvicorn has stopped accepting; judge what was accepted, then stop
            await b.close()

    app = FastAPI(title="deltarubric reward server", version="0.1.0", lifespan=lifespan)
    app.state.server = state
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @app.middleware("http")
    async def auth_and_metrics(request: Request, call_next):  # type: ignore[no-untyped-def]
        path = request.url.path
        route = path if path in ROUTES else "other"
        t0 = time.perf_counter()
        if settings.api_key and path != "/health":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {settings.api_key}".encode()):
                response: Response = error_response(401, "missing or wrong bearer token", type_="authentication_error")
                state.metrics.requests.labels(route, "401").inc()
                return response
        response = await call_next(request)
        state.metrics.requests.labels(route, str(response.status_code)).inc()
        state.metrics.latency.labels(route).observe(time.perf_counter() - t0)
        return response

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
        return error_response(503, f"server busy: {exc}; retry shortly", type_="overloaded", headers={"Retry-After": "1"})

    @app.exception_handler(asyncio.TimeoutError)
    async def _timeout(_: Request, exc: asyncio.TimeoutError) -> JSONResponse:
        return error_response(504, f"no verdict within {settings.request_timeout_s} s", type_="timeout")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/judge")
    async def judge_route(body: JudgeAPIRequest) -> dict[str, Any]:
        state.check_counts(len(body.requests), sum(map(_media_count, body.requests)))
        verdicts = await state.judge_all([(r, f"requests[{i}]") for i, r in enumerate(body.requests)])
        return {"results": [v.model_dump() for v in verdicts], "model": model_name}

    @app.post("/get_reward")
    async def get_reward(body: GetRewardRequest) -> dict[str, Any]:
        requests: list[JudgeRequest | None] = []  # None: an empty response, which loses without a judge call
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
        judged = [r for r in requests if r is not None]
        state.check_counts(len(judged), sum(map(_media_count, judged)))
        try:
            found = iter(await state.judge_all([(r, f"labels[{r.id}]") for r in judged], rewards=True) if judged else [])
            timed_out = 0.0
        except asyncio.TimeoutError:
            found, timed_out = iter([None] * len(judged)), 1.0  # answer in time with neutral rewards, flagged
        verdicts: list[Verdict | None] = [next(found) if r is not None else None for r in requests]
        probs = [0.0 if r is None else (p_first_wins(v) if v else None) for r, v in zip(requests, verdicts)]
        rewards = [NEUTRAL if p is None else p for p in probs]
        return {
            "rewards": rewards,
            "scores": rewards,
            "extra_logs": {
                "judge_valid": [0.0 if p is None else 1.0 for p in probs],
                "p_win": rewards,
                "judge_latency_s": [v.latency_s if v else 0.0 for v in verdicts],
                "judge_timeout": [timed_out] * len(requests),
            },
        }

    @app.post("/v1/rewards")
    async def rewards_route(body: RewardsRequest) -> dict[str, Any]:
        items = body.items
        if body.mode == "reference":
            pairs = [(i, None) for i in range(len(items))]
        else:
            groups: dict[str, list[int]] = {}
            for i, item in enumerate(items):
                groups.setdefault(item.group_id or "", []).append(i)
            # G(G-1)/2 pairs per group: checked before any is built, so a huge group is refused at once
            state.check_counts(sum(len(m) * (len(m) - 1) // 2 for m in groups.values()), 0)
            pairs = [(a, b) for members in groups.values() for x, a in enumerate(members) for b in members[x + 1 :]]
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
                req = JudgeRequest(id=str(k), task_type=item.task_type or ("image_understanding" if item.images else "text"),
                                   question=question, images=item.images, a=item.response or "-", b=other or "-")  # fmt: skip
            except ValueError as e:
                raise InputError(f"items[{i}]: {e}", f"items[{i}]") from e
            requests.append(None if fixed[-1] is not None else req)
        judged = [(r, f"items[{i}]") for r, (i, _) in zip(requests, pairs) if r is not None]
        state.check_counts(len(judged), sum(_media_count(r) for r, _ in judged))
        verdicts = iter(await state.judge_all(judged, rewards=True) if judged else [])
        probs = [f if r is None else p_first_wins(next(verdicts)) for r, f in zip(requests, fixed)]
        if body.mode == "reference":
            values: list[float | None] = probs
            neutral = NEUTRAL
        else:
            # Each group is scored on its own comparisons only, so a group's rewards never depend on its neighbours.
            scorer = bradley_terry if body.group_scoring == "bradley_terry" else win_rates
            values = [None] * len(items)
            for members in groups.values():
                local = {g: k for k, g in enumerate(members)}
                outcomes = [(local[i], local[j], p) for (i, j), p in zip(pairs, probs) if i in local]
                for g, v in zip(members, scorer(len(members), outcomes)):  # type: ignore[arg-type]
                    values[g] = v
            neutral = 0.0 if body.group_scoring == "bradley_terry" else NEUTRAL
        details = [{"comparisons": sum(i in pair for pair in pairs), "parsed": sum(p is not None for pair, p in zip(pairs, probs) if i in pair)}
                   for i in range(len(items))]  # fmt: skip
        return {"rewards": [neutral if v is None else v for v in values], "valid": [v is not None for v in values], "details": details}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": model_name, "object": "model", "created": created, "owned_by": "deltarubric"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatCompletionRequest) -> Any:
        if req.model != model_name:
            return error_response(404, f"model {req.model!r} is not served here; use {model_name!r}", param="model")
        media = sum(p.type != "text" for m in req.messages if isinstance(m.content, list) for p in m.content)
        state.check_counts(1, media)
        if state.chat_inflight >= settings.max_queue:
            state.metrics.rejected.inc()
            raise Saturated(f"{state.chat_inflight} chat completions in flight")
        conv = await asyncio.to_thread(to_conversation, req.messages, settings.max_input_pixels)
        if not backend.supports_video and any(isinstance(p, VideoPart) for m in conv for p in m.content):
            return error_response(400, f"video input is not supported by the {backend.name!r} backend here", param="messages")
        sampling = SamplingConfig(
            temperature=0.0 if req.temperature is None else req.temperature,
            top_p=req.top_p or 1.0,
            max_tokens=req.max_completion_tokens or req.max_tokens or 1024,
            seed=req.seed or 0,
            # logprobs=true alone still needs the chosen token's logprob, which comes with the top list
            top_logprobs=max(req.top_logprobs or 0, 1) if req.logprobs else 0,
        )
        state.chat_inflight += 1
        try:
            (gen,) = await asyncio.wait_for(backend.agenerate([conv], sampling), settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise
        except Exception as e:  # an engine crash is still answered in the one error shape
            return error_response(500, f"generation failed: {type(e).__name__}: {e}", type_="server_error")
        finally:
            state.chat_inflight -= 1
        if gen.error:
            return error_response(500, f"generation failed: {gen.error}", type_="server_error")
        return completion_response(model_name, gen, (req.top_logprobs or 0) if req.logprobs else None)

    return app


def _label(raw: str | dict | None, i: int) -> dict[str, Any]:
    """OpenRLHF's `labels[i]`: a JSON object (or its string) with at least `reference`."""
    if raw is None:
        raise InputError("labels are required: each a JSON object with 'reference' (and 'images')", "labels")
    try:
        label = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as e:
        raise InputError(f"labels[{i}] is not JSON: {e.msg}", f"labels[{i}]") from e
    if not isinstance(label, dict) or not str(label.get("reference") or "").strip():
        raise InputError(f"labels[{i}] must be a JSON object with a non-empty 'reference'", f"labels[{i}]")
    if not isinstance(label.get("images", []), list) or not all(isinstance(x, str) for x in label.get("images", [])):
        raise InputError(f"labels[{i}].images must be a list of strings", f"labels[{i}].images")
    return label
