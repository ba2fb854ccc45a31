"""Independent review tests for `deltarubric data convert|dedup` (issue 12, "Converters" and "De-duplication"),
written from docs/data.md and the issue, not from the implementation.

Tests marked `xfail(strict=True, reason="BUG: ...")` document a bug found in review: they fail now and flip to a
failure of the xfail (XPASS) once the bug is fixed, so the mark can then be removed.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from deltarubric.cli.main import app
from deltarubric.pairdata.converters import convert
from deltarubric.pairdata.dedup import dedup
from deltarubric.pairdata.sources import SchemaError
from deltarubric.rm.pairs import read_pairs

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


# --------------------------------------------------------------------------------------------------------- helpers


def photo(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A textured, photo-like picture (random low-frequency field plus oriented stripes), different per seed."""
    rng = np.random.default_rng(1000 + seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    channels = []
    for _ in range(3):
        field = np.zeros((h, w))
        for _ in range(6):
            fx, fy, ph = rng.uniform(-9, 9), rng.uniform(-9, 9), rng.uniform(0, 2 * np.pi)
            field += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * (fx * x + fy * y) + ph)
        channels.append(field)
    arr = np.stack(channels, -1)
    arr = (arr - arr.min()) / (arr.max() - arr.min()) * 255
    return Image.fromarray(arr.astype(np.uint8))


