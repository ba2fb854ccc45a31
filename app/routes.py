"""The routes, thin: read and validate the body, call one service method, encode its typed answer.

Bodies are read by the routes themselves (`ServerContext.parse`: off the event loop when large, with cheap size
limits checked before validating), so FastAPI cannot see them; each route names its body model in `openapi_extra`
and its answer in `response_model`, and `BODIES` lists the body models for the OpenAPI document (see server.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from deltarubric.app.chat import ChatService
from deltarubric.app.context import ServerContext, at_most
from deltarubric.app.errors import ErrorResponse
from deltarubric.app.health_protocol import HealthResponse
from deltarubric.app.protocol import ChatCompletionRequest, ChatCompletionResponse, ModelList
from deltarubric.app.reward_protocol import GetRewardRequest, GetRewardResponse, JudgeAPIRequest, JudgeAPIResponse
from deltarubric.app.service import RewardService
from deltarubric.rm.reward_protocol import RewardsRequest, RewardsResponse

INLINE_VERDICTS = 8  # an answer with more verdicts (and their raw texts) is encoded in the work pool
ROUTES = ("/get_reward", "/v1/judge", "/v1/rewards", "/v1/chat/completions", "/v1/models", "/health", "/metrics")
BODIES: tuple[type[BaseModel], ...] = (JudgeAPIRequest, GetRewardRequest, RewardsRequest, ChatCompletionRequest)
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 408, 413, 415, 500, 503, 504)
}

router = APIRouter()


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """The request body for /docs, a reference into the document's components (filled by server.py)."""
    body = {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
    return {"requestBody": {"required": True, "content": {"application/json": body}}}


def _context(request: Request) -> ServerContext:
    return request.app.state.context


def _rewards(request: Request) -> RewardService:
    return request.app.state.rewards


def _chat(request: Request) -> ChatService:
    return request.app.state.chat


@router.get("/health", response_model=HealthResponse)
@router.head("/health", include_in_schema=False)  # load balancers probe with HEAD
async def health(request: Request) -> Response:
    """`status` is "saturated" while a pool (work threads, downloads) or the queue is full; 200 either way, so a
    liveness probe does not restart a server that is merely busy."""
    return await _context(request).respond(_rewards(request).health())


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(_context(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.post("/v1/judge", response_model=JudgeAPIResponse, responses=ERRORS, openapi_extra=_body(JudgeAPIRequest))
async def judge(request: Request) -> Response:
    """Pairwise verdicts, judged as the server's judge is configured."""
    ctx, service = _context(request), _rewards(request)
    limit = at_most("requests", ctx.settings.max_pairs_per_request, "pairs")
    body = await ctx.parse(request, JudgeAPIRequest, limit)
    answer = await service.judge_pairs(body, request)
    return await ctx.respond(answer, inline=len(answer.results) <= INLINE_VERDICTS)


@router.post("/get_reward", response_model=GetRewardResponse, responses=ERRORS, openapi_extra=_body(GetRewardRequest))
async def get_reward(request: Request) -> Response:
    """OpenRLHF's remote reward model: P(response beats the label's reference) per sample."""
    ctx, service = _context(request), _rewards(request)
    body = await ctx.parse(request, GetRewardRequest, at_most("query", ctx.settings.max_items_per_request, "queries"))
    return await ctx.respond(await service.get_reward(body, request))


@router.post("/v1/rewards", response_model=RewardsResponse, responses=ERRORS, openapi_extra=_body(RewardsRequest))
async def rewards(request: Request) -> Response:
    """One scalar per rollout, against references or within groups (TRL, verl, ms-swift adapters)."""
    ctx, service = _context(request), _rewards(request)
    body = await ctx.parse(request, RewardsRequest, at_most("items", ctx.settings.max_items_per_request, "items"))
    return await ctx.respond(await service.rewards(body, request))


@router.get("/v1/models", response_model=ModelList, responses=ERRORS)
async def models(request: Request) -> Response:
    return await _context(request).respond(_chat(request).models())


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    responses=ERRORS,
    openapi_extra=_body(ChatCompletionRequest),
)
async def chat_completions(request: Request) -> Response:
    """OpenAI chat completions straight to the backend (no streaming, one choice)."""
    ctx, service = _context(request), _chat(request)
    body = await ctx.parse(request, ChatCompletionRequest, service.precheck)
    return await ctx.respond(await service.chat(body, request))


def attach_routes(app: FastAPI) -> None:
    app.include_router(router)
