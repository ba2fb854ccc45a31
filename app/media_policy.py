"""Which media a server request may name, and loading them under that policy and the request's budgets.

Base64 data URLs are always accepted. Files (paths or file:// URLs) only inside the configured folders, checked
after resolving symlinks and '..', so nothing outside can be reached. http(s) is off unless enabled, and then never
to loopback, private, link-local or reserved addresses unless that is allowed too; redirects are not followed, so a
public URL cannot bounce the server to an internal one.

Loading is bounded three ways. Downloads hold one of `media_downloads` slots and must finish, waiting for a slot
included, within `media_timeout_s` in all (not per read), and are cancelled with their request. Every image of a
request is opened from its header first and the pixels it will have after downscaling to `max_pixels` are summed
against `max_request_pixels` before any is decoded; then the request takes that many from the budget all requests
share (`held_pixels`), waiting while others hold it, and gives them back once answered, so however many requests wait
in the judge's queue, their decoded images together stay within it. Decoding runs in its own `decode_threads`
threads, shrinks each image to `max_pixels` while or right after decoding it, and hands memory back to the system
after large ones.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import httpx
from PIL import Image

from deltarubric.app.errors import InputError
from deltarubric.app.metrics import Metrics
from deltarubric.app.pools import PixelBudget, PixelLease, Slots, WorkPool
from deltarubric.app.settings import ServerSettings
from deltarubric.rm.media import (
    MAX_DOWNLOAD_BYTES,
    MediaError,
    decode_image,
    describe,
    local_file,
    open_image,
    read_bytes,
    target_size,
)

T = TypeVar("T")

_TRIM_ABOVE_PIXELS = 4_000_000  # after decoding an image this large, give freed memory back to the system
# Work this small runs on the event loop: a thread hop costs more (decoding 250k pixels takes about a millisecond).
_INLINE_BYTES = 64 * 1024
_INLINE_PIXELS = 250_000


class _ByteBudget:
    """Bytes one request's downloads may hold in all."""

    def __init__(self, limit: int) -> None:
        self.limit, self.left = limit, limit

    def take(self, n: int, url: str) -> None:
        self.left -= n
        if self.left < 0:
            raise MediaError(f"{describe(url)}: the request's downloads exceed {self.limit} bytes (--max-body-bytes)")


@dataclass(frozen=True)
class _Probe:
    data: bytes
    full_pixels: int  # as stored
    pixels: int  # once downscaled to max_pixels: what counts against the request's budget


def _named(action: Callable[[], T], where: str) -> T:
    """Run a media step; any failure, including malformed references (NUL bytes, bad URLs, lone surrogates), is a
    MediaError naming the field, never a 500."""
    try:
        return action()
    except MediaError as e:
        raise MediaError(f"{where}: {e}") from e
    except (ValueError, UnicodeError, OSError) as e:
        raise MediaError(f"{where}: not a usable media reference ({type(e).__name__})") from e


async def _named_async(action: Awaitable[T], where: str) -> T:
    try:
        return await action
    except MediaError as e:
        raise MediaError(f"{where}: {e}") from e
    except (ValueError, UnicodeError, OSError) as e:
        raise MediaError(f"{where}: not a usable media reference ({type(e).__name__})") from e


