"""rm/media.py: loading images from paths, file:// URLs, data URLs and PIL images, and the guards around it.

Every image is generated here with PIL (or written byte by byte) into tmp_path; nothing is committed.
"""

from __future__ import annotations

import base64
import contextlib
import random
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from deltarubric.rm.media import MAX_ASPECT_RATIO, MediaError, image_to_data_url, load_image, read_bytes, video_to_url

BIG = 10**12  # a max_input_pixels that never triggers
DEFAULT_LIMIT = 64_000_000  # JudgeConfig.max_input_pixels' default


# ---------------------------------------------------------------------------------------------- helpers


def noise(size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Random pixels: incompressible, so a cut file really loses pixel data."""
    rng = random.Random(seed)
    bands = len(Image.new(mode, (1, 1)).getbands())
    return Image.frombytes(mode, size, rng.randbytes(size[0] * size[1] * bands))


def save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def data_url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bytes(width: int, height: int, idat: bytes, bit_depth: int = 1, color_type: int = 0) -> bytes:
    """A PNG written by hand, so the header can claim any size whatever the pixel data holds."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@contextlib.contextmanager
def no_decoding():
    """Fail if any pixel data is decoded or converted inside the block: proves a refusal came from the header."""

    def boom(*a, **k):
        raise AssertionError("pixel data was decoded")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ImageFile.ImageFile, "load", boom)
        mp.setattr(Image.Image, "load", boom)
        mp.setattr(Image.Image, "convert", boom)
        yield


