"""The HTTP app: OpenAI-compatible `/v1/models` and `/v1/chat/completions` over any backend, plus `/health`.

Handlers are thin: validate at the edge, convert to a Conversation, await the backend, shape the answer. Every error
has one JSON shape, `{"error": {"message", "type", "param", "code"}}`, and input errors are 400s.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.protocol import ChatCompletionRequest, ChatMessage, completion_response
from rm.backends import Backend, Conversation, ImagePart, Message, TextPart, VideoPart
from rm.config import SamplingConfig
from rm.media import DEFAULT_MAX_INPUT_PIXELS, MediaError, load_image


def error_response(status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": status}}
    return JSONResponse(body, status_code=status)


def to_conversation(messages: list[ChatMessage], max_input_pixels: int) -> Conversation:
    """Wire messages -> Conversation. Images must be base64 data URLs: this server fetches nothing by itself."""
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


def build_app(backend: Backend, model_name: str, *, max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS) -> FastAPI:
    app = FastAPI(title="deltarubric", version="0.1.0")
    app.state.backend = backend
    app.state.model_name = model_name
    created = int(time.time())

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        param = ".".join(str(x) for x in first["loc"] if x != "body") or None
        return error_response(400, f"{param or 'body'}: {first['msg']}", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), type_="http_error")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": model_name, "object": "model", "created": created, "owned_by": "deltarubric"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatCompletionRequest) -> Any:
        if req.model != model_name:
            return error_response(404, f"model {req.model!r} is not served here; use {model_name!r}", param="model")
        try:
            conv = to_conversation(req.messages, max_input_pixels)
        except MediaError as e:
            return error_response(400, str(e), param="messages")
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
        (gen,) = await backend.agenerate([conv], sampling)
        if gen.error:
            return error_response(500, f"generation failed: {gen.error}", type_="server_error")
        return completion_response(model_name, gen, (req.top_logprobs or 0) if req.logprobs else None)

    return app