async def all_or_none(jobs: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Run jobs concurrently; on the first failure cancel the rest (downloads included) and raise that failure."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(job) for job in jobs]
    except BaseExceptionGroup as eg:
        first = eg.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return [t.result() for t in tasks]


def _malloc_trim() -> Callable[[], object]:
    """glibc keeps freed image buffers in per-thread arenas, so a burst of big decodes stays resident for good; its
    malloc_trim returns them. A no-op elsewhere."""
    name = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    return (lambda: trim(0)) if trim else (lambda: None)


release_memory = _malloc_trim()


class MediaPolicy:
    def __init__(self, settings: ServerSettings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        # Media get threads of their own: a burst of big images then never delays parsing small requests, and at most
        # `decode_threads` images are ever held at full size.
        self.decode = WorkPool("decode", settings.decode_threads, metrics)
        self.roots = [p.resolve() for p in settings.allowed_media_dirs]
        self.downloads = Slots("downloads", settings.media_downloads, metrics)
        # Name lookups block a thread; they get their own, so a slow resolver cannot occupy the work pool.
        self.lookups = WorkPool("dns", settings.media_downloads, metrics)
        self.pixels = PixelBudget(settings.held_pixels, metrics)
        self._client: httpx.AsyncClient | None = None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self.lookups.shutdown()
        self.decode.shutdown()

    # ------------------------------------------------------------------------------------------ images

    def lease(self) -> PixelLease:
        """A request's hold on the shared decoded-pixel budget: `async with` it around loading and answering."""
        return PixelLease(self.pixels)

    async def images(self, refs: dict[str, str], lease: PixelLease) -> dict[str, Image.Image]:
        """Decode every distinct image reference of one request (ref -> the field that names it in errors) under the
        policy and the request's pixel budget, holding their pixels in `lease` (taken before decoding; this waits
        while other requests hold the shared budget). MediaError (-> 400) names the field; over the request's budget
        is a 413."""
        if not refs:
            return {}
        # Downloaded bytes are held until every header is read: together they count against the body limit.
        downloads = _ByteBudget(self.settings.max_body_bytes)
        probes = await all_or_none([_named_async(self._probe(ref, downloads), where) for ref, where in refs.items()])
        total = sum(p.pixels for p in probes)
        s = self.settings
        if total > s.max_request_pixels:
            raise InputError(
                f"the request's {len(probes)} images decode to {total} pixels (each downscaled to at most "
                f"{s.max_pixels}); the limit is {s.max_request_pixels}",
                "images",
                413,
            )
        await lease.take(total)
        decoded = await all_or_none([self._decode(p, ref, where) for p, (ref, where) in zip(probes, refs.items())])
        return dict(zip(refs, decoded))

    async def _probe(self, ref: str, downloads: _ByteBudget) -> _Probe:
        """The bytes behind a reference and, from the image's header alone, its size now and once downscaled."""
        if ref.startswith("data:"):  # base64 of up to the body limit: CPU, off the event loop unless small
            data = read_bytes(ref) if len(ref) <= _INLINE_BYTES else await self.decode.run(read_bytes, ref)
        elif ref.startswith(("http://", "https://")):
            data = await self._download(ref, downloads)
        else:
            data = await self.decode.run(read_bytes, str(self.local_path(ref)))  # refused before any file is read
        w, h = open_image(data, describe(ref), self.settings.max_input_pixels).size  # a header read: cheap
        tw, th = target_size(w, h, self.settings.max_pixels)
        return _Probe(data, w * h, tw * th)

    async def _decode(self, probe: _Probe, ref: str, where: str) -> Image.Image:
        if probe.full_pixels <= _INLINE_PIXELS:  # a thread hop would cost more than decoding it
            return self._decode_now(probe, ref, where)
        return await self.decode.run(self._decode_now, probe, ref, where)

    def _decode_now(self, probe: _Probe, ref: str, where: str) -> Image.Image:
        s = self.settings
        img = _named(
            lambda: decode_image(
                probe.data, describe(ref), max_input_pixels=s.max_input_pixels, max_pixels=s.max_pixels
            ),
            where,
        )
        if probe.full_pixels >= _TRIM_ABOVE_PIXELS:
            release_memory()
        return img

    # ------------------------------------------------------------------------------------------ videos, files, hosts

    async def video(self, ref: str, where: str) -> str:
        """Check a video reference against the policy; the engine decodes it."""
        if ref.startswith(("http://", "https://")):
            await _named_async(self._check_host(ref), where)
            return ref
        if ref.startswith("data:"):
            return ref
        return str(_named(lambda: self.local_path(ref), where))

    def local_path(self, ref: str) -> Path:
        resolved = local_file(ref).resolve()
        if not any(resolved.is_relative_to(root) for root in self.roots):
            hint = (
                "no media folders are allowed (--allow-media-dir)"
                if not self.roots
                else "outside the allowed media folders"
            )
            raise MediaError(f"{describe(ref)}: local files are refused: {hint}")
        return resolved

    async def _check_host(self, url: str) -> None:
        if not self.settings.allow_http_media:
            raise MediaError(f"{describe(url)}: http(s) media is disabled on this server (--allow-http-media)")
        host = urlparse(url).hostname or ""
        try:
            infos = await self.lookups.run(socket.getaddrinfo, host, None)
        except socket.gaierror as e:
            raise MediaError(f"{describe(url)}: cannot resolve {host!r}") from e
        for address in {info[4][0] for info in infos}:
            ip = ipaddress.ip_address(address.split("%")[0])
            # not is_global covers loopback, private, link-local, reserved and shared (100.64/10, cloud metadata) space
            if not ip.is_global and not self.settings.allow_private_addresses:
                raise MediaError(f"{describe(url)}: {host} resolves to an internal address ({ip}); refused")

    async def _download(self, url: str, budget: _ByteBudget) -> bytes:
        """The body of an http(s) image: one slot, one total deadline (waiting for the slot included), no redirects;
        cancelled, connection closed, as soon as its request is."""
        limit = self.settings.media_timeout_s
        try:
            async with asyncio.timeout(limit):
                await self.downloads.acquire()
                try:
                    await self._check_host(url)
                    return await self._get(url, budget)
                finally:
                    self.downloads.release()
        except TimeoutError:
            self.metrics.download_timeouts.inc()
            raise MediaError(f"{describe(url)}: download did not finish within {limit:g} s") from None

    async def _get(self, url: str, budget: _ByteBudget) -> bytes:
        if self._client is None:
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                timeout=self.settings.media_timeout_s,
                limits=httpx.Limits(max_connections=self.settings.media_downloads),
            )
        try:
            async with self._client.stream("GET", url) as r:
                if r.is_redirect:  # a public URL must not bounce the server to an internal one
                    raise MediaError(f"{describe(url)}: redirects are not followed")
                r.raise_for_status()
                chunks, size = [], 0
                async for chunk in r.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_DOWNLOAD_BYTES:
                        raise MediaError(f"{describe(url)}: larger than {MAX_DOWNLOAD_BYTES} bytes")
                    budget.take(len(chunk), url)
                    chunks.append(chunk)
                return b"".join(chunks)
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            raise MediaError(f"{describe(url)}: download failed ({e})") from e
