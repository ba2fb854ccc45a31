"""Which media a server request may name, and loading them under that policy.

Base64 data URLs are always accepted. Files (paths or file:// URLs) only inside the configured folders, checked
after resolving symlinks and '..', so nothing outside can be reached. http(s) is off unless enabled, and then never
to loopback, private, link-local or reserved addresses unless that is allowed too; redirects are not followed, so a
public URL cannot bounce the server to an internal one.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from PIL import Image

from app.settings import ServerSettings
from rm.media import MediaError, decode_image, describe, download, load_image, local_file

T = TypeVar("T")


def _named(action: Callable[[], T], where: str) -> T:
    """Run a media step; any failure, including malformed references (NUL bytes, bad URLs, lone surrogates), is a
    MediaError naming the field, never a 500."""
    try:
        return action()
    except MediaError as e:
        raise MediaError(f"{where}: {e}") from e
    except (ValueError, UnicodeError, OSError) as e:
        raise MediaError(f"{where}: not a usable media reference ({type(e).__name__})") from e


class MediaPolicy:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.roots = [p.resolve() for p in settings.allowed_media_dirs]

    def image(self, ref: str, where: str) -> Image.Image:
        """Decode an image named by a request; MediaError (-> 400) names the field."""
        limit = self.settings.max_input_pixels

        def load() -> Image.Image:
            if ref.startswith("data:"):
                return load_image(ref, max_input_pixels=limit)
            if ref.startswith(("http://", "https://")):
                return decode_image(self._fetch(ref), describe(ref), max_input_pixels=limit)
            return load_image(str(self.local_path(ref)), max_input_pixels=limit)

        return _named(load, where)

    def video(self, ref: str, where: str) -> str:
        """Check a video reference against the policy; the engine decodes it."""

        def check() -> str:
            if ref.startswith("data:"):
                return ref
            if ref.startswith(("http://", "https://")):
                self._check_host(ref)
                return ref
            return str(self.local_path(ref))

        return _named(check, where)

    def local_path(self, ref: str) -> Path:
        resolved = local_file(ref).resolve()
        if not any(resolved.is_relative_to(root) for root in self.roots):
            hint = "no media folders are allowed (--allow-media-dir)" if not self.roots else "outside the allowed media folders"
            raise MediaError(f"{describe(ref)}: local files are refused: {hint}")
        return resolved

    def _check_host(self, url: str) -> None:
        if not self.settings.allow_http_media:
            raise MediaError(f"{describe(url)}: http(s) media is disabled on this server (--allow-http-media)")
        host = urlparse(url).hostname or ""
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
        except socket.gaierror as e:
            raise MediaError(f"{describe(url)}: cannot resolve {host!r}") from e
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            # not is_global covers loopback, private, link-local, reserved and shared (100.64/10, cloud metadata) space
            if not ip.is_global and not self.settings.allow_private_addresses:
                raise MediaError(f"{describe(url)}: {host} resolves to an internal address ({ip}); refused")

    def _fetch(self, url: str) -> bytes:
        self._check_host(url)
        return download(url, follow_redirects=False)  # a public URL must not bounce the server to an internal one
