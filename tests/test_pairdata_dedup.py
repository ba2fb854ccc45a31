"""`data dedup` (pairdata.dedup): planted benchmark duplicates (re-encoded, resized, responses swapped and re-cased)
are dropped, look-alikes that are not duplicates survive, the report says why; benchmarks come through their loaders."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from deltarubric.cli.main import app
from deltarubric.pairdata.dedup import REPORT_NAME, dedup, normalise
from deltarubric.pairdata.imagehash import DHASH_MAX, PHASH_MAX, HashIndex, hash_image
from deltarubric.rm.pairs import read_pairs
from tests.pairdata_images import encoded, scene

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def distance(a, b) -> tuple[int, int]:
    return (a.phash ^ b.phash).bit_count(), (a.dhash ^ b.dhash).bit_count()


@pytest.mark.parametrize("seed", range(4))
def test_hash_survives_reencoding_and_resizing_not_other_pictures(seed: int) -> None:
    img = scene(seed, (320, 240))
    h = hash_image(img)
    copies = [
        Image.open(io.BytesIO(encoded(img, "JPEG", quality=40))),
        img.resize((120, 90), Image.Resampling.LANCZOS),
        img.resize((701, 526)),
        img.convert("RGBA"),
    ]
    for copy in copies:
        dp, dd = distance(h, hash_image(copy))
        assert dp <= PHASH_MAX // 2 and dd <= DHASH_MAX // 2
    for other in range(10, 20):
        dp, dd = distance(h, hash_image(scene(other, (320, 240))))
        assert dp > PHASH_MAX or dd > DHASH_MAX


def test_blank_images_are_not_hashed_and_index_matches_nearest() -> None:
    assert hash_image(Image.new("RGB", (50, 50), (10, 200, 30))) is None
    index = HashIndex()
    for s in range(5):
        index.add(hash_image(scene(s)), f"item{s}")
    label, dp, dd = index.match(hash_image(scene(3).resize((90, 70))))
    assert label == "item3" and dp <= PHASH_MAX and dd <= DHASH_MAX
    assert index.match(hash_image(scene(99))) is None


def test_normalise() -> None:
    assert normalise("<image>\nWhat  COLOUR is it?") == normalise("what colour is it") == "what colour is it"
    assert normalise("Ｆｕｌｌ-width, ok!") == "full width ok"


def bench_folder(root: Path, layout: str = "jsonl") -> Path:
    """A VL-RewardBench folder in a layout its loader reads, three items: data.jsonl + images/, or the hub's parquet
    with the images embedded (the loader then hands over in-memory images)."""
    rows = []
    for i in range(3):
        rows.append(
            {
                "id": f"RLAIF-V-{i}",
                "query": f"<image>\nWhat is in picture {i}?",
                "response": [f"Colourful blobs {i}.", f"A dog {i}."],
                "human_ranking": [0, 1],
            }
        )
        if layout == "jsonl":
            (root / "images").mkdir(parents=True, exist_ok=True)
            scene(i, (320, 240)).save(root / "images" / f"b{i}.png")
            rows[-1]["image_path"] = f"images/b{i}.png"
        else:
            rows[-1]["image"] = {"bytes": encoded(scene(i, (320, 240))), "path": f"b{i}.png"}
    if layout == "jsonl":
        (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        (root / "data").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), root / "data" / "test-00000-of-00001.parquet")
    return root


def mmrlhf_folder(root: Path) -> Path:
    """MM-RLHF-RewardBench's layout, one item whose text is planted below (its image is not there: text only)."""
    root.mkdir(parents=True)
    row = {
        "id": "t1",
        "image": "short/1.png",
        "prompt": "How many apples are on the table?",
        "chosen": "There are three apples.",
        "rejected": "There are five apples.",
    }
    (root / "mm_reward_bench.jsonl").write_text(json.dumps(row) + "\n")
    return root