@pytest.fixture(scope="module")
def bomb_png(tmp_path_factory) -> Path:
    """A real, complete 30000x30000 1-bit grayscale PNG (900 megapixels) that compresses to ~100 kB.

    Written row by row through zlib so the test never holds the image in memory either.
    """
    w = h = 30_000
    row = b"\x00" + b"\x00" * (w // 8)  # filter byte + 3750 bytes of black pixels
    comp = zlib.compressobj(9)
    block = row * 1000
    idat = b"".join(comp.compress(block) for _ in range(h // 1000)) + comp.flush()
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(png_bytes(w, h, idat))
    assert path.stat().st_size < 1_000_000
    return path


# ---------------------------------------------------------------------------------------------- sources


def test_load_from_path_and_pathlike_string(tmp_path):
    src = noise((31, 17))
    path = save(src, tmp_path / "a.png")
    img = load_image(str(path), max_input_pixels=BIG)
    assert img.mode == "RGB" and img.size == (31, 17)
    assert img.tobytes() == src.tobytes()  # PNG is lossless


def test_load_from_file_url_with_percent_escapes(tmp_path):
    src = noise((20, 10), seed=1)
    path = save(src, tmp_path / "my picture #1.png")  # a space and '#' must survive the URL
    url = path.as_uri()
    assert "%20" in url and "%23" in url
    img = load_image(url, max_input_pixels=BIG)
    assert img.tobytes() == src.tobytes()
    assert read_bytes(url) == path.read_bytes()


def test_load_from_base64_data_url(tmp_path):
    src = noise((12, 9), seed=2)
    raw = save(src, tmp_path / "d.png").read_bytes()
    img = load_image(data_url(raw), max_input_pixels=BIG)
    assert img.tobytes() == src.tobytes()
    # The MIME type is not trusted: PIL sniffs the real format (a PNG labelled JPEG still loads).
    assert load_image(data_url(raw, "image/jpeg"), max_input_pixels=BIG).tobytes() == src.tobytes()


def test_load_from_pil_image_is_converted_not_mutated():
    src = noise((8, 6), mode="RGBA", seed=3)
    img = load_image(src, max_input_pixels=BIG)
    assert img.mode == "RGB" and src.mode == "RGBA"  # the caller's image is left alone


def test_read_bytes_sources(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(b"\x00\x01payload")
    assert read_bytes(str(path)) == b"\x00\x01payload"
    assert read_bytes(path.as_uri()) == b"\x00\x01payload"
    assert read_bytes(data_url(b"\x00\x01payload", "application/octet-stream")) == b"\x00\x01payload"


# ---------------------------------------------------------------------------------------------- colour modes


def _rgba() -> Image.Image:
    img = Image.new("RGBA", (4, 3), (10, 20, 30, 0))  # fully transparent: the colour channels are kept
    img.putpixel((1, 1), (200, 100, 50, 255))
    return img


def _palette() -> Image.Image:
    img = Image.new("P", (4, 3), 0)
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    img.putpixel((1, 1), 1)
    img.putpixel((2, 2), 2)
    return img


def _gray() -> Image.Image:
    img = Image.new("L", (4, 3), 77)
    img.putpixel((1, 1), 200)
    return img


def _gray_alpha() -> Image.Image:
    img = Image.new("LA", (4, 3), (77, 10))
    img.putpixel((1, 1), (200, 255))
    return img


def _bilevel() -> Image.Image:
    img = Image.new("1", (4, 3), 0)
    img.putpixel((1, 1), 1)
    return img


# (builder, the RGB value expected at (0, 0), at (1, 1))
MODES = [
    pytest.param(_rgba, (10, 20, 30), (200, 100, 50), id="RGBA"),  # alpha dropped, colour kept
    pytest.param(_palette, (255, 0, 0), (0, 255, 0), id="P"),  # palette indices resolved to colours
    pytest.param(_gray, (77, 77, 77), (200, 200, 200), id="L"),  # grey replicated to three channels
    pytest.param(_gray_alpha, (77, 77, 77), (200, 200, 200), id="LA"),
    pytest.param(_bilevel, (0, 0, 0), (255, 255, 255), id="1"),
]


@pytest.mark.parametrize("make, p00, p11", MODES)
@pytest.mark.parametrize("via", ["pil", "path", "data_url"])
def test_modes_are_converted_to_rgb(tmp_path, make, p00, p11, via):
    src = make()
    if via == "pil":
        ref = src
    else:
        path = save(src, tmp_path / "m.png")
        ref = str(path) if via == "path" else data_url(path.read_bytes())
    img = load_image(ref, max_input_pixels=BIG)
    assert img.mode == "RGB" and img.size == (4, 3)
    assert img.getpixel((0, 0)) == p00
    assert img.getpixel((1, 1)) == p11


def test_jpeg_and_cmyk_load_as_rgb(tmp_path):
    for mode in ("RGB", "CMYK", "L"):
        path = save(noise((16, 16), mode=mode), tmp_path / f"{mode}.jpg", format="JPEG", quality=90)
        img = load_image(str(path), max_input_pixels=BIG)
        assert img.mode == "RGB" and img.size == (16, 16)


# ---------------------------------------------------------------------------------------------- errors


def _assert_names(err: pytest.ExceptionInfo, source: str, *words: str) -> None:
    msg = str(err.value)
    assert source in msg, msg
    for w in words:
        assert w in msg, msg


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(MediaError) as e:
        load_image(str(missing), max_input_pixels=BIG)
    _assert_names(e, str(missing), "not found")
    with pytest.raises(MediaError) as e:
        load_image(missing.as_uri(), max_input_pixels=BIG)
    _assert_names(e, missing.as_uri(), "not found")


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(MediaError, match="cannot read file .Is a directory"):
        load_image(str(tmp_path), max_input_pixels=BIG)


def test_media_error_is_a_value_error():
    assert issubclass(MediaError, ValueError)


@pytest.mark.parametrize(
    "name, content",
    [
        ("notes.txt", b"just some text\n"),  # plain text
        ("fake.png", b"not really a png, only named like one"),  # the suffix is not trusted
        ("empty.png", b""),  # zero bytes
        ("header.png", b"\x89PNG\r\n\x1a\n"),  # a PNG signature and nothing else
    ],
)
def test_non_image_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MediaError) as e:
        load_image(str(path), max_input_pixels=BIG)
    _assert_names(e, str(path), "not a readable image")


@pytest.mark.parametrize("fmt, suffix", [("PNG", "png"), ("JPEG", "jpg")])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_image(tmp_path, fmt, suffix, keep):
    """A real file cut short: the header still opens, the pixel data does not."""
    whole = save(noise((64, 64), seed=4), tmp_path / f"whole.{suffix}", format=fmt).read_bytes()
    path = tmp_path / f"cut.{suffix}"
    path.write_bytes(whole[: int(len(whole) * keep)])
    with pytest.raises(MediaError) as e:
        load_image(str(path), max_input_pixels=BIG)
    _assert_names(e, str(path), "corrupt or truncated")


@pytest.mark.parametrize("fmt, suffix", [("PNG", "png"), ("JPEG", "jpg")])
def test_file_cut_inside_its_header(tmp_path, fmt, suffix):
    whole = save(noise((64, 64), seed=5), tmp_path / f"whole.{suffix}", format=fmt).read_bytes()
    path = tmp_path / f"cut.{suffix}"
    path.write_bytes(whole[:12])
    with pytest.raises(MediaError) as e:
        load_image(str(path), max_input_pixels=BIG)
    _assert_names(e, str(path), "not a readable image")


def test_png_with_corrupted_pixel_data(tmp_path):
    """Same length, but bytes flipped inside IDAT: PNG's CRC catches it."""
    raw = bytearray(save(noise((64, 64), seed=6), tmp_path / "ok.png").read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 16] = bytes(b ^ 0xFF for b in raw[mid : mid + 16])
    path = tmp_path / "flipped.png"
    path.write_bytes(bytes(raw))
    with pytest.raises(MediaError) as e:
        load_image(str(path), max_input_pixels=BIG)
    _assert_names(e, str(path), "corrupt or truncated")


def test_truncated_data_url_names_the_url(tmp_path):
    whole = save(noise((64, 64), seed=7), tmp_path / "w.png").read_bytes()
    ref = data_url(whole[: len(whole) // 2])
    with pytest.raises(MediaError) as e:
        load_image(ref, max_input_pixels=BIG)
    msg = str(e.value)
    assert msg.startswith(ref[:60]) and f"({len(ref)} chars)" in msg  # long refs are shortened, not dropped
    assert "corrupt or truncated" in msg


@pytest.mark.parametrize(
    "ref",
    [
        "data:image/png;base64,@@@@",  # characters outside the base64 alphabet
        "data:image/png;base64,iVBORw0",  # bad padding (7 characters)
        "data:image/png;base64,iVBO Rw0K",  # embedded whitespace is refused (validate=True)
        "data:image/png;base64,iVBO-Rw0K",  # URL-safe alphabet is not standard base64
    ],
)
def test_invalid_base64(ref):
    with pytest.raises(MediaError) as e:
        read_bytes(ref)
    _assert_names(e, ref, "invalid base64")
    with pytest.raises(MediaError, match="invalid base64"):
        load_image(ref, max_input_pixels=BIG)


@pytest.mark.parametrize(
    "ref",
    [
        "data:image/png,%89PNG%0D%0A",  # percent-encoded bytes, no ;base64
        "data:text/plain;charset=utf-8,hello",
        "data:image/png;base64x,aGVsbG8=",  # ';base64' must end the header
        "data:image/pngaGVsbG8=",  # no comma at all
    ],
)
def test_non_base64_data_url(ref):
    with pytest.raises(MediaError) as e:
        load_image(ref, max_input_pixels=BIG)
    _assert_names(e, ref, "only base64 data URLs")


@pytest.mark.parametrize("payload", [b"", b"hello world"])
def test_base64_data_url_that_is_not_an_image(payload):
    ref = data_url(payload)
    with pytest.raises(MediaError) as e:
        load_image(ref, max_input_pixels=BIG)
    _assert_names(e, ref, "not a readable image")


# ---------------------------------------------------------------------------------------------- size guards


def test_over_max_input_pixels_is_refused_from_the_header(tmp_path):
    """A real 2000x1500 PNG is refused with a small limit, and no pixel is decoded to find out."""
    path = save(Image.new("L", (2000, 1500), 128), tmp_path / "large.png")
    with no_decoding(), pytest.raises(MediaError) as e:
        load_image(str(path), max_input_pixels=1_000_000)
    _assert_names(e, str(path), "2000x1500", "3000000", "exceeds the limit of 1000000")


def test_limit_is_inclusive(tmp_path):
    path = save(Image.new("L", (100, 50), 9), tmp_path / "edge.png")
    assert load_image(str(path), max_input_pixels=5000).size == (100, 50)  # exactly at the limit: accepted
    with pytest.raises(MediaError, match="exceeds"):
        load_image(str(path), max_input_pixels=4999)


def test_header_claiming_a_huge_size_with_no_pixel_data(tmp_path):
    """The header says 10000x10000; the pixel data is 10 bytes. The refusal must name the size, not corruption."""
    path = tmp_path / "liar.png"
    path.write_bytes(png_bytes(10_000, 10_000, zlib.compress(b"\x00" * 10)))
    with pytest.warns(Image.DecompressionBombWarning):  # PIL's own, softer check (> 89 Mpx) also notices
        with no_decoding(), pytest.raises(MediaError) as e:
            load_image(str(path), max_input_pixels=DEFAULT_LIMIT)
    _assert_names(e, str(path), "10000x10000", "exceeds the limit of 64000000")


def test_pil_image_over_the_limit():
    with pytest.raises(MediaError) as e:
        load_image(Image.new("L", (300, 200)), max_input_pixels=50_000)
    _assert_names(e, "<PIL image 300x200>", "exceeds")


def test_decompression_bomb_is_refused_without_decoding(bomb_png):
    """30000x30000 = 900 Mpx in a ~100 kB file: refused under the default limit, never allocated.

    PIL itself raises DecompressionBombError for it in open() (> 2 x Image.MAX_IMAGE_PIXELS); the next test pins
    that load_image turns that into a MediaError naming the source.
    """
    with no_decoding(), pytest.raises((MediaError, Image.DecompressionBombError)):
        load_image(str(bomb_png), max_input_pixels=DEFAULT_LIMIT)


def test_decompression_bomb_is_a_media_error(bomb_png):
    with no_decoding(), pytest.raises(MediaError) as e:
        load_image(str(bomb_png), max_input_pixels=DEFAULT_LIMIT)
    _assert_names(e, str(bomb_png), "900000000", "exceeds")  # PIL's own guard reports the pixel count


@pytest.mark.parametrize(
    "size, ok",
    [
        ((MAX_ASPECT_RATIO, 1), True),  # exactly 200:1 is allowed
        ((1, MAX_ASPECT_RATIO), True),
        ((MAX_ASPECT_RATIO + 1, 1), False),  # 201:1 is refused, landscape ...
        ((1, MAX_ASPECT_RATIO + 1), False),  # ... and portrait
        ((4020, 20), False),  # 201:1 at a larger scale
    ],
)
@pytest.mark.parametrize("via", ["pil", "path"])
def test_extreme_aspect_ratio(tmp_path, size, ok, via):
    src = Image.new("RGB", size, (1, 2, 3))
    ref = src if via == "pil" else str(save(src, tmp_path / "thin.png"))
    if ok:
        assert load_image(ref, max_input_pixels=BIG).size == size
    else:
        with pytest.raises(MediaError) as e:
            load_image(ref, max_input_pixels=BIG)
        _assert_names(e, "<PIL image" if via == "pil" else ref, "aspect ratio", f"{size[0]}x{size[1]}")


# ---------------------------------------------------------------------------------------------- downscaling


@pytest.mark.parametrize(
    "size, budget",
    [
        ((1000, 1000), 250_000),  # square, scale exactly 0.5
        ((1920, 1080), 200_000),  # 16:9
        ((333, 777), 10_000),  # portrait, odd sizes
        ((4000, 20), 5_000),  # 200:1, the most extreme shape allowed
        ((1001, 999), 1_000_000),  # 1 pixel over
        ((1280, 720), 12_345),  # a budget that is no product of nice numbers
    ],
)
def test_downscale_keeps_aspect_ratio_within_budget(size, budget):
    w, h = size
    img = load_image(Image.new("RGB", size, (9, 99, 199)), max_input_pixels=BIG, max_pixels=budget)
    nw, nh = img.size
    assert img.mode == "RGB"
    assert nw * nh <= budget
    assert nw <= w and nh <= h
    # Both sides are floor(side * scale): the ratio differs from w/h only by that rounding,
    # i.e. nw - nh * (w / h) lies in (-1, w / h), or in integers: -h < nw * h - nh * w < w.
    assert -h < nw * h - nh * w < w
    # and it uses the budget rather than shrinking far below it (the floors lose less than one row and column)
    assert (nw + 1) * (nh + 1) > budget
    assert img.getpixel((nw // 2, nh // 2)) == (9, 99, 199)


@pytest.mark.parametrize("budget", [640 * 480, 640 * 480 + 1, None, 0])
def test_no_downscale_when_within_budget_or_unset(budget):
    src = noise((640, 480), seed=8)
    img = load_image(src, max_input_pixels=BIG, max_pixels=budget)
    assert img.size == (640, 480) and img.tobytes() == src.tobytes()


def test_downscale_applies_to_files_too(tmp_path):
    path = save(Image.new("RGB", (800, 600), (5, 6, 7)), tmp_path / "big.png")
    img = load_image(path.as_uri(), max_input_pixels=BIG, max_pixels=120_000)
    assert img.size == (400, 300)


def test_input_limit_is_checked_before_downscaling():
    """max_pixels would shrink it, but the input is over max_input_pixels first: refused."""
    with pytest.raises(MediaError, match="exceeds"):
        load_image(Image.new("RGB", (1000, 1000)), max_input_pixels=500_000, max_pixels=1000)


# ---------------------------------------------------------------------------------------------- data URLs out


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "CMYK"])  # CMYK: PNG cannot store it, RGB is sent
def test_image_to_data_url_round_trips_pixel_exactly(mode):
    src = noise((37, 23), mode=mode, seed=9)
    if mode == "P":
        src.putpalette([i % 256 for i in range(256 * 3)])
    url = image_to_data_url(src)
    assert url.startswith("data:image/png;base64,")
    back = load_image(url, max_input_pixels=BIG)
    assert back.size == src.size
    assert back.tobytes() == src.convert("RGB").tobytes()


def test_image_to_data_url_then_load_is_identity_for_rgb():
    src = noise((50, 40), seed=10)
    again = load_image(
        image_to_data_url(load_image(image_to_data_url(src), max_input_pixels=BIG)), max_input_pixels=BIG
    )
    assert again.tobytes() == src.tobytes()


# ---------------------------------------------------------------------------------------------- videos


@pytest.mark.parametrize(
    "ref",
    [
        "http://example.com/v.mp4",  # remote URLs are passed through, not downloaded
        "https://example.com/v.webm?sig=1",
        "data:video/mp4;base64,AAAA",  # already inline
    ],
)
def test_video_urls_pass_through(ref):
    assert video_to_url(ref) == ref


@pytest.mark.parametrize(
    "name, mime",
    [
        ("clip.mp4", "video/mp4"),
        ("clip.WEBM", "video/webm"),  # suffix lower-cased
        ("clip", "video/mp4"),  # no suffix: mp4 assumed
    ],
)
def test_video_files_are_inlined(tmp_path, name, mime):
    path = tmp_path / name
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42 fake video")
    for ref in (str(path), path.as_uri()):
        url = video_to_url(ref)
        head, _, payload = url.partition(",")
        assert head == f"data:{mime};base64"
        assert base64.b64decode(payload) == path.read_bytes()


def test_missing_video_file(tmp_path):
    missing = str(tmp_path / "gone.mp4")
    with pytest.raises(MediaError) as e:
        video_to_url(missing)
    _assert_names(e, missing, "not found")
