"""A small client for the reward server's `POST /v1/rewards` route, shared by the trainer adapters.

Payloads are built and answers read with the server's own wire schema (`deltarubric.rm.reward_protocol`), so a
payload the server would refuse fails here, naming the field, before anything is sent.

The client keeps no open connection: each call opens and closes its own httpx client. That keeps the adapters
picklable (trainers copy reward functions into worker processes) and safe to call from any event loop.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from PIL import Image
from pydantic import ValidationError

from deltarubric.rm.media import data_url, image_to_data_url
from deltarubric.rm.retry import Outcome, RetryPolicy, asend, send
from deltarubric.rm.reward_protocol import GroupScoring, Mode, RewardItem, RewardsRequest, RewardsResponse

__all__ = ["RewardClient", "RewardServerError", "content_text", "image_ref", "last_user_text"]

Items = Sequence[RewardItem | Mapping[str, Any]]
_JSON = {"content-type": "application/json"}


class RewardServerError(RuntimeError):
    """The reward server rejected the request, answered nonsense, or kept failing for all tries."""


class RewardClient:
    """Posts rollouts to `{url}/v1/rewards`; `url` is the server root, e.g. `http://127.0.0.1:8000`.

    Connection errors and 408, 429, 500, 502, 503, 504 answers are retried as `retry` says (`deltarubric.rm.retry`:
    three tries in all by default, honouring Retry-After); any other error answer means a malformed request and raises
    at once with the server's message.
    """

    def __init__(
        self, url: str, timeout_s: float = 600, api_key: str | None = None, retry: RetryPolicy | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.api_key = api_key
        self.retry = retry or RetryPolicy()

    @property
    def endpoint(self) -> str:
        return f"{self.url}/v1/rewards"

    def rewards(
        self, items: Items, mode: Mode = "reference", group_scoring: GroupScoring = "win_rate"
    ) -> list[float | None]:
        """`rewards[i]` for `items[i]`, or None where the judge gave no valid verdict for it. Items are `RewardItem`s
        or dicts of their fields; a payload the server would refuse raises a pydantic ValidationError (a ValueError)."""
        payload = _payload(items, mode, group_scoring)
        with httpx.Client(timeout=self.timeout_s, headers=self._headers()) as client:
            outcome, tries = send(self.retry, lambda: client.post(self.endpoint, content=payload, headers=_JSON))
        return self._read(outcome, tries, len(items))

    async def arewards(
        self, items: Items, mode: Mode = "reference", group_scoring: GroupScoring = "win_rate"
    ) -> list[float | None]:
        """Async twin of `rewards`."""
        payload = _payload(items, mode, group_scoring)
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=self._headers()) as client:
            outcome, tries = await asend(self.retry, lambda: client.post(self.endpoint, content=payload, headers=_JSON))
        return self._read(outcome, tries, len(items))

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _read(self, outcome: Outcome, tries: int, n: int) -> list[float | None]:
        """The rewards from the last try's outcome, or a RewardServerError saying why there are none."""
        gave_up = f" (gave up after {tries} {'try' if tries == 1 else 'tries'})"
        if isinstance(outcome, httpx.HTTPError):
            raise RewardServerError(f"{self.endpoint}: {outcome!r}{gave_up}") from outcome
        if outcome.is_error:
            retried = gave_up if self.retry.retryable(outcome) else ""
            raise RewardServerError(f"{self.endpoint}: HTTP {outcome.status_code}: {outcome.text[:2000]}{retried}")
        try:
            answer = RewardsResponse.model_validate_json(outcome.content)
        except ValidationError as e:
            raise RewardServerError(f"{self.endpoint}: not a /v1/rewards answer ({e})") from e
        if len(answer.rewards) != n or len(answer.valid) != n:
            raise RewardServerError(f"{self.endpoint}: expected {n} rewards and valid flags, got {outcome.text:.500}")
        return answer.valid_rewards()


def _payload(items: Items, mode: Mode, group_scoring: GroupScoring) -> bytes:
    request = RewardsRequest.model_validate({"mode": mode, "group_scoring": group_scoring, "items": list(items)})
    return request.model_dump_json(exclude_none=True).encode()


def image_ref(image: Any) -> str:
    """What the server's `images` field takes, from the forms trainers hand over: a URL / data URL / path string
    (kept), a PIL image, encoded bytes, or a datasets/parquet dict `{"bytes": ..., "path": ...}`."""
    if isinstance(image, str):
        return image
    if isinstance(image, Image.Image):
        return image_to_data_url(image)
    if isinstance(image, bytes | bytearray):
        mime = Image.MIME.get(Image.open(io.BytesIO(image)).format or "", "image/png")
        return data_url(mime, bytes(image))
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
