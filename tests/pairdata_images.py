"""Pictures for the pairdata tests: smooth random colour fields, different per seed, textured enough for perceptual
hashes to tell them apart (flat test pictures would all look alike to a hash, as blank photos do)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def scene(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    rng = np.random.default_rng(seed)
    coarse = (rng.random((6, 8, 3)) * 255).astype(np.uint8)
    return Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)


def encoded(img: Image.Image, fmt: str = "PNG", **save_args: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **save_args)
    return buf.getvalue()


def scene_png(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    return encoded(scene(seed, size))
