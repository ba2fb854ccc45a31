"""Loading media from paths, URLs, data URLs or PIL images, with the guards a judge needs.

Every failure is a `MediaError` naming the source and what is wrong, raised before any model call.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import warnings
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image, UnidentifiedImageError

from deltarubric.rm.types import MediaRef

MAX_ASPECT_RATIO = 200  # Qwen-VL's resizer refuses more extreme shapes; fail early with our own message.
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_INPUT_PIXELS = 64_000_000  # above this an image is refused before decoding (decompression bombs)
# Qwen3-VL's image processor shrinks anything larger to this (16384 patches of 32x32) anyway, so decoding to it
# changes no verdict and keeps a burst of huge images from holding gigabytes (the server's default).
DEFAULT_MAX_PIXELS = 16_777_216
# The formats we mean to decode. Pillow otherwise sniffs dozens (EPS runs Ghostscript, for one); anything else is
# "not a readable image".
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
LOSSY_FORMATS = ("JPEG", "MPO")  # MPO: a camera's JPEG with more frames; Pillow opens it as MPO, the first is shown
_PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"}  # what PNG stores as is
SOURCE_FORMAT = "deltarubric.source_format"  # key in a decoded image's `info`: "JPEG" when it was decoded from one


class MediaError(ValueError):
    """A media item could not be used; the message names it and says why."""


def describe(ref: MediaRef) -> str:
    if isinstance(ref, Image.Image):
        return f"<PIL image {ref.size[0]}x{ref.size[1]}>"
    return ref if len(ref) <= 80 else ref[:60] + "...(" + str(len(ref)) + " chars)"


def local_file(ref: str) -> Path:
    """The path a plain path or file:// URL names."""
    return Path(unquote(urlparse(ref).path)) if ref.startswith("file://") else Path(ref)


