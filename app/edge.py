"""What sits between the socket and the routes: connection deadlines, body limits, auth, metrics, the access log,
and a bounded shutdown.

- Header deadline: uvicorn closes idle keep-alive connections but waits forever for the headers of a request that
  trickles in (slowloris); `header_protocol` closes a connection whose headers are not complete in time.
- `BodyLimit`: refuses bodies over the limit (by Content-Length or while streaming) and bodies not received within
  the request timeout, before anything parses them; a client that hangs up mid-body never reaches the app.
- `Edge`: bearer auth, request counts and latency by route, one access-log line per request, and a JSON 500 for any
  error that escapes a route, so every 5xx has the one error shape and is counted. A client that went away is
  counted apart (`deltarubric_client_disconnects_total`), not as an error: nobody can inflate the 5xx rate by
  hanging up.
- `run_server`: uvicorn with the above; on SIGTERM accepted work is answered within the drain timeout, and if an
  engine thread never returns the process exits anyway (a thread cannot be killed; the process can).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import h11
import uvicorn
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

from deltarubric.app.errors import error_response
from deltarubric.app.metrics import Metrics

log = logging.getLogger("deltarubric.server")
access = logging.getLogger("deltarubric.access")


# ---------------------------------------------------------------------------------------------------- connections


class _HeaderDeadline(H11Protocol):
    """h11 with a deadline for each request's headers, counted from the connection (or the previous response)."""

    header_timeout_s = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are in (or the connection is done)
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this keep-alive connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        waiting = self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)
        if waiting and not self.transport.is_closing():
            self.transport.close()


def header_protocol(header_timeout_s: float) -> type[H11Protocol]:
    return type("HeaderDeadlineH11", (_HeaderDeadline,), {"header_timeout_s": header_timeout_s})


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse bodies over the limit, by Content-Length or while streaming, and bodies that do not
    arrive within `timeout_s`, before parsing them. A client that hangs up mid-body raises ClientDisconnect (which
    `Edge` counts as such) without the app being called: there is nothing to parse and nobody to answer."""

    def __init__(self, app: Any, max_bytes: int, timeout_s: float | None = None) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

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
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    message = await counted()
                    if message["type"] == "http.disconnect":  # hung up mid-body: nobody to answer, nothing to run
                        raise ClientDisconnect
                    messages.append(message)
                    if not message.get("more_body"):
                        break
        except _BodyTooLarge:
            return await too_large(scope, receive, send)
        except TimeoutError:
            late = error_response(408, f"request body not received within {self.timeout_s:g} s", param="body")
            return await late(scope, receive, send)
        replay = iter(messages)

        async def replayed() -> dict:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)


# ---------------------------------------------------------------------------------------------------- requests


class Edge:
    """Outermost ASGI middleware: auth, metrics, the access log, and a JSON 500 for errors that escape a route.

    Routes report how many pairs a request carried in `request.state.pairs` (the access log shows it); bodies,
    queries and tokens are never logged, and unknown paths are logged as 'other'.
    """

    def __init__(
        self, app: Any, *, metrics: Metrics, routes: Sequence[str], api_key: str | None, access_log: bool
    ) -> None:
        self.app, self.metrics, self.routes = app, metrics, frozenset(routes)
        self.api_key, self.access_log = api_key, access_log

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in self.routes else "other"
        t0 = time.perf_counter()
        status: int | None = None

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self.api_key and scope["path"] != "/health" and not self._authorized(scope):
                await error_response(401, "missing or wrong bearer token", type_="authentication_error")(
                    scope, receive, sending
                )
            else:
                await self.app(scope, receive, sending)
        except ClientDisconnect:  # the client went away: not an error of ours, and nobody left to tell
            self.metrics.client_disconnects.labels(route).inc()
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], route)
            if status is not None:  # the answer has started: nothing else can be sent
                raise
            failed = error_response(500, "internal server error (logged on the server)", type_="server_error")
            await failed(scope, receive, sending)
        except asyncio.CancelledError:
            # uvicorn cancels what is still running at the drain timeout: answer 503 rather than drop the connection
            # (the task then ends normally; uvicorn only cancelled it to end it).
            if status is None:
                gone = error_response(
                    503, "the server is shutting down; retry", type_="overloaded", headers={"Retry-After": "1"}
                )
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(gone(scope, receive, sending), 1.0)
            if status is None:
                raise
        finally:
            if status is not None:  # None: never answered (the client had gone)
                elapsed = time.perf_counter() - t0
                self.metrics.requests.labels(route, str(status)).inc()
                self.metrics.latency.labels(route).observe(elapsed)
                if self.access_log:
                    client = scope.get("client") or ("-", 0)
                    pairs = (scope.get("state") or {}).get("pairs", "-")
                    access.info(
                        '%s "%s %s" %d %.3fs pairs=%s', client[0], scope["method"], route, status, elapsed, pairs
                    )

    def _authorized(self, scope: dict) -> bool:
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        return hmac.compare_digest(given, f"Bearer {self.api_key}".encode())


# ---------------------------------------------------------------------------------------------------- the process


def server_config(
    app: Any, *, host: str, port: int, header_timeout_s: float, drain_s: float, **kwargs: Any
) -> uvicorn.Config:
    """uvicorn's settings for this app: the header deadline, graceful shutdown within the drain timeout, and our own
    access log instead of uvicorn's (which would log every path, unknown ones included)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=header_protocol(header_timeout_s),
        timeout_graceful_shutdown=max(1, math.floor(drain_s)),
        access_log=False,
        **kwargs,
    )


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose shutdown ends within the drain timeout: on the first SIGTERM/SIGINT it records the
    deadline (the app's shutdown uses what is left of it) and starts a watchdog that ends the process at the deadline
    plus `grace_s` if something (an engine thread that never returns) still holds it."""

    def __init__(
        self, config: uvicorn.Config, drain_s: float, on_deadline: Callable[[float], None], grace_s: float = 5.0
    ) -> None:
        super().__init__(config)
        self.drain_s, self.grace_s, self.on_deadline = drain_s, grace_s, on_deadline
        self._watchdog: threading.Thread | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._watchdog is None:
            deadline = time.monotonic() + self.drain_s
            self.on_deadline(deadline)
            self._watchdog = threading.Thread(
                target=_exit_at, args=(deadline + self.grace_s,), daemon=True, name="deltarubric-watchdog"
            )
            self._watchdog.start()
        super().handle_exit(sig, frame)


def _exit_at(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))
    log.error("shutdown did not finish within the drain timeout (a backend call that does not return); exiting")
    logging.shutdown()
    sys.stderr.flush()
    os._exit(1)


def configure_access_log(enabled: bool) -> None:
    """The access log goes to stderr at INFO whatever the root level, unless turned off (--no-access-log)."""
    access.propagate = False
    access.setLevel(logging.INFO if enabled else logging.CRITICAL + 1)
    if enabled and not access.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        access.addHandler(handler)
