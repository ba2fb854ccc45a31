"""A small client for the reward server's `POST /v1/rewards` route, shared by the trainer adapters.

The client keeps no open connection: each call opens and closes its own httpx client. That keeps the adapters
picklable (trainers copy reward functions into worker processes) and safe to call from any event loop.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import httpx
from PIL import Image

__all__ = ["RewardClient", "RewardServerError", "content_text", "image_ref", "image_to_data_url", "last_user_text"]

Mode = Literal["reference", "group"]
GroupScoring = Literal["win_rate", "bradley_terry"]

TRIES = 3
BACKOFF_S = 1.0  # wait after the first failed try; doubles after each further one
MAX_RETRY_AFTER_S = 30.0  # a server's Retry-After is honoured up to this, so a bad header cannot stall training
# Failures where the judge never answered: sending again is safe (judging has no side effects). Read timeouts are
# not among them: after waiting `timeout_s` for a busy judge, retrying would only multiply the wait.
_RETRY_EXCEPTIONS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)
_PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"}


class RewardServerError(RuntimeError):
    """The reward server rejected the request, answered nonsense, or kept failing for all tries."""


class RewardClient:
    """Posts rollouts to `{url}/v1/rewards`; `url` is the server root, e.g. `http://127.0.0.1:8000`.

    Connection errors, 429 and 5xx answers are retried (`TRIES` tries in all, honouring Retry-After); a 4xx answer
    means a malformed request and raises at once with the server's message.
    """

    def __init__(self, url: str, timeout_s: float = 600, api_key: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.api_key = api_key

    @property
    def endpoint(self) -> str:
        return f"{self.url}/v1/rewards"

    def rewards(
        self, items: list[dict[str, Any]], mode: Mode = "reference", group_scoring: GroupScoring = "win_rate"
    ) -> list[float | None]:
        """`rewards[i]` for `items[i]`, or None where the judge gave no valid verdict for it."""
        payload = {"mode": mode, "group_scoring": group_scoring, "items": items}
        with httpx.Client(timeout=self.timeout_s, headers=self._headers()) as client:
            attempt = 0
            while True:
                attempt += 1
                try:
                    outcome: httpx.Response | httpx.TransportError = client.post(self.endpoint, json=payload)
                except _RETRY_EXCEPTIONS as e:
                    outcome = e
                result = self._settle(attempt, outcome, len(items))
                if isinstance(result, list):
                    return result
                time.sleep(result)

    async def arewards(
        self, items: list[dict[str, Any]], mode: Mode = "reference", group_scoring: GroupScoring = "win_rate"
    ) -> list[float | None]:
        """Async twin of `rewards`."""
        payload = {"mode": mode, "group_scoring": group_scoring, "items": items}
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=self._headers()) as client:
            attempt = 0
            while True:
                attempt += 1
                try:
                    outcome: httpx.Response | httpx.TransportError = await client.post(self.endpoint, json=payload)
                except _RETRY_EXCEPTIONS as e:
                    outcome = e
                result = self._settle(attempt, outcome, len(items))
                if isinstance(result, list):
                    return result
                await asyncio.sleep(result)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _settle(
        self, attempt: int, outcome: httpx.Response | httpx.TransportError, n: int
    ) -> list[float | None] | float:
        """The rewards, or the seconds to wait before the next try. Raises when no try can succeed."""
        if isinstance(outcome, httpx.TransportError):
            if attempt >= TRIES:
                raise RewardServerError(f"{self.endpoint}: {outcome!r} (gave up after {TRIES} tries)") from outcome
            return BACKOFF_S * 2 ** (attempt - 1)
        if not _retryable(outcome):
            return _parse(outcome, n)
        if attempt >= TRIES:
            raise RewardServerError(
                f"{self.endpoint}: HTTP {outcome.status_code}: {outcome.text[:500]} (gave up after {TRIES} tries)"
            )
        try:  # only the delta-seconds form; an HTTP-date falls back to the backoff
            return min(max(float(outcome.headers["retry-after"]), 0.0), MAX_RETRY_AFTER_S)
        except (KeyError, ValueError):
            return BACKOFF_S * 2 ** (attempt - 1)


def _retryable(response: httpx.Response) -> bool:
    return response.status_code == 429 or response.status_code >= 500


def _parse(response: httpx.Response, n: int) -> list[float | None]:
    if response.is_error:
        raise RewardServerError(f"{response.request.url}: HTTP {response.status_code}: {response.text[:2000]}")
    body = response.json()
    rewards, valid = body.get("rewards"), body.get("valid")
    if not isinstance(rewards, list) or not isinstance(valid, list) or len(rewards) != n or len(valid) != n:
        raise RewardServerError(f"{response.request.url}: expected {n} rewards and valid flags, got {body!r:.500}")
    return [float(r) if ok else None for r, ok in zip(rewards, valid, strict=True)]


def image_to_data_url(image: Image.Image) -> str:
    """A base64 PNG data URL: lossless, so the judge sees exactly the pixels the policy saw."""
    if image.mode not in _PNG_MODES:  # e.g. CMYK, YCbCr: PNG cannot store them
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_ref(image: Any) -> str:
    """What the server's `images` field takes, from the forms trainers hand over: a URL / data URL / path string
    (kept), a PIL image, encoded bytes, or a datasets/parquet dict `{"bytes": ..., "path": ...}`."""
    if isinstance(image, str):
        return image
    if isinstance(image, Image.Image):
        return image_to_data_url(image)
    if isinstance(image, bytes | bytearray):
        mime = Image.MIME.get(Image.open(io.BytesIO(image)).format or "", "image/png")
        return f"data:{mime};base64," + base64.b64encode(image).decode("ascii")
    if isinstance(image, Mapping):
        if image.get("bytes") is not None:
            return image_ref(image["bytes"])
        for key in ("path", "url", "image"):
            if image.get(key) is not None:
                return image_ref(image[key])
    raise TypeError(
        f"cannot send an image given as {type(image).__name__}: expected str, PIL image, bytes or "
        "a dict with 'bytes' or 'path'"
    )


def content_text(content: str | Sequence[Mapping[str, Any]] | None) -> str:
    """The text of a chat message's content: a string, or its text parts joined by newlines."""
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(str(part["text"]) for part in content if part.get("type") == "text" and part.get("text"))


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of the last user message (the question a rollout answers), or "" when there is none."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""