def download(url: str, *, follow_redirects: bool) -> bytes:
    """An http(s) body, capped at MAX_DOWNLOAD_BYTES; with redirects off, a redirect is an error."""
    import httpx  # here, not at the top: only http(s) media need it, and its import is ~0.2 s of every judge's start

    try:
        with httpx.stream("GET", url, timeout=30.0, follow_redirects=follow_redirects) as r:
            if r.is_redirect:
                raise MediaError(f"{describe(url)}: redirects are not followed")
            r.raise_for_status()
            chunks, size = [], 0
            for chunk in r.iter_bytes():
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise MediaError(f"{describe(url)}: larger than {MAX_DOWNLOAD_BYTES} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except (httpx.HTTPError, httpx.InvalidURL) as e:
        raise MediaError(f"{describe(url)}: download failed ({e})") from e


def read_bytes(ref: str) -> bytes:
    """The bytes behind a path, file://, http(s):// or base64 data: URL."""
    if ref.startswith("data:"):
        header, _, payload = ref.partition(",")
        if not header.endswith(";base64"):
            raise MediaError(f"{describe(ref)}: only base64 data URLs are supported")
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as e:
            raise MediaError(f"{describe(ref)}: invalid base64 payload ({e})") from e
    if ref.startswith(("http://", "https://")):
        return download(ref, follow_redirects=True)
    path = local_file(ref)
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise MediaError(f"{describe(ref)}: file not found") from e
    except OSError as e:  # a directory, no permission, a name too long (a base64 payload without 'data:')
        raise MediaError(f"{describe(ref)}: cannot read file ({e.strerror or type(e).__name__})") from e


def load_image(ref: MediaRef, *, max_input_pixels: int, max_pixels: int | None = None) -> Image.Image:
    """Decode an image to RGB, refusing bombs, unaccepted formats and corrupt data; downscale to `max_pixels` if
    given, while decoding where the format allows (JPEG), else right after it."""
    if isinstance(ref, Image.Image):
        return _checked(ref, describe(ref), max_input_pixels, max_pixels)
    return decode_image(read_bytes(ref), describe(ref), max_input_pixels=max_input_pixels, max_pixels=max_pixels)


def decode_image(data: bytes, source: str, *, max_input_pixels: int, max_pixels: int | None = None) -> Image.Image:
    """`load_image` for bytes already in hand; `source` names them in errors."""
    return _checked(open_image(data, source, max_input_pixels), source, max_input_pixels, max_pixels)


def open_image(data: bytes, source: str, max_input_pixels: int) -> Image.Image:
    """The image's header, read without decoding any pixel: an accepted format, its size within the limits."""
    try:
        img = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as e:  # PIL's own guard fires in open() for the largest headers
        raise MediaError(f"{source}: image size exceeds the limit of {max_input_pixels} pixels ({e})") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:  # PIL raises ValueError on some bad headers
        raise MediaError(f"{source}: not a readable image ({type(e).__name__})") from e
    _check_size(img.size, source, max_input_pixels)
    return img


def target_size(w: int, h: int, max_pixels: int | None) -> tuple[int, int]:
    """The size an image of w x h is downscaled to so it holds at most `max_pixels` (aspect ratio kept)."""
    if not max_pixels or w * h <= max_pixels:
        return w, h
    scale = math.sqrt(max_pixels / (w * h))
    nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
    # A side clamped to 1 pixel can push the area over a tiny budget: trim the other side then.
    return min(nw, max(1, max_pixels // nh)), min(nh, max(1, max_pixels // nw))


def _check_size(size: tuple[int, int], source: str, max_input_pixels: int) -> None:
    w, h = size
    # Checked on the header's size, before decoding, so a decompression bomb never allocates.
    if w * h > max_input_pixels:
        raise MediaError(f"{source}: {w}x{h} = {w * h} pixels exceeds the limit of {max_input_pixels}")
    if min(w, h) < 1 or max(w, h) / min(w, h) > MAX_ASPECT_RATIO:
        raise MediaError(f"{source}: aspect ratio of {w}x{h} is over {MAX_ASPECT_RATIO}:1")


def _checked(img: Image.Image, source: str, max_input_pixels: int, max_pixels: int | None) -> Image.Image:
    _check_size(img.size, source, max_input_pixels)
    lossy = img.format in LOSSY_FORMATS
    size = target_size(*img.size, max_pixels)
    undecoded = bool(getattr(img, "tile", None))  # an opened file whose pixels are not read yet
    if size != img.size and undecoded and lossy:
        # libjpeg decodes straight to 1/2, 1/4 or 1/8 scale (never below `size`): the full image is never held.
        img.draft(None, size)
    if img.mode == "RGB" and size == img.size and not undecoded:
        return img  # already what the judge needs (the server's decoded images): no copy
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
            if size != img.size and img.mode in ("RGB", "RGBA", "L", "LA"):
                # Shrink before any conversion copy; reducing_gap makes the resize start with a cheap box reduce.
                img = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
            img = img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MediaError(f"{source}: image data is corrupt or truncated ({e})") from e
    if img.size != size:
        img = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    if lossy:  # the decoded copy forgets its format; `image_to_engine_url` may re-encode it as JPEG
        img.info[SOURCE_FORMAT] = "JPEG"
    return img


def pixel_limits(min_pixels: int | None, max_pixels: int | None) -> dict[str, int]:
    """The per-image pixel bounds that are set, as engines' processor kwargs name them."""
    return {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v}


def image_to_engine_url(img: Image.Image) -> str:
    """An image as a data URL for an engine: a picture decoded from a JPEG as a JPEG of quality 95 (a hundredth of
    the time of a PNG of a large photo, a fifth of its size, and a loss far below the first encoding's), any other
    lossless, as a PNG at the fastest compression (pixels identical; a fifth of the default level's time)."""
    buf = io.BytesIO()
    if img.info.get(SOURCE_FORMAT) == "JPEG" and img.mode in ("RGB", "L"):
        img.save(buf, format="JPEG", quality=95)
        return data_url("image/jpeg", buf.getvalue())
    img.save(buf, format="PNG", compress_level=1)
    return data_url("image/png", buf.getvalue())


def data_url(mime: str, data: bytes) -> str:
    """The one way we write a data URL: base64, as OpenAI-compatible servers and browsers read it."""
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def image_to_data_url(img: Image.Image) -> str:
    """A base64 PNG data URL: lossless, so whoever decodes it sees exactly these pixels. Modes PNG cannot store
    (CMYK, YCbCr, ...) are converted to RGB first."""
    if img.mode not in _PNG_MODES:
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return data_url("image/png", buf.getvalue())


def video_to_url(ref: str) -> str:
    """A URL an OpenAI-compatible server accepts for a video: http(s) and data URLs pass, files are inlined."""
    if ref.startswith(("http://", "https://", "data:")):
        return ref
    suffix = Path(urlparse(ref).path).suffix.lstrip(".").lower() or "mp4"
    return data_url(f"video/{suffix}", read_bytes(ref))
