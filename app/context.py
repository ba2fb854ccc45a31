"""What every route family shares: settings, metrics, the work pool, the media policy and the token counter; reading
bodies, the request deadline, and encoding answers.

The event loop only moves bytes and futures and does work too small for a thread hop (about a millisecond); anything
larger runs in the server's own work pool, so no request, however large or malformed, stalls the others or /health.
"""

from __future__ import annotations

import asyncio
import email.message
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from deltarubric.app.batcher import Saturated
from deltarubric.app.errors import InputError
from deltarubric.app.limits import TokenCounter
from deltarubric.app.media_policy import MediaPolicy
from deltarubric.app.metrics import Metrics
from deltarubric.app.pools import PixelLease, WorkPool
from deltarubric.app.settings import ServerSettings
from deltarubric.rm.backends import Backend

INLINE_BODY_BYTES = 64 * 1024  # parsed on the event loop: about a millisecond, less than a thread hop
INLINE_TEXT_CHARS = 16 * 1024  # a prompt (or body) this short is tokenized on the event loop
INLINE_PAIRS = 8  # built and checked (tokens counted) on the event loop: about a millisecond a pair
LARGE_BODY_BYTES = 1 << 20  # parsing more takes long enough to count against `large_bodies`
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
Precheck = Callable[[Any], None]


def _json_content_type(value: str | None) -> bool:
    """As FastAPI decides: no content type, application/json or application/*+json (any charset)."""
    if not value:
        return True
    message = email.message.Message()
    message["content-type"] = value
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def parse_body(raw: bytes, model: type[M], precheck: Precheck | None = None) -> M:
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


def at_most(field_name: str, limit: int, what: str) -> Precheck:
    """A precheck: the body's list `field_name` has at most `limit` entries (413 naming them `what`)."""

    def check(data: Any) -> None:
        items = data.get(field_name) if isinstance(data, dict) else None
        if isinstance(items, list) and len(items) > limit:
            raise InputError(f"{len(items)} {what} in one request; the limit is {limit}", field_name, 413)

    return check


class ServerContext:
    """The resources the reward and chat services share, and the steps every route takes."""

    def __init__(self, backend: Backend, settings: ServerSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.work = WorkPool("work", settings.work_threads, self.metrics)
        # Large bodies take at most half the work threads, so small requests always find one.
        self.large_bodies = asyncio.Semaphore(max(1, settings.work_threads // 2))
        self.policy = MediaPolicy(settings, self.metrics)
        self.tokens = TokenCounter(backend)
        self.shutdown_deadline: float | None = None  # set on SIGTERM by run_server's DrainingServer

    async def parse(self, request: Request, model: type[M], precheck: Precheck | None = None) -> M:
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

    async def respond(self, answer: BaseModel, inline: bool = True) -> Response:
        """The answer as JSON; encoded in the work pool unless `inline` (hundreds of verdicts with their raw texts
        are megabytes of JSON)."""
        body = await self.cpu(inline, answer.model_dump_json)
        return Response(body, media_type="application/json")

    def check_counts(self, pairs: int, media: int) -> None:
        s = self.settings
        if pairs > s.max_pairs_per_request:
            raise InputError(f"{pairs} pairs in one request; the limit is {s.max_pairs_per_request}", "requests", 413)
        if media > s.max_images_per_request:
            raise InputError(f"{media} images in one request; the limit is {s.max_images_per_request}", "images", 413)

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

    def drain_deadline(self) -> float:
        """When draining must end (time.monotonic()): the SIGTERM's deadline, or a whole drain timeout from now."""
        return self.shutdown_deadline or time.monotonic() + self.settings.drain_s

    async def close(self) -> None:
        """Release pools and connections (after the services have drained)."""
        await self.policy.close()
        self.work.shutdown()