def training_file(root: Path) -> Path:
    img = root / "img"
    img.mkdir(parents=True)
    (img / "reencoded.jpg").write_bytes(encoded(scene(0, (320, 240)), "JPEG", quality=50))
    scene(1, (320, 240)).resize((200, 150)).save(img / "resized.png")
    for s in (10, 11, 12):
        scene(s, (320, 240)).save(img / f"new{s}.png")
    Image.new("RGB", (64, 64), (250, 250, 250)).save(img / "blank.png")
    rows = [
        # planted: benchmark item 0's picture, re-encoded as JPEG, new text
        {
            "id": "dup-jpeg",
            "question": "Describe it.",
            "images": ["img/reencoded.jpg"],
            "a": "x",
            "b": "y",
            "label": "A",
        },
        # planted: item 1's picture, resized
        {
            "id": "dup-resized",
            "question": "Describe it.",
            "images": ["img/resized.png"],
            "a": "x",
            "b": "y",
            "label": "B",
        },
        # planted: item 2's text, responses swapped, re-cased and re-punctuated, with another picture
        {
            "id": "dup-text",
            "question": "what is in picture 2",
            "images": ["img/new10.png"],
            "a": "a dog 2",
            "b": "COLOURFUL BLOBS 2",
            "label": "B",
        },
        # planted: MM-RLHF-RewardBench's text, as a text-only pair
        {
            "id": "dup-text-mm",
            "task_type": "text",
            "question": "How many apples are on the table",
            "a": "There are five apples",
            "b": "There are three apples!",
            "label": "B",
        },
        # not duplicates: a benchmark question with other answers; new pictures; a blank picture
        {
            "id": "same-question",
            "question": "What is in picture 0?",
            "images": ["img/new11.png"],
            "a": "Stripes.",
            "b": "A cat.",
            "label": "A",
        },
        {
            "id": "new",
            "question": "Which colour is most common?",
            "images": ["img/new12.png"],
            "a": "Red.",
            "b": "Blue.",
            "label": "A",
        },
        {"id": "blank", "question": "Is it white?", "images": ["img/blank.png"], "a": "Yes.", "b": "No.", "label": "A"},
        {"id": "text", "task_type": "text", "question": "2+2?", "a": "4", "b": "5", "label": "A"},
    ]
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("layout", ["jsonl", "parquet"])
def test_dedup_drops_planted_duplicates_and_keeps_the_rest(tmp_path: Path, layout: str) -> None:
    vlrb, mm = bench_folder(tmp_path / "vlrb", layout), mmrlhf_folder(tmp_path / "mm")
    train = training_file(tmp_path / "data")
    out = tmp_path / "clean"
    report = dedup([train], [f"vl-rewardbench={vlrb}", f"mm-rlhf-rewardbench={mm}"], out)
    kept = read_pairs(out / "train.jsonl")  # media paths still resolve from the new folder
    assert [p.request.id for p in kept] == ["same-question", "new", "blank", "text"]
    dropped = {d["id"]: d["matches"] for d in report["dropped"]}
    assert set(dropped) == {"dup-jpeg", "dup-resized", "dup-text", "dup-text-mm"}
    assert dropped["dup-jpeg"][0]["reason"] == "image" and dropped["dup-jpeg"][0]["benchmark_item"].startswith(
        "vl-rewardbench/RLAIF-V-0#"
    )
    assert dropped["dup-resized"][0]["benchmark_item"].startswith("vl-rewardbench/RLAIF-V-1#")
    assert [m["reason"] for m in dropped["dup-text"]] == ["text"]
    assert dropped["dup-text-mm"] == [{"reason": "text", "benchmark_item": "mm-rlhf-rewardbench/t1/0"}]
    (f,) = report["files"]
    assert (f["pairs"], f["kept"], f["dropped_by_reason"]) == (8, 4, {"image": 2, "text": 2})
    assert f["images"]["uniform"] == 1  # the blank picture could not be checked, and the report says so
    vl, mm_src = report["benchmarks"]
    assert (vl["items"], vl["images"]["hashed"]) == (3, 3)
    assert (mm_src["items"], mm_src["images"]["missing"]) == (1, 1)
    assert json.loads((out / REPORT_NAME).read_text()) == report


def test_dedup_refuses_to_overwrite_and_needs_a_benchmark(tmp_path: Path) -> None:
    train = training_file(tmp_path / "data")
    with pytest.raises(ValueError, match="overwrite the input"):
        dedup([train], [f"vl-rewardbench={bench_folder(tmp_path / 'b')}"], train.parent)
    with pytest.raises(ValueError, match="at least one benchmark"):
        dedup([train], [], tmp_path / "o")
    with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
        dedup([train], ["nope=x"], tmp_path / "o")
    with pytest.raises(ValueError, match=r"genai-bench is not on the hub.*--against genai-bench=DIR"):
        dedup([train], ["genai-bench"], tmp_path / "o")


def test_cli_dedup_takes_benchmarks_as_the_issue_writes_them(tmp_path: Path) -> None:
    vlrb, mm = bench_folder(tmp_path / "vlrb"), mmrlhf_folder(tmp_path / "mm")
    train = training_file(tmp_path / "data")
    out = tmp_path / "clean"
    result = runner.invoke(
        app,
        [
            "data",
            "dedup",
            str(train),
            "--against",
            f"vl-rewardbench={vlrb}",
            f"mm-rlhf-rewardbench={mm}",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "kept 4 of 8" in result.output and "image 2, text 2" in result.output and "uniform" in result.output
    assert len(json.loads((out / REPORT_NAME).read_text())["benchmarks"]) == 2


@pytest.mark.parametrize("spec", ["vl-rewardbench={}", "mm-rlhf-rewardbench={}", "pairs={}/val.jsonl"])
def test_against_a_folder_that_does_not_exist_is_an_error(tmp_path: Path, spec: str) -> None:
    """VL-RewardBench's and MM-RLHF-RewardBench's loaders fall back to the metadata in data/ when the folder is absent:
    a mistyped DIR would then pass as a clean, text-only check."""
    train = training_file(tmp_path / "data")
    missing = tmp_path / "no-such-folder"
    against = spec.format(missing)
    with pytest.raises(FileNotFoundError, match=f"--against {against}: {missing}.* does not exist"):
        dedup([train], [against], tmp_path / "o")
    args = ["data", "dedup", str(train), "--against", against, "--out", str(tmp_path / "o")]
    proc = subprocess.run(
        [sys.executable, "-m", "deltarubric.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("Error: --against") and "does not exist" in proc.stderr
    assert not (tmp_path / "o").exists()
