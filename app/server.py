"""The HTTP app: `build_app(judge, settings)` wires the services, routes, middleware and error handlers, and
`run_server(app, host=..., port=...)` serves it with uvicorn.

The pieces, as vLLM's OpenAI entrypoints split them:

- wire schemas, requests and responses: `protocol.py` (OpenAI-compatible), `reward_protocol.py` (reward routes;
  `/v1/rewards` itself is `deltarubric.rm.reward_protocol`, shared with the trainer adapters), `health_protocol.py`,
  and the error shape in `errors.py`;
- services holding the logic: `service.RewardService` (the judge and its micro-batchers) and `chat.ChatService`
  (the backend), over a shared `context.ServerContext` (pools, media policy, limits, deadlines);
- thin routes in `routes.py`; what sits in front of them (auth, body limits, access log, shutdown) in `edge.py`.

Every error has one JSON shape, `{"error": {"message", "type", "param", "code"}}`: input errors are 4xx (400 where
FastAPI would say 422), a full queue is 503 with Retry-After, a timeout 504, anything unexpected a counted JSON 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from deltarubric.app.batcher import Saturated
from deltarubric.app.chat import ChatService
from deltarubric.app.context import ServerContext
from deltarubric.app.edge import BodyLimit, DrainingServer, Edge, configure_access_log, server_config
from deltarubric.app.errors import EngineError, InputError, error_response
from deltarubric.app.routes import BODIES, ROUTES, attach_routes
from deltarubric.app.service import RewardService
from deltarubric.app.settings import ServerSettings
from deltarubric.rm.judge import Judge
from deltarubric.rm.media import MediaError

__all__ = ["build_app", "run_server"]

SHOWN_ERRORS = 5  # validation errors named in one answer; a body of 256 bad items would otherwise answer with 256


def build_app(judge: Judge, settings: ServerSettings | None = None) -> FastAPI:
    """The reward server around `judge`: its services in `app.state` (`context`, `rewards`, `chat`), created here and
    closed, after draining, when the app's lifespan ends."""
    settings = settings or ServerSettings()
    ctx = ServerContext(judge.backend, settings)
    rewards = RewardService(ctx, judge, settings.served_model_name)
    chat = ChatService(ctx, judge.backend, settings.served_model_name)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        rewards.start()
        yield
        await rewards.close()  # uvicorn has stopped accepting; judge what was accepted (within the drain), then stop
        await ctx.close()

    app = FastAPI(title="deltarubric reward server", version="0.1.0", lifespan=lifespan)
    app.state.context, app.state.rewards, app.state.chat = ctx, rewards, chat
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, timeout_s=settings.request_timeout_s)
    app.add_middleware(
        Edge, metrics=ctx.metrics, routes=ROUTES, api_key=settings.api_key, access_log=settings.access_log
    )
    _handle_errors(app, settings)
    attach_routes(app)
    _with_body_schemas(app)
    return app


def _handle_errors(app: FastAPI, settings: ServerSettings) -> None:
    """Every exception a route raises on purpose, in the one error shape."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Every problem is named, not only the first: a misspelt `itemz` is "items: Field required; itemz: Extra
        # inputs are not permitted", which says what to fix.
        errors = exc.errors()
        named = [(".".join(str(x) for x in e["loc"] if x != "body") or None, e["msg"]) for e in errors]
        message = "; ".join(f"{param or 'body'}: {msg}" for param, msg in named[:SHOWN_ERRORS])
        if len(named) > SHOWN_ERRORS:
            message += f"; and {len(named) - SHOWN_ERRORS} more"
        return error_response(400, message, param=named[0][0])

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

    @app.exception_handler(EngineError)
    async def _engine(_: Request, exc: EngineError) -> JSONResponse:
        return error_response(500, str(exc), type_="server_error")


def _with_body_schemas(app: FastAPI) -> None:
    """The OpenAPI document with the body models the routes reference (they read their bodies themselves)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            _, defs = models_json_schema(
                [(m, "validation") for m in BODIES], ref_template="#/components/schemas/{model}"
            )
            doc.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def run_server(app: FastAPI, *, host: str, port: int) -> None:
    """Serve `app` (from build_app) with uvicorn: header deadline, access log, and a shutdown bounded by the drain
    timeout however the backend behaves."""
    ctx: ServerContext = app.state.context
    s = ctx.settings
    configure_access_log(s.access_log)
    config = server_config(app, host=host, port=port, header_timeout_s=s.header_timeout_s, drain_s=s.drain_s)

    def on_deadline(deadline: float) -> None:
        ctx.shutdown_deadline = deadline

    DrainingServer(config, s.drain_s, on_deadline).run()
