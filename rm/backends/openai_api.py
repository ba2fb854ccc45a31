"""Client backend for any OpenAI-compatible chat endpoint — `vllm serve` on GPU is the production path.

Async with bounded concurrency, retries as `deltarubric.rm.retry` says (5xx, 429 and connection errors, backoff or
Retry-After), per-request timeouts, and round-robin over several base URLs (data-parallel replicas): a retry goes to
the next replica.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
from PIL import Image

from deltarubric.rm.backends.base import Backend, Conversation, Generation, TextPart, TokenLogprob, to_chat_dicts
from deltarubric.rm.config import SamplingConfig
from deltarubric.rm.media import image_to_engine_url, pixel_limits, video_to_url
from deltarubric.rm.retry import RetryPolicy, asend
from deltarubric.rm.types import Usage

_JSON = {"content-type": "application/json"}


class OpenAIBackend(Backend):
    name = "openai"
    supports_video = True  # the server decodes; vLLM takes video_url parts

    def __init__(
        self,
        model: str,
        base_urls: Sequence[str],
        *,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout_s: float = 600.0,
        max_retries: int = 3,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        backoff_s: float = 0.5,
    ) -> None:
        self.model = model
        self._urls = itertools.cycle([u.rstrip("/") + "/chat/completions" for u in base_urls])
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retry = RetryPolicy(retries=max_retries, backoff_s=backoff_s)
        # vLLM's per-request processor override; only sent when set, since other servers may reject unknown fields.
        self.mm_kwargs = pixel_limits(min_pixels, max_pixels)
        self._encoded = _EncodedImages()

    def body(self, conv: Conversation, sampling: SamplingConfig, urls: dict[Any, str]) -> dict[str, Any]:
        """The chat.completions request for one conversation (`urls` memoises media encodings across a batch)."""

        def image(img: Image.Image) -> dict[str, Any]:
            return {"type": "image_url", "image_url": {"url": _memo(urls, id(img), lambda: self._encoded.url(img))}}

        messages = to_chat_dicts(
            conv,
            image,
            lambda v: {"type": "video_url", "video_url": {"url": _memo(urls, v, lambda: video_to_url(v))}},
            plain_text=True,
        )
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "seed": sampling.seed,
        }
        if sampling.top_logprobs:
            body |= {"logprobs": True, "top_logprobs": sampling.top_logprobs}
        if self.mm_kwargs:
            body["mm_processor_kwargs"] = self.mm_kwargs
        return body

    def payloads(self, conversations: Sequence[Conversation], sampling: SamplingConfig) -> list[bytes]:
        """Each conversation's request body as JSON bytes, every image encoded once (see `_EncodedImages`)."""
        urls: dict[Any, str] = {}
        return [_json_bytes(self.body(conv, sampling, urls)) for conv in conversations]

    async def agenerate(self, conversations: Sequence[Conversation], sampling: SamplingConfig) -> list[Generation]:
        # Encoding media (a 3000-pixel photo as PNG takes seconds) and serialising megabytes of base64 is CPU work:
        # done in a thread, so an event loop this runs on (the reward server's) keeps answering meanwhile.
        # Text-only bodies are cheaper to build here than a thread hop.
        with_media = any(not isinstance(p, TextPart) for conv in conversations for m in conv for p in m.content)
        if with_media:
            payloads = await asyncio.to_thread(self.payloads, conversations, sampling)
        else:
            payloads = self.payloads(conversations, sampling)
        sem = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=self.headers, limits=limits) as client:

            async def one(payload: bytes) -> Generation:
                async with sem:
                    return await self._post(client, payload)

            return list(await asyncio.gather(*(one(p) for p in payloads)))

    async def _post(self, client: httpx.AsyncClient, payload: bytes) -> Generation:
        url = ""

        def attempt() -> Awaitable[httpx.Response]:
            nonlocal url
            url = next(self._urls)  # a retry goes to the next replica
            return client.post(url, content=payload, headers=_JSON)

        outcome, _ = await asend(self.retry, attempt)
        if isinstance(outcome, httpx.HTTPError):
            return Generation(error=f"{url}: {type(outcome).__name__}: {outcome}")
        if outcome.status_code >= 400:
            return Generation(error=f"{url}: HTTP {outcome.status_code}: {outcome.text[:500]}")
        try:
            return parse_completion(outcome.json())
        except (ValueError, KeyError, IndexError, TypeError) as e:  # a proxy's HTML page, an empty choices list
            return Generation(error=f"{url}: malformed chat.completion response ({type(e).__name__}: {e})")


class _EncodedImages:
    """Data URLs of the images of conversations in flight, each encoded once: a multi-stage judge sends the same
    images with every stage, and a swapped pair shows them twice. Keyed by the image object and dropped when it is
    freed, so only images still in use are held (thread-safe: dict operations under the GIL; a race encodes twice)."""

    def __init__(self) -> None:
        self._urls: dict[int, str] = {}

    def url(self, img: Image.Image) -> str:
        key = id(img)
        found = self._urls.get(key)
        if found is None:
            found = image_to_engine_url(img)
            if key not in self._urls:
                weakref.finalize(img, self._urls.pop, key, None)  # before the id can be reused by another image
            self._urls[key] = found
        return found

    def __len__(self) -> int:
        return len(self._urls)


def _json_bytes(body: dict[str, Any]) -> bytes:
    # As httpx encodes `json=`: compact UTF-8, NaN refused.
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _memo(urls: dict[Any, str], key: Any, encode: Callable[[], str]) -> str:
    if key not in urls:
        urls[key] = encode()
    return urls[key]


def parse_completion(data: dict[str, Any]) -> Generation:
    """A chat.completion JSON -> Generation. Reasoning split out by the server goes back into a <think> block."""
    choice = data["choices"][0]
    message = choice.get("message") or {}
    text = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        text = f"<think>{reasoning}</think>{text}"
    tokens = [
        TokenLogprob(t["token"], t["logprob"], {a["token"]: a["logprob"] for a in t.get("top_logprobs") or []})
        for t in ((choice.get("logprobs") or {}).get("content") or [])
    ]
    usage = data.get("usage") or {}
    return Generation(
        text=text,
        tokens=tokens,
        usage=Usage(prompt_tokens=usage.get("prompt_tokens", 0), completion_tokens=usage.get("completion_tokens", 0)),
        finish_reason=choice.get("finish_reason") or "stop",
    )