def img_bytes(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "DELTARUBRIC_DEBUG": "", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "deltarubric.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def labelled(pair):
    """The labelled-better candidate: its text, or its image path."""
    side = pair.request.a if pair.label == "A" else pair.request.b
    return side.text if side.text is not None else side.image


def other(pair):
    side = pair.request.b if pair.label == "A" else pair.request.a
    return side.text if side.text is not None else side.image


def hs_row(i: int, pref: int, **extra) -> dict:
    """A HelpSteer3 `preference` row: response1 is 'GOOD' when pref < 0 (negative = response1 better)."""
    good, bad = f"GOOD answer {i}", f"BAD answer {i}"
    r1, r2 = (good, bad) if pref < 0 else (bad, good)
    return {
        "domain": "general",
        "language": "english",
        "context": [{"role": "user", "content": f"Question {i}?"}],
        "response1": r1,
        "response2": r2,
        "overall_preference": pref,
        **extra,
    }


GRAM = """You are a helpful assistant in evaluating the quality of the responses for a given instruction.

[User Question]
{q}

[The Start of Assistant A's Response]
{a}
[The End of Assistant A's Response]

[The Start of Assistant B's Response]
{b}
[The End of Assistant B's Response]"""


# ---------------------------------------------------------------------------------------------- converters: text


def test_helpsteer3_sign_convention_and_ties_dropped(tmp_path: Path) -> None:
    prefs = [-3, -2, -1, 1, 2, 3, 0, 0]
    src = tmp_path / "train.jsonl.gz"
    with gzip.open(src, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(hs_row(i, p)) + "\n" for i, p in enumerate(prefs))
    out = tmp_path / "out" / "hs.jsonl"
    summary = convert("helpsteer3", src, out, seed=0).to_json()
    assert summary["pairs_written"] == 6 and summary["rows_read"] == 8
    assert sum(summary["skipped"].values()) == 2 and all("tie" in k for k in summary["skipped"])
    assert sum(summary["labels"].values()) == 6
    pairs = read_pairs(out)
    assert [p.request.id for p in pairs] == [f"helpsteer3-{i}" for i in range(6)]
    for p in pairs:
        assert p.request.task_type == "text"
        assert labelled(p).startswith("GOOD") and other(p).startswith("BAD"), p


def test_helpsteer3_multi_turn_context_kept_in_question(tmp_path: Path) -> None:
    ctx = [
        {"role": "user", "content": "My cat is called Mittens."},
        {"role": "assistant", "content": "What a lovely name for a cat."},
        {"role": "user", "content": "What is my cat called?"},
    ]
    src = write_jsonl(tmp_path / "hs.jsonl", [{**hs_row(0, -1), "context": ctx}])
    convert("helpsteer3", src, tmp_path / "o.jsonl")
    (p,) = read_pairs(tmp_path / "o.jsonl")
    q = p.request.question
    # every turn is there, in order, and the last user message is what the question ends with
    positions = [q.index(t["content"]) for t in ctx]
    assert positions == sorted(positions)
    assert q.rstrip().endswith("What is my cat called?")


def test_helpsteer3_rationale_names_the_letters_after_the_flip(tmp_path: Path) -> None:
    rows = []
    for i in range(40):
        pref = -2 if i % 2 else 2
        win, lose = ("1", "2") if pref < 0 else ("2", "1")
        reasoning = f"@Response {win} is correct; @Response {lose} is wrong."
        rows.append(
            hs_row(
                i,
                pref,
                individual_preference=[{"score": pref, "reasoning": reasoning, "feedback1": "", "feedback2": ""}],
            )
        )
    src = write_jsonl(tmp_path / "hs.jsonl", rows)
    convert("helpsteer3", src, tmp_path / "o.jsonl", seed=5)
    pairs = read_pairs(tmp_path / "o.jsonl")
    assert {p.label for p in pairs} == {"A", "B"}
    for p in pairs:
        loser = "B" if p.label == "A" else "A"
        assert p.rationale == f"Response {p.label} is correct; Response {loser} is wrong."


# ------------------------------------------------------------------------------------------ A/B order and ids


def test_order_is_seeded_balanced_and_stable_under_limit(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "hs.jsonl", [hs_row(i, -1 if i % 3 else 2) for i in range(200)])

    def run(seed: int, limit: int | None = None) -> bytes:
        out = tmp_path / f"o-{seed}-{limit}.jsonl"
        convert("helpsteer3", src, out, seed=seed, limit=limit)
        return out.read_bytes()

    s0 = run(0)
    assert run(0) == s0  # same seed, same bytes
    assert run(1) != s0  # another seed, another order
    lines = s0.decode().splitlines(keepends=True)
    assert run(0, limit=17).decode() == "".join(lines[:17])  # cutting does not reshuffle
    labels = [json.loads(line)["label"] for line in lines]
    assert 70 <= labels.count("A") <= 130  # both positions get the better answer, roughly half each
    for seed in (0, 1):  # and whichever the order, the labelled side is the preferred text
        for p in read_pairs(tmp_path / f"o-{seed}-None.jsonl"):
            assert labelled(p).startswith("GOOD")


def test_ids_count_rows_across_shards_including_skipped(tmp_path: Path) -> None:
    d = tmp_path / "preference"
    write_jsonl(d / "train-00000.jsonl", [hs_row(0, -1), hs_row(1, 0)])  # a tie, skipped but counted
    write_jsonl(d / "train-00001.jsonl", [hs_row(2, 1)])
    convert("helpsteer3", d, tmp_path / "o.jsonl")
    assert [p.request.id for p in read_pairs(tmp_path / "o.jsonl")] == ["helpsteer3-0", "helpsteer3-2"]


def test_a_folder_is_read_in_one_format(tmp_path: Path) -> None:
    """Parquet shards plus the hub's metadata .json beside them: the metadata is not taken for rows."""
    d = tmp_path / "rlaif"
    rows = [
        {
            "ds_name": "x",
            "image": {"bytes": img_bytes(photo(i)), "path": f"{i}.png"},
            "question": f"q{i}",
            "chosen": f"GOOD {i}",
            "rejected": f"BAD {i}",
        }
        for i in range(2)
    ]
    write_parquet(d / "data" / "train-00000-of-00001.parquet", rows)
    (d / "dataset_info.json").write_text(json.dumps({"features": {"image": "Image"}}))
    summary = convert("rlaif_v", d, tmp_path / "o.jsonl").to_json()
    assert summary["pairs_written"] == 2


# ----------------------------------------------------------------------------- converters: label after the flip


def _gram(tmp: Path) -> tuple[Path, list]:
    rows = []
    for i in range(10):
        a_good = i % 2 == 0
        a, b = (f"GOOD {i}", f"BAD {i}") if a_good else (f"BAD {i}", f"GOOD {i}")
        out = (
            f"<think>\nreasons\n</think>\n<answer>\n{'A' if a_good else 'B'}\n</answer>"
            if i % 3
            else ("A" if a_good else "B")
        )
        rows.append({"instruction": GRAM.format(q=f"Question {i}?", a=a, b=b), "input": "", "output": out})
    return write_jsonl(tmp / "gram.jsonl", rows), ["GOOD"]


def _vfm(tmp: Path) -> tuple[Path, list]:
    rows = []
    for i in range(10):
        conv = [
            {"from": "human", "value": f"<image>\nQuestion {i}?"},
            {"from": "gpt", "preference_values": [f"GOOD {i}", f"BAD {i}"]},
        ]
        rows.append(
            {
                "id": str(i),
                "origin_pre_dataset": "VLFeedback",
                "image": {"bytes": img_bytes(photo(i)), "path": f"{i}.png"},
                "image_path": f"{i}.png",
                "conversations": json.dumps(conv),
            }
        )  # conversations: a JSON string, as the card types it
    return write_parquet(tmp / "vfm.parquet", rows), ["GOOD"]


def _rlaif(tmp: Path) -> tuple[Path, list]:
    rows = [
        {
            "ds_name": "x",
            "image": {"bytes": img_bytes(photo(i)), "path": f"{i}.png"},
            "question": f"Question {i}?",
            "chosen": f"GOOD {i}",
            "rejected": f"BAD {i}",
            "origin_dataset": "x",
            "origin_split": "x",
            "idx": i,
            "image_path": f"{i}.png",
        }
        for i in range(10)
    ]
    return write_parquet(tmp / "rlaif.parquet", rows), ["GOOD"]


def _mm_rlhf(tmp: Path) -> tuple[Path, list]:
    (tmp / "imgs").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(10):
        photo(i).save(tmp / "imgs" / f"{i}.png")
        rows.append(
            {
                "id": str(i),
                "image": f"imgs/{i}.png",
                "prompt": f"Question {i}?",
                "chosen": f"GOOD {i}",
                "rejected": f"BAD {i}",
            }
        )
    return write_jsonl(tmp / "mm.jsonl", rows), ["GOOD"]


def _oip(tmp: Path) -> tuple[Path, list]:
    good = [img_bytes(photo(i)) for i in range(10)]
    rows = [
        {
            "prompt": f"Picture {i}",
            "chosen": {"bytes": good[i], "path": None},
            "rejected": {"bytes": img_bytes(photo(100 + i)), "path": None},
            "category": "x",
        }
        for i in range(10)
    ]
    return write_parquet(tmp / "oip.parquet", rows), good


def _rapidata(tmp: Path) -> tuple[Path, list]:
    rows, good = [], []
    for i in range(10):
        b1, b2 = img_bytes(photo(i)), img_bytes(photo(200 + i))
        s1, s2 = (0.7, 0.3) if i % 2 else (0.2, 0.8)
        good.append(b1 if s1 > s2 else b2)
        key = "Preference"  # older sets capitalise the criterion; docs: found in any case
        rows.append(
            {
                "prompt": f"Picture {i}",
                "image1": {"bytes": b1, "path": None},
                "image2": {"bytes": b2, "path": None},
                "model1": "m1",
                "model2": "m2",
                f"weighted_results_image1_{key}": s1,
                f"weighted_results_image2_{key}": s2,
            }
        )
    return write_parquet(tmp / "rapidata.parquet", rows), good


BUILDERS = {
    "gram_rr": _gram,
    "vision_feedback_mix": _vfm,
    "rlaif_v": _rlaif,
    "mm_rlhf": _mm_rlhf,
    "open_image_preferences": _oip,
    "rapidata": _rapidata,
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_converter_labels_the_preferred_candidate_in_both_orders(tmp_path: Path, name: str) -> None:
    src, good = BUILDERS[name](tmp_path / "src")
    out = tmp_path / "out" / f"{name}.jsonl"
    summary = convert(name, src, out, seed=3).to_json()
    assert summary["pairs_written"] == 10, summary
    pairs = read_pairs(out)
    assert {p.label for p in pairs} == {"A", "B"}  # both orders occur in ten pairs with this seed
    for p in pairs:
        better = labelled(p)
        if good == ["GOOD"]:
            assert better.startswith("GOOD") and other(p).startswith("BAD"), p
            assert "<image>" not in p.request.question
            if name == "gram_rr":
                assert p.request.task_type == "text" and p.request.question.startswith("Question")
            else:
                assert p.request.task_type == "image_understanding"
                assert len(p.request.images) == 1 and Image.open(p.request.images[0]).size == (320, 240)
        else:  # image candidates: the labelled file holds the preferred image's bytes
            assert p.request.task_type == "image_generation"
            assert Path(better).read_bytes() in good and Path(other(p)).read_bytes() not in good


def test_rapidata_votes_and_ties(tmp_path: Path) -> None:
    b = [img_bytes(photo(i)) for i in range(4)]
    rows = [
        {
            "prompt": "p0",
            "image1": {"bytes": b[0], "path": None},
            "image2": {"bytes": b[1], "path": None},
            "votes_image1": 3,
            "votes_image2": 9,
        },
        {
            "prompt": "p1",
            "image1": {"bytes": b[2], "path": None},
            "image2": {"bytes": b[3], "path": None},
            "votes_image1": 5,
            "votes_image2": 5,
        },
    ]
    summary = convert("rapidata", write_parquet(tmp_path / "r.parquet", rows), tmp_path / "o.jsonl").to_json()
    assert summary["pairs_written"] == 1 and sum(summary["skipped"].values()) == 1
    assert any("tie" in k for k in summary["skipped"])
    (p,) = read_pairs(tmp_path / "o.jsonl")
    assert Path(labelled(p)).read_bytes() == b[1]


# ------------------------------------------------------------------------------------------------------ images


def test_embedded_images_written_once_relative_and_readable_elsewhere(tmp_path: Path, monkeypatch) -> None:
    shared = img_bytes(photo(1), "JPEG", quality=90)
    rows = [
        {
            "prompt": f"Picture {i}",
            "chosen": {"bytes": shared, "path": "x.jpg"},
            "rejected": {"bytes": img_bytes(photo(50 + i)), "path": None},
        }
        for i in range(3)
    ]
    src = write_parquet(tmp_path / "src" / "train.parquet", rows)
    out = tmp_path / "made" / "pairs" / "oip.jsonl"
    summary = convert("open_image_preferences", src, out).to_json()
    assert summary["pairs_written"] == 3 and summary["images_written"] == 4  # the shared picture stored once
    files = sorted((out.parent / "images").iterdir())
    assert len(files) == 4
    refs = [json.loads(line) for line in out.read_text().splitlines()]
    for r in refs:
        for side in ("a", "b"):
            ref = r[side]["image"]
            assert not Path(ref).is_absolute() and ref.startswith("images/"), ref
    # the folder moved elsewhere and read from an unrelated working directory: every image still loads
    moved = tmp_path / "elsewhere" / "pairs"
    shutil.move(str(out.parent), str(moved))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    pairs = read_pairs(moved / "oip.jsonl")
    hashes = {hashlib.sha256(Path(labelled(p)).read_bytes()).hexdigest() for p in pairs}
    assert hashes == {hashlib.sha256(shared).hexdigest()}
    for p in pairs:
        Image.open(other(p)).load()


def test_source_image_paths_are_rewritten_relative_to_out(tmp_path: Path, monkeypatch) -> None:
    src, _ = _mm_rlhf(tmp_path / "dl" / "mm")
    out = tmp_path / "runs" / "pairs" / "mm.jsonl"
    convert("mm_rlhf", src, out)
    first = json.loads(out.read_text().splitlines()[0])
    assert not Path(first["images"][0]).is_absolute()
    assert (out.parent / first["images"][0]).resolve() == (tmp_path / "dl" / "mm" / "imgs" / "0.png").resolve()
    monkeypatch.chdir(tmp_path / "dl")
    assert len(read_pairs(out)) == 10


def _bomb_png() -> bytes:
    """A valid PNG header announcing 30000x30000 pixels: Pillow refuses to open it (decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_bytes_that_are_not_an_image_are_skipped_and_counted(tmp_path: Path) -> None:
    rows = [
        {
            "ds_name": "x",
            "image": {"bytes": b"not an image at all", "path": "a.png"},
            "question": "q",
            "chosen": "c",
            "rejected": "r",
        },
        {
            "ds_name": "x",
            "image": {"bytes": img_bytes(photo(1)), "path": "b.png"},
            "question": "q2",
            "chosen": "c",
            "rejected": "r",
        },
    ]
    summary = convert("rlaif_v", write_parquet(tmp_path / "r.parquet", rows), tmp_path / "o.jsonl").to_json()
    assert summary["pairs_written"] == 1 and sum(summary["skipped"].values()) == 1
    assert len(read_pairs(tmp_path / "o.jsonl")) == 1


def test_truncated_embedded_jpeg_is_not_written_as_an_image(tmp_path: Path) -> None:
    jpg = img_bytes(photo(2), "JPEG", quality=90)
    rows = [
        {
            "ds_name": "x",
            "image": {"bytes": jpg[: len(jpg) // 2], "path": "t.jpg"},
            "question": "q",
            "chosen": "c",
            "rejected": "r",
        }
    ]
    out = tmp_path / "o" / "p.jsonl"
    summary = convert("rlaif_v", write_parquet(tmp_path / "t.parquet", rows), out).to_json()
    for f in (out.parent / "images").glob("*") if (out.parent / "images").exists() else []:
        Image.open(f).load()  # whatever was written must decode
    assert summary["pairs_written"] == 0 and sum(summary["skipped"].values()) == 1


@pytest.mark.parametrize(
    "cell",
    [
        pytest.param({"bytes": base64.b64encode(img_bytes(photo(1))).decode(), "path": None}),
        pytest.param({"bytes": _bomb_png(), "path": None}),
    ],
    ids=["base64-string-bytes", "decompression-bomb"],
)
def test_cli_odd_embedded_image_is_no_traceback(tmp_path: Path, cell: dict) -> None:
    row = {"ds_name": "x", "image": cell, "question": "q", "chosen": "c", "rejected": "r"}
    src = (
        write_jsonl(tmp_path / "r.jsonl", [row])
        if isinstance(cell["bytes"], str)
        else write_parquet(tmp_path / "r.parquet", [row])
    )
    proc = cli("data", "convert", "rlaif_v", "--src", str(src), "--out", str(tmp_path / "o.jsonl"))
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode in (0, 2)


# --------------------------------------------------------------------------------------------------- streaming


def test_limit_stops_before_a_broken_line_further_down(tmp_path: Path) -> None:
    for name, text in {
        "l.jsonl": "".join(json.dumps(hs_row(i, -1)) + "\n" for i in range(3)) + "{this is not json\n",
        "a.json": "[\n" + ",\n".join(json.dumps(hs_row(i, -1)) for i in range(3)) + ",\n{this is not json\n",
    }.items():
        (tmp_path / name).write_text(text)
        summary = convert("helpsteer3", tmp_path / name, tmp_path / f"o-{name}.jsonl", limit=3).to_json()
        assert summary["pairs_written"] == 3
        with pytest.raises(SchemaError):  # and without --limit the broken line is reported
            convert("helpsteer3", tmp_path / name, tmp_path / f"o2-{name}.jsonl")
        assert not (tmp_path / f"o2-{name}.jsonl").exists()


def _peak_mb(fn) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def test_a_large_json_lines_file_is_not_read_whole(tmp_path: Path) -> None:
    src = tmp_path / "big.jsonl"
    src.write_text("".join(json.dumps(hs_row(i, -1, pad="x" * 400)) + "\n" for i in range(40_000)))
    assert src.stat().st_size > 15e6
    peak = _peak_mb(lambda: convert("helpsteer3", src, tmp_path / "o.jsonl", limit=2))
    assert peak < 5, f"{peak:.1f} MB"


def test_a_one_line_json_array_is_not_read_whole(tmp_path: Path) -> None:
    src = tmp_path / "gram.json"
    src.write_text(json.dumps([hs_row(i, -1, pad="x" * 400) for i in range(40_000)]))
    assert src.stat().st_size > 15e6
    peak = _peak_mb(lambda: convert("helpsteer3", src, tmp_path / "o.jsonl", limit=2))
    assert peak < 5, f"{peak:.1f} MB"


# ------------------------------------------------------------------------------------------------ wrong schema

WRONG = {"foo": 1, "bar": "x", "baz_qux": [1]}
# the fields docs/data.md lists per converter (the schema column)
DOC_FIELDS = {
    "helpsteer3": ["context", "response1", "response2", "overall_preference"],
    "gram_rr": ["instruction", "output"],
    "vision_feedback_mix": ["conversations", "image"],
    "open_image_preferences": ["prompt", "chosen", "rejected"],
    "rapidata": ["image1", "image2"],
    "rlaif_v": ["image", "question", "chosen", "rejected"],
    "mm_rlhf": ["prompt", "image", "chosen", "rejected"],
}


@pytest.mark.parametrize("name", list(DOC_FIELDS))
def test_wrong_schema_names_documented_fields_and_found_fields(tmp_path: Path, name: str) -> None:
    src = write_jsonl(tmp_path / "wrong.jsonl", [WRONG, WRONG])
    with pytest.raises(SchemaError) as e:
        convert(name, src, tmp_path / "o.jsonl")
    msg = str(e.value)
    assert "wrong.jsonl:1" in msg and msg.startswith(name)
    for found in WRONG:
        assert found in msg
    for expected in DOC_FIELDS[name]:
        assert expected in msg, (expected, msg)
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.jsonl.part").exists()


@pytest.mark.parametrize("name", ["helpsteer3", "open_image_preferences"])
def test_cli_wrong_schema_exits_non_zero_without_traceback(tmp_path: Path, name: str) -> None:
    src = write_jsonl(tmp_path / "wrong.jsonl", [WRONG])
    proc = cli("data", "convert", name, "--src", str(src), "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("Error:")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert all(k in proc.stderr for k in WRONG) and all(k in proc.stderr for k in DOC_FIELDS[name])
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_unknown_converter_and_missing_source(tmp_path: Path) -> None:
    proc = cli("data", "convert", "helpsteer4", "--src", str(tmp_path), "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "helpsteer3" in proc.stderr
    proc = cli("data", "convert", "helpsteer3", "--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "nope" in proc.stderr


# ------------------------------------------------------------------------------------------------------- dedup


def bench(root: Path, n: int = 3) -> Path:
    """VL-RewardBench's local layout (docs/eval.md): data.jsonl with image_path under the folder."""
    rows = []
    (root / "images" / "rlaif").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        photo(i, (400, 300)).save(root / "images" / "rlaif" / f"b{i}.jpg", quality=95)
        rows.append(
            {
                "id": f"RLAIF-V-{i}",
                "query": f"<image>\nWhat is shown in photo number {i}?",
                "response": [f"A lake at dusk, number {i}.", f"A red car parked, number {i}."],
                "human_ranking": [0, 1],
                "image_path": f"images/rlaif/b{i}.jpg",
            }
        )
    write_jsonl(root / "data.jsonl", rows)
    return root


def train_file(root: Path) -> Path:
    img = root / "img"
    img.mkdir(parents=True)
    b0, b1, b2 = (photo(i, (400, 300)) for i in range(3))
    (img / "q25.jpg").write_bytes(img_bytes(b0, "JPEG", quality=25))
    b1.resize((133, 100), Image.Resampling.BILINEAR).save(img / "small.png")
    b2.resize((800, 600), Image.Resampling.BICUBIC).save(img / "big.webp", quality=80)
    for s in (20, 21, 22, 23):
        photo(s, (400, 300)).save(img / f"new{s}.png")
    rows = [
        {"id": "jpeg", "question": "Describe.", "images": ["img/q25.jpg"], "a": "x1", "b": "y1", "label": "A"},
        {"id": "small", "question": "Describe.", "images": ["img/small.png"], "a": "x2", "b": "y2", "label": "B"},
        {"id": "webp", "question": "Describe.", "images": ["img/big.webp"], "a": "x3", "b": "y3", "label": "A"},
        # text of item 1: responses swapped, re-cased, extra whitespace and punctuation, another picture
        {
            "id": "text",
            "question": "  what IS shown in   photo number 1 ",
            "images": ["img/new20.png"],
            "a": "a red car parked number 1",
            "b": "A LAKE AT DUSK,   number 1!!",
            "label": "B",
        },
        # a text-only pair with item 2's text
        {
            "id": "text-only",
            "task_type": "text",
            "question": "<image> What is shown in photo number 2?",
            "a": "A lake at dusk, number 2.",
            "b": "A red car parked, number 2.",
            "label": "A",
        },
        # kept: a benchmark question with other answers; benchmark answers to another question; new pictures
        {
            "id": "keep-q",
            "question": "What is shown in photo number 0?",
            "images": ["img/new21.png"],
            "a": "A forest.",
            "b": "A boat.",
            "label": "A",
        },
        {
            "id": "keep-r",
            "question": "What is shown in photo number 7?",
            "images": ["img/new22.png"],
            "a": "A lake at dusk, number 0.",
            "b": "A red car parked, number 0.",
            "label": "A",
        },
        {
            "id": "keep-new",
            "question": "Describe.",
            "images": ["img/new23.png"],
            "a": "x",
            "b": "y",
            "label": "B",
            "rationale": "Response B says y.",
        },
    ]
    return write_jsonl(root / "train.jsonl", rows)


DROP = {"jpeg": "image", "small": "image", "webp": "image", "text": "text", "text-only": "text"}
KEEP = ["keep-q", "keep-r", "keep-new"]


def test_dedup_flags_variants_keeps_the_rest_and_reports(tmp_path: Path, monkeypatch) -> None:
    vl = bench(tmp_path / "vl")
    train = train_file(tmp_path / "data")
    out = tmp_path / "clean"
    report = dedup([train], [f"vl-rewardbench={vl}"], out)
    assert json.loads((out / "dedup_report.json").read_text()) == report

    dropped = {d["id"]: d for d in report["dropped"]}
    assert set(dropped) == set(DROP)
    for pid, reason in DROP.items():
        d = dropped[pid]
        assert d["file"] == str(train) and isinstance(d["line"], int)
        assert reason in [m["reason"] for m in d["matches"]]
        for m in d["matches"]:
            assert m["benchmark_item"].startswith("vl-rewardbench/")
            if m["reason"] == "image":
                assert m["phash_distance"] <= report["settings"]["phash_max"]
                assert m["dhash_distance"] <= report["settings"]["dhash_max"]
                assert "image" in m
    item = {pid: next(m["benchmark_item"] for m in dropped[pid]["matches"]) for pid in DROP}
    assert item["jpeg"].startswith("vl-rewardbench/RLAIF-V-0") and item["small"].startswith("vl-rewardbench/RLAIF-V-1")
    assert item["webp"].startswith("vl-rewardbench/RLAIF-V-2") and item["text"].startswith("vl-rewardbench/RLAIF-V-1")
    assert item["text-only"].startswith("vl-rewardbench/RLAIF-V-2")
    lines = {pid: n for n, pid in enumerate([json.loads(x)["id"] for x in train.read_text().splitlines()], 1)}
    assert all(dropped[pid]["line"] == lines[pid] for pid in DROP)

    assert report["settings"]["phash_max"] == 10 and report["settings"]["dhash_max"] == 12
    (b,) = report["benchmarks"]
    assert b["benchmark"] == "vl-rewardbench" and b["items"] == 3 and b["images"]["hashed"] == 3
    (f,) = report["files"]
    assert (f["pairs"], f["kept"]) == (8, 3)
    assert f["dropped_by_reason"] == {"image": 3, "text": 2}

    # the cleaned file: the kept lines, unchanged but for media paths, valid from another working directory
    monkeypatch.chdir(tmp_path)
    kept = read_pairs(out / "train.jsonl")
    assert [p.request.id for p in kept] == KEEP
    src_rows = {r["id"]: r for r in map(json.loads, train.read_text().splitlines())}
    for r in map(json.loads, (out / "train.jsonl").read_text().splitlines()):
        assert {k: v for k, v in r.items() if k != "images"} == {
            k: v for k, v in src_rows[r["id"]].items() if k != "images"
        }
        assert (out / r["images"][0]).resolve() == (train.parent / src_rows[r["id"]]["images"][0]).resolve()


def test_converted_embedded_benchmark_image_is_found(tmp_path: Path) -> None:
    """convert -> dedup as the issue chains them: an RLAIF-V row whose embedded picture is a benchmark image,
    re-encoded and resized, is dropped; the other is kept and still loads."""
    vl = bench(tmp_path / "vl")
    dup = photo(1, (400, 300)).resize((300, 225))
    rows = [
        {
            "ds_name": "x",
            "image": {"bytes": img_bytes(dup, "JPEG", quality=60), "path": "1.jpg"},
            "question": "Anything here?",
            "chosen": "Yes.",
            "rejected": "No.",
        },
        {
            "ds_name": "x",
            "image": {"bytes": img_bytes(photo(30, (400, 300))), "path": "2.png"},
            "question": "Anything here?",
            "chosen": "Yes.",
            "rejected": "No.",
        },
    ]
    pairs = tmp_path / "pairs" / "rlaif.jsonl"
    convert("rlaif_v", write_parquet(tmp_path / "src" / "r.parquet", rows), pairs)
    report = dedup([pairs], [f"vl-rewardbench={vl}"], tmp_path / "clean")
    assert [d["id"] for d in report["dropped"]] == ["rlaif_v-0"]
    (kept,) = read_pairs(tmp_path / "clean" / "rlaif.jsonl")
    assert kept.request.id == "rlaif_v-1"
    Image.open(kept.request.images[0]).load()


def test_dedup_against_another_pair_file(tmp_path: Path) -> None:
    """docs/data.md: `pairs=FILE` checks against another pair file."""
    held = write_jsonl(
        tmp_path / "held" / "val.jsonl",
        [
            {
                "id": "v1",
                "task_type": "text",
                "question": "Capital of France?",
                "a": "Paris.",
                "b": "Lyon.",
                "label": "A",
            }
        ],
    )
    train = write_jsonl(
        tmp_path / "t" / "train.jsonl",
        [
            {"id": "t1", "task_type": "text", "question": "capital of france", "a": "lyon", "b": "PARIS", "label": "B"},
            {
                "id": "t2",
                "task_type": "text",
                "question": "Capital of Spain?",
                "a": "Madrid.",
                "b": "Lyon.",
                "label": "A",
            },
        ],
    )
    report = dedup([train], [f"pairs={held}"], tmp_path / "clean")
    assert [d["id"] for d in report["dropped"]] == ["t1"]
    assert [p.request.id for p in read_pairs(tmp_path / "clean" / "train.jsonl")] == ["t2"]


def test_cli_dedup_output_and_errors(tmp_path: Path) -> None:
    vl = bench(tmp_path / "vl")
    train = train_file(tmp_path / "data")
    out = tmp_path / "clean"
    proc = cli("data", "dedup", str(train), "--against", f"vl-rewardbench={vl}", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "kept 3 of 8" in proc.stdout and "image 3" in proc.stdout and "text 2" in proc.stdout
    assert f"report: {out / 'dedup_report.json'}" in proc.stdout
    # errors: one line, non-zero, no traceback
    for args in (
        ["--against", "no-such-benchmark=x"],
        [],
        ["--against", "vl-rewardbench=" + str(vl), "--out", str(train.parent)],
    ):
        proc = cli("data", "dedup", str(train), *args)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, (args, proc.stderr[-1500:])
    proc = cli(
        "data",
        "dedup",
        str(tmp_path / "missing.jsonl"),
        "--against",
        f"vl-rewardbench={vl}",
        "--out",
        str(tmp_path / "c2"),
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "missing.jsonl" in proc.stderr


# -------------------------------------------------------------------------------- eval run pairs on the output


def test_converted_pairs_run_through_eval_pairs(tmp_path: Path, monkeypatch) -> None:
    """A converted file is usable by `eval run pairs --data FILE`: a judge that always picks the GOOD text scores
    100 in both orders, which holds only if every label names the preferred text after the A/B flip."""
    import deltarubric.rm.judge as judge_module
    from tests.scripted import ScriptedBackend, user_text

    src, _ = _rlaif(tmp_path / "src")
    data = tmp_path / "pairs" / "rlaif.jsonl"
    convert("rlaif_v", src, data, seed=11)
    assert len({p.label for p in read_pairs(data)}) == 2

    def judge(conv) -> str:
        text = user_text(conv)
        pick = "A" if text.index("GOOD") < text.index("BAD") else "B"
        return f"Analysis: compared.\nJustification: better.\nWinner: [[{pick}]]"

    real = judge_module.Judge
    monkeypatch.setattr(
        judge_module, "Judge", lambda config, backend=None: real(config, backend=ScriptedBackend(judge))
    )
    monkeypatch.chdir(tmp_path / "src")  # another working directory than the file's
    result = runner.invoke(
        app,
        [
            "eval",
            "run",
            "pairs",
            "--data",
            str(data),
            "-m",
            "scripted",
            "--judge",
            "direct",
            "--swap",
            "--out",
            str(tmp_path / "run"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["strict_overall"] == pytest.approx(100.0), scores
    assert scores["swap_consistency"] == pytest.approx(100.0)
    from deltarubric.eval.runner import RESULTS_FILE

    assert len((tmp_path / "run" / RESULTS_FILE).read_text().splitlines()) == 10


# ------------------------------------------------------------------------------------------- the docs' example


def test_docs_worked_example_as_pasted(tmp_path: Path, monkeypatch) -> None:
    doc = (ROOT / "docs" / "data.md").read_text()
    section = doc.split("## Try it in a few seconds", 1)[1].split("\n## ", 1)[0]
    (script,) = re.findall(r"^```bash\n(.*?)^```$", section, re.DOTALL | re.MULTILINE)
    (tmp_path / "data").symlink_to(ROOT / "data")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
        "DELTARUBRIC_DEBUG": "",
    }
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the two convert summaries: HelpSteer3's tie skipped and counted
    assert '"pairs_written": 1' in proc.stdout and "tie" in proc.stdout
    assert "runs/pairs/mm.jsonl: kept 2 of 3 -> runs/clean/mm.jsonl (dropped by reason: text 1)" in proc.stdout
    hs = read_pairs(tmp_path / "runs" / "pairs" / "helpsteer3.jsonl")
    (p,) = hs
    assert labelled(p) == "Blue." and p.rationale.startswith(f"Response {p.label} names a primary colour")
    # the cleaned files load from another working directory, their pictures included
    monkeypatch.chdir("/")
    clean = read_pairs(tmp_path / "runs" / "clean" / "mm.jsonl")
    assert [c.request.id for c in clean] == ["mm_rlhf-0", "mm_rlhf-1"]
    assert {labelled(c) for c in clean} == {"Two.", "A red circle."}
    for c in clean:
        Image.open(c.request.images[0]).load()
