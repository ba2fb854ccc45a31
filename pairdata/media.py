"""Images in source rows -> files a pair file can reference. Embedded bytes (the `datasets` Image feature: a dict
with `bytes` and `path`) are written once each, named by their content, under `images/` beside the output, so an
image shared by many rows (RLAIF-V reuses each image for several pairs) is stored once. Paths are given relative to
the output file's folder, as pair files want them."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

IMAGES_DIR = "images"
_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


class MediaSkip(ValueError):
    """This row's image cannot be used (missing file, bytes that are not an image); the row is skipped and counted."""


class ImageStore:
    """Writes embedded images under `<out_dir>/images/` and turns source paths into paths relative to `out_dir`."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir.resolve()
        self.written = 0

    def ref(self, value: Any, source_dir: Path, kind: str = "image") -> str:
        """A media reference for the pair file: `value` is bytes, {'bytes', 'path'}, a path or a URL."""
        if isinstance(value, dict):
            if value.get("bytes"):
                return self._save(value["bytes"])
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
        try:
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format or ""
                img.verify()  # catches truncated or corrupt files now, not in the middle of a training run
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise MediaSkip("embedded bytes are not a readable image") from None
        name = hashlib.sha256(data).hexdigest()[:24] + _SUFFIX.get(fmt, "." + fmt.lower() if fmt else ".img")
        target = self.out_dir / IMAGES_DIR / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part")
            tmp.write_bytes(data)
            tmp.replace(target)  # a half-written file never carries the final name
            self.written += 1
        return f"{IMAGES_DIR}/{name}"
