"""Images in source rows -> files a pair file can reference. Embedded bytes (the `datasets` Image feature: a dict
with `bytes` and `path`) are written once each, named by their content, under `images/` beside the output, so an
image shared by many rows (RLAIF-V reuses each image for several pairs) is stored once. Paths are given relative to
the output file's folder, as pair files want them."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

IMAGES_DIR = "images"
_DRAFT_PIXELS = 4_000_000  # larger JPEGs are check-decoded at 1/8 scale: a full decode holds 3 bytes a pixel
_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


class MediaSkip(ValueError):
    """This row's image cannot be used (missing file, bytes that are not an image); the row is skipped and counted."""


class ImageStore:
    """Writes embedded images under `<out_dir>/images/` and turns source paths into paths relative to `out_dir`."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir.resolve()
        self.written = 0
        self._stored: dict[str, str] = {}  # digest -> reference: a reused image (RLAIF-V) is decoded once, not per row

    def ref(self, value: Any, source_dir: Path, kind: str = "image") -> str:
        """A media reference for the pair file: `value` is bytes, {'bytes', 'path'}, a path or a URL."""
        if isinstance(value, dict):
            if value.get("bytes"):
                return self._save(_embedded_bytes(value["bytes"]))
            value = value.get("path")
        if isinstance(value, (bytes, bytearray)):
            return self._save(bytes(value))
        if not isinstance(value, str) or not value:
            raise MediaSkip(f"no {kind} in the row")
        if value.startswith(("http://", "https://", "data:")):
            return value
        path = Path(value.removeprefix("file://"))
        path = path if path.is_absolute() else source_dir / path
        if not path.is_file():
            raise MediaSkip(f"{kind} file not found")
        return os.path.relpath(path.resolve(), self.out_dir)

    def _save(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if digest in self._stored:
            return self._stored[digest]
        try:
            fmt = _check_decodes(data)
        except Image.DecompressionBombError:  # not an OSError; Pillow refuses to decode it, so would training
            raise MediaSkip("embedded image too large (decompression bomb)") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise MediaSkip("embedded bytes are not a readable image") from None
        name = digest[:24] + _SUFFIX.get(fmt, "." + fmt.lower() if fmt else ".img")
        target = self.out_dir / IMAGES_DIR / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part")
            tmp.write_bytes(data)
            tmp.replace(target)  # a half-written file never carries the final name
            self.written += 1
        self._stored[digest] = f"{IMAGES_DIR}/{name}"
        return self._stored[digest]


def _embedded_bytes(value: Any) -> bytes:
    """An Image feature's `bytes`: raw bytes (parquet), or base64 text, the only way JSON can embed them, with or
    without a `data:` URL prefix."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if not isinstance(value, str):
        raise MediaSkip(f"embedded image bytes of type {type(value).__name__}")
    header, sep, payload = value.partition(",")
    if value.startswith("data:"):
        if not sep or not header.endswith(";base64"):
            raise MediaSkip("embedded image data URL is not base64")
    else:
        payload = value
    try:
        # validate=True: without it stray characters are silently dropped and garbage decodes to garbage bytes;
        # line breaks (MIME-style base64) are removed first since they are legitimate.
        return base64.b64decode("".join(payload.split()), validate=True)
    except ValueError:  # binascii.Error is a ValueError
        raise MediaSkip("embedded image string is not base64") from None


def _check_decodes(data: bytes) -> str:
    """The image's format, if `data` decodes completely. verify() checks structure (PNG chunk CRCs) but not JPEG's
    compressed data, so a truncated JPEG passes it; decoding the pixels catches that now rather than mid-training."""
    with Image.open(io.BytesIO(data)) as img:
        fmt = img.format or ""
        img.verify()
    with Image.open(io.BytesIO(data)) as img:  # verify() leaves the image unusable: reopen to decode
        if fmt == "JPEG" and img.width * img.height > _DRAFT_PIXELS:
            img.draft(img.mode, (img.width // 8, img.height // 8))  # DCT scaling: reads all data, decodes 1/64
        img.load()
    return fmt
