"""Dataset converters (pairdata.converters): each on a small file in its dataset's documented schema, the A/B order
seeded and balanced, wrong schemas failing with the fields expected and found, and `deltarubric data convert`."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from deltarubric.cli.main import app
from deltarubric.pairdata import sources
from deltarubric.pairdata.converters import convert, converter_names
from deltarubric.pairdata.sources import SchemaError
from deltarubric.rm.pairs import read_pairs
from tests.pairdata_images import scene_png

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

GRAM_TEMPLATE = """You are a helpful assistant in evaluating the quality of the responses for a given instruction.
Select Response A or Response B, that is better for the given instruction.

Your reply should strictly follow this format:
<think>...</think>
<answer>
A or B
</answer>

Here is the data.

[User Question]
{q}

[The Start of Assistant A's Response]
{a}
[The End of Assistant A's Response]

[The Start of Assistant B's Response]
{b}
[The End of Assistant B's Response]"""


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def image_cell(seed: int) -> dict:
    """The `datasets` Image feature as it sits in a parquet file: a struct of bytes and path."""
    return {"bytes": scene_png(seed), "path": f"{seed}.png"}


def better_text(pair) -> str:
    side = pair.request.a if pair.label == "A" else pair.request.b
    return side.text if side.text is not None else side.image


def test_every_converter_is_registered() -> None:
    assert converter_names() == [
        "gram_rr",
        "helpsteer3",
        "mm_rlhf",
        "open_image_preferences",
        "rapidata",
        "rlaif_v",
        "vision_feedback_mix",
    ]


def test_helpsteer3_context_ties_and_rationale(tmp_path: Path) -> None:
    rows = [
        {
            "domain": "general",
            "language": "english",
            "context": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "What is 2+2?"},
            ],
            "response1": "4",
            "response2": "5",
            "overall_preference": -2,
            "individual_preference": [
                {"score": 1, "reasoning": "@Response 2 reads better.", "feedback1": "", "feedback2": ""},
                {
                    "score": -3,
                    "reasoning": "@Response 1 is correct; @Response 2 is not.",
                    "feedback1": "",
                    "feedback2": "",
                },
            ],
        },
        {
            "domain": "code",
            "language": "python",
            "context": [{"role": "user", "content": "x"}],
            "response1": "a",
            "response2": "b",
            "overall_preference": 0,
        },
        {
            "domain": "general",
            "language": "english",
            "context": [{"role": "user", "content": "Name a colour."}],
            "response1": "A dog.",
            "response2": "Blue.",
            "overall_preference": 3,
        },
    ]
    src = tmp_path / "train.jsonl.gz"  # the hub ships HelpSteer3 gzipped
    with gzip.open(src, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    summary = convert("helpsteer3", src, tmp_path / "out" / "hs.jsonl", seed=0)
    assert (summary.rows, summary.written, dict(summary.skipped)) == (3, 2, {"tie (overall_preference 0)": 1})
    first, third = read_pairs(tmp_path / "out" / "hs.jsonl")
    assert first.request.task_type == "text" and first.request.id == "helpsteer3-0"
    assert first.request.question.endswith("The user's last message:\n\nWhat is 2+2?")
    assert "Assistant: Hello!" in first.request.question
    assert better_text(first) == "4" and better_text(third) == "Blue."
    # The reasoning that agrees with the overall preference, its mentions renamed to the letters shown.
    worse = "B" if first.label == "A" else "A"
    assert first.rationale == f"Response {first.label} is correct; Response {worse} is not."
    assert third.rationale is None


GRAM_ROWS = [
    {
        "instruction": GRAM_TEMPLATE.format(q="Capital of France?", a="Paris.", b="Lyon."),
        "input": "",
        "output": "<think>\nFeedback: ...\nConclusion: A is right.\n</think>\n<answer>\nA\n</answer>",
    },
    {
        "instruction": GRAM_TEMPLATE.format(q="2+2?", a="5", b="4").replace("Response]", "Answer]"),
        "input": "",
        "output": "B",
    },
    {"instruction": "no markers here", "input": "", "output": "A"},
    {"instruction": GRAM_TEMPLATE.format(q="Hi?", a="Hello.", b="Hey."), "input": "", "output": "<answer>C</answer>"},
]


@pytest.mark.parametrize("layout", ["jsonl", "array"])
def test_gram_rr_parses_the_judging_prompt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    if layout == "jsonl":
        src = write_jsonl(tmp_path / "gram.jsonl", GRAM_ROWS)
    else:  # the GRAM cards document a JSON array; read in tiny chunks so elements straddle every buffer refill
        src = tmp_path / "gram.json"
        src.write_text(json.dumps(GRAM_ROWS, indent=2), encoding="utf-8")
        monkeypatch.setattr(sources, "_CHUNK", 7)
    summary = convert("gram_rr", src, tmp_path / "gram_out.jsonl", seed=1)
    assert summary.written == 2
    assert dict(summary.skipped) == {
        "instruction has no [User Question] / Assistant A / Assistant B sections": 1,
        "output holds no <answer>A|B</answer> or bare A/B": 1,
    }
    paris, four = read_pairs(tmp_path / "gram_out.jsonl")
    assert paris.request.question == "Capital of France?" and better_text(paris) == "Paris."
    assert {paris.request.a.text, paris.request.b.text} == {"Paris.", "Lyon."}
    assert four.request.question == "2+2?" and better_text(four) == "4"


def test_sources_are_streamed(tmp_path: Path) -> None:
    """With --limit the reader stops early: a broken line further down is never parsed (nor the rest read)."""
    src = tmp_path / "gram.jsonl"
    src.write_text(json.dumps(GRAM_ROWS[0]) + "\n" + "{broken\n" * 1000, encoding="utf-8")
    assert convert("gram_rr", src, tmp_path / "o.jsonl", limit=1).written == 1
    with pytest.raises(SchemaError, match="gram.jsonl:2: not JSON"):
        convert("gram_rr", src, tmp_path / "o.jsonl")


def test_vision_feedback_mix_parquet_with_embedded_images(tmp_path: Path) -> None:
    convs = [
        {"from": "human", "value": "<image>\nWhat colour dominates?"},
        {"from": "gpt", "preference_values": ["Mostly green.", "A cat."]},
    ]
    rows = [
        {
            "id": 0,
            "origin_pre_dataset": "VLFeedback",
            "image": image_cell(1),
            "image_path": "a.png",
            "conversations": json.dumps(convs),
        },  # typed as a string on the card
        {
            "id": 1,
            "origin_pre_dataset": "RLAIF-V",
            "image": image_cell(1),
            "image_path": "a.png",
            "conversations": json.dumps(convs),
        },  # the same picture again: stored once
        {
            "id": 2,
            "origin_pre_dataset": "POVID",
            "image": {"bytes": b"not an image", "path": None},
            "image_path": "",
            "conversations": json.dumps(convs),
        },
    ]
    src = write_parquet(tmp_path / "vision_feedback_mix_000.parquet", rows)
    out = tmp_path / "out" / "vfm.jsonl"
    summary = convert("vision-feedback-mix", src, out)  # hyphenated names work as well
    assert (summary.written, summary.images_written) == (2, 1)
    assert dict(summary.skipped) == {"embedded bytes are not a readable image": 1}
    pairs = read_pairs(out)  # validates that every image path resolves
    assert pairs[0].request.question == "What colour dominates?"
    assert pairs[0].request.task_type == "image_understanding" and better_text(pairs[0]) == "Mostly green."
    assert json.loads(out.read_text().splitlines()[0])["images"][0].startswith("images/")
    assert len(list((tmp_path / "out" / "images").iterdir())) == 1


def test_open_image_preferences_binarized(tmp_path: Path) -> None:
    rows = [
        {
            "id": str(i),
            "prompt": f"a scene {i}",
            "chosen": image_cell(10 + i),
            "rejected": image_cell(20 + i),
            "chosen_model": "dev",
            "rejected_model": "sd",
        }
        for i in range(6)
    ]
    src = tmp_path / "data"
    src.mkdir()
    write_parquet(src / "train-00000-of-00002.parquet", rows[:3])
    write_parquet(src / "train-00001-of-00002.parquet", rows[3:])  # a folder of shards, read in name order
    (src / "dataset_info.json").write_text('{"features": {}}')  # metadata beside parquet shards is not read as rows
    out = tmp_path / "oip.jsonl"
    assert convert("open_image_preferences", src, out).written == 6
    pairs = read_pairs(out)
    assert [p.request.question for p in pairs] == [f"a scene {i}" for i in range(6)]
    for i, p in enumerate(pairs):
        assert p.request.task_type == "image_generation"
        assert Path(better_text(p)).read_bytes() == scene_png(10 + i)


def test_rapidata_weighted_scores_and_ties(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": "a red cube",
            "image1": image_cell(1),
            "image2": image_cell(2),
            "model1": "m1",
            "model2": "m2",
            "weighted_results_image1_preference": 0.2,
            "weighted_results_image2_preference": 0.8,
            "detailed_results_preference": "[]",
            "weighted_results_image1_coherence": 0.9,
            "weighted_results_image2_coherence": 0.1,
        },
        {
            "prompt": "a tie",
            "image1": image_cell(3),
            "image2": image_cell(4),
            "model1": "m1",
            "model2": "m2",
            "weighted_results_image1_preference": 0.5,
            "weighted_results_image2_preference": 0.5,
        },
    ]
    old_style = [
        {
            "prompt": "a blue ball",
            "image1": image_cell(5),
            "image2": image_cell(6),
            "Weighted_Results_Image1_Preference": 3.0,
            "Weighted_Results_Image2_Preference": 1.0,
        }
    ]
    src = tmp_path / "rapidata"
    src.mkdir()
    write_parquet(src / "a.parquet", rows)
    write_parquet(src / "b.parquet", old_style)
    summary = convert("rapidata", src, tmp_path / "r.jsonl")
    assert summary.written == 2 and dict(summary.skipped) == {"tie (equal preference scores)": 1}
    cube, ball = read_pairs(tmp_path / "r.jsonl")
    assert Path(better_text(cube)).read_bytes() == scene_png(2)  # preference, not coherence, decides
    assert Path(better_text(ball)).read_bytes() == scene_png(5)


def test_rlaif_v(tmp_path: Path) -> None:
    rows = [
        {
            "ds_name": "RLAIF-V",
            "image": image_cell(7),
            "question": "Describe the image.",
            "chosen": "Colour blobs.",
            "rejected": "A tiger in snow.",
            "origin_dataset": "coco",
            "origin_split": "{}",
            "idx": "0",
            "image_path": "coco/0.jpg",
        }
    ]
    convert("rlaif_v", write_parquet(tmp_path / "RLAIF-V-Dataset_000.parquet", rows), tmp_path / "o" / "rl.jsonl")
    (pair,) = read_pairs(tmp_path / "o" / "rl.jsonl")
    assert pair.request.question == "Describe the image." and better_text(pair) == "Colour blobs."
    assert Path(pair.request.images[0]).read_bytes() == scene_png(7)


def test_mm_rlhf_layout_with_paths_beside_the_file(tmp_path: Path) -> None:
    src = tmp_path / "mmrlhf"
    (src / "images").mkdir(parents=True)
    (src / "images" / "x.png").write_bytes(scene_png(8))
    (src / "videos").mkdir()
    (src / "videos" / "v.mp4").write_bytes(b"\x00")
    rows = [
        {"id": "1", "image": "images/x.png", "prompt": "What is shown?", "chosen": "Blobs.", "rejected": "A car."},
        {"id": "2", "video": "videos/v.mp4", "prompt": "What happens?", "chosen": "Nothing.", "rejected": "A race."},
        {"id": "3", "image": "images/missing.png", "prompt": "?", "chosen": "a", "rejected": "b"},
    ]
    write_jsonl(src / "dpo_pairs.jsonl", rows)
    out = tmp_path / "elsewhere" / "mm.jsonl"
    summary = convert("mm_rlhf", src, out)
    assert summary.written == 2 and dict(summary.skipped) == {"image file not found": 1}
    image_pair, video_pair = read_pairs(out)
    assert Path(image_pair.request.images[0]).resolve() == (src / "images" / "x.png").resolve()
    assert video_pair.request.task_type == "video_understanding"
    assert json.loads(out.read_text().splitlines()[0])["images"] == ["../mmrlhf/images/x.png"]  # relative to the file


def test_order_is_seeded_per_pair_and_balanced(tmp_path: Path) -> None:
    rows = [
        {"ds_name": "x", "image": image_cell(0), "question": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"}
        for i in range(40)
    ]
    src = write_parquet(tmp_path / "rows.parquet", rows)

    def labels(seed: int, limit: int | None = None) -> list[str]:
        out = tmp_path / f"s{seed}-{limit}.jsonl"
        convert("rlaif_v", src, out, seed=seed, limit=limit)
        return [p.label for p in read_pairs(out)]

    s0 = labels(0)
    assert labels(0) == s0 and labels(1) != s0  # reproducible, and the seed matters
    assert 10 <= s0.count("A") <= 30  # both positions get the better answer
    assert labels(0, limit=7) == s0[:7]  # cutting the file does not reshuffle it


WRONG = {"some_id": 1, "text": "hello", "label": 1}


@pytest.mark.parametrize(
    "name", ["helpsteer3", "gram_rr", "vision_feedback_mix", "open_image_preferences", "rapidata", "rlaif_v", "mm_rlhf"]
)
def test_wrong_schema_names_expected_and_found_fields(tmp_path: Path, name: str) -> None:
    src = write_jsonl(tmp_path / "wrong.jsonl", [WRONG])
    with pytest.raises(SchemaError) as e:
        convert(name, src, tmp_path / "out.jsonl")
    message = str(e.value)
    assert "expect" in message and "label, some_id, text" in message and "wrong.jsonl:1" in message
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "out.jsonl.part").exists()


def test_rapidata_without_scores_says_which_fields_it_wanted(tmp_path: Path) -> None:
    src = write_parquet(tmp_path / "r.parquet", [{"prompt": "p", "image1": image_cell(1), "image2": image_cell(2)}])
    with pytest.raises(SchemaError, match="weighted_results_image1_preference.*the row has image1, image2, prompt"):
        convert("rapidata", src, tmp_path / "out.jsonl")


def test_cli_convert_and_list(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "gram.jsonl", GRAM_ROWS)
    out = tmp_path / "pairs" / "gram.jsonl"
    result = runner.invoke(
        app, ["data", "convert", "gram-rr", "--src", str(src), "--out", str(out), "--seed", "3", "--limit", "1"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["pairs_written"] == 1 and summary["out"] == str(out)
    assert len(read_pairs(out)) == 1
    listing = runner.invoke(app, ["data", "list"])
    assert listing.exit_code == 0 and "nvidia/HelpSteer3" in listing.output and "assumed" in listing.output


def test_cli_wrong_schema_is_one_line_on_stderr(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "wrong.jsonl", [WRONG])
    args = ["data", "convert", "rlaif_v", "--src", str(src), "--out", str(tmp_path / "o.jsonl")]
    proc = subprocess.run(
        [sys.executable, "-m", "deltarubric.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: rlaif_v:")
    assert "expects the fields image, question, chosen, rejected" in proc.stderr
    assert "Traceback" not in proc.stderr


def hs_row(i: int, pref: object, **extra: object) -> dict:
    return {
        "domain": "general",
        "language": "english",
        "context": [{"role": "user", "content": f"Question {i}?"}],
        "response1": f"first {i}",
        "response2": f"second {i}",
        "overall_preference": pref,
        **extra,
    }


def test_helpsteer3_integral_float_preferences(tmp_path: Path) -> None:
    """Parquet/pandas copies give -2.0 when a column has nulls: integral floats count, others are skipped."""
    reasoning = [{"score": -2.0, "reasoning": "@Response 1 is right.", "feedback1": "", "feedback2": ""}]
    src = write_jsonl(
        tmp_path / "hs.jsonl", [hs_row(0, -2.0, individual_preference=reasoning), hs_row(1, 1.5), hs_row(2, 3.0)]
    )
    summary = convert("helpsteer3", src, tmp_path / "o.jsonl")
    assert summary.written == 2 and dict(summary.skipped) == {"overall_preference is not an integer in -3..3": 1}
    first, third = read_pairs(tmp_path / "o.jsonl")
    assert better_text(first) == "first 0" and better_text(third) == "second 2"
    assert first.rationale == f"Response {first.label} is right."


JOINT = [
    ("Response 1 and 2", "Response <1> and Response <2>"),
    ("responses 2 & 1", "Response <2> & Response <1>"),
    ("@Response 1 or @Response 2", "Response <1> or Response <2>"),
]


@pytest.mark.parametrize(("said", "renamed"), JOINT)
def test_helpsteer3_rationale_renames_both_numbers_of_a_joint_mention(tmp_path: Path, said: str, renamed: str) -> None:
    reasoning = [{"score": -1, "reasoning": f"{said} are close; @Response 1 wins.", "feedback1": "", "feedback2": ""}]
    rows = [hs_row(i, -1, individual_preference=reasoning) for i in range(8)]
    convert("helpsteer3", write_jsonl(tmp_path / "hs.jsonl", rows), tmp_path / "o.jsonl", seed=2)
    pairs = read_pairs(tmp_path / "o.jsonl")
    assert {p.label for p in pairs} == {"A", "B"}
    for p in pairs:  # response1 is the better one, shown under the pair's label
        worse = "B" if p.label == "A" else "A"
        expected = renamed.replace("<1>", p.label).replace("<2>", worse)
        assert p.rationale == f"{expected} are close; Response {p.label} wins."


def test_cli_zero_pairs_is_an_error_naming_the_skip_reasons(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "hs.jsonl", [hs_row(0, 0), hs_row(1, 0), hs_row(2, "x")])
    out = tmp_path / "o.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "deltarubric.cli",
            "data",
            "convert",
            "helpsteer3",
            "--src",
            str(src),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("Error: no pairs written from 3 rows")
    assert "tie (overall_preference 0) (2)" in proc.stderr and "not an integer in -3..3 (1)" in proc.stderr
    assert not out.exists()  # no empty file to be taken for a result
    assert json.loads(proc.stdout)["skipped"] == {
        "tie (overall_preference 0)": 2,
        "overall_preference is not an integer in -3..3": 1,
    }


def test_id_prefix_keeps_separately_converted_splits_apart(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [hs_row(i, -1) for i in range(3)])
    val = write_jsonl(tmp_path / "validation.jsonl", [hs_row(i, 2) for i in range(2)])
    convert("helpsteer3", train, tmp_path / "train_pairs.jsonl")
    result = runner.invoke(
        app,
        [
            "data",
            "convert",
            "helpsteer3",
            "--src",
            str(val),
            "--out",
            str(tmp_path / "val_pairs.jsonl"),
            "--id-prefix",
            "helpsteer3-val",
        ],
    )
    assert result.exit_code == 0, result.output
    assert [p.request.id for p in read_pairs(tmp_path / "train_pairs.jsonl")] == [f"helpsteer3-{i}" for i in range(3)]
    assert [p.request.id for p in read_pairs(tmp_path / "val_pairs.jsonl")] == ["helpsteer3-val-0", "helpsteer3-val-1"]
    with pytest.raises(ValueError, match="id-prefix"):
        convert("helpsteer3", val, tmp_path / "x.jsonl", id_prefix=" ")


def test_rapidata_null_weighted_scores_fall_back_to_votes(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": "weighted",
            "image1": image_cell(1),
            "image2": image_cell(2),
            "weighted_results_image1_preference": 0.9,
            "weighted_results_image2_preference": 0.1,
            "votes_image1": 1,
            "votes_image2": 9,
        },
        {
            "prompt": "votes",
            "image1": image_cell(3),
            "image2": image_cell(4),
            "weighted_results_image1_preference": None,
            "weighted_results_image2_preference": None,
            "votes_image1": 2,
            "votes_image2": 7,
        },
        {
            "prompt": "nothing",
            "image1": image_cell(5),
            "image2": image_cell(6),
            "weighted_results_image1_preference": None,
            "weighted_results_image2_preference": None,
            "votes_image1": None,
            "votes_image2": None,
        },
    ]
    summary = convert("rapidata", write_parquet(tmp_path / "r.parquet", rows), tmp_path / "o.jsonl")
    assert summary.written == 2 and dict(summary.skipped) == {"preference scores missing": 1}
    weighted, votes = read_pairs(tmp_path / "o.jsonl")
    assert Path(better_text(weighted)).read_bytes() == scene_png(1)  # the weighted score wins over the votes
    assert Path(better_text(votes)).read_bytes() == scene_png(4)


def test_base64_embedded_images_decode_and_bad_ones_are_skipped(tmp_path: Path) -> None:
    """JSON can embed an Image feature's bytes only as base64 text, with or without a data: URL (line breaks too)."""
    png = scene_png(9)
    b64 = base64.b64encode(png).decode()

    def row(cell: object) -> dict:
        return {"ds_name": "x", "image": {"bytes": cell, "path": None}, "question": "q", "chosen": "c", "rejected": "r"}

    rows = [
        row(b64),
        row("data:image/png;base64," + base64.encodebytes(png).decode()),
        row("not base64 at all!"),
        row("data:image/png,%89PNG"),
        row(base64.b64encode(b"plain text").decode()),
    ]
    summary = convert("rlaif_v", write_jsonl(tmp_path / "r.jsonl", rows), tmp_path / "o" / "p.jsonl")
    assert (summary.written, summary.images_written) == (2, 1)
    assert dict(summary.skipped) == {
        "embedded image string is not base64": 1,
        "embedded image data URL is not base64": 1,
        "embedded bytes are not a readable image": 1,
    }
    for p in read_pairs(tmp_path / "o" / "p.jsonl"):
        assert Path(p.request.images[0]).read_bytes() == png


def test_a_broken_array_element_stops_the_read_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken element is reported at once, not after buffering the rest of the file looking for its end; an element
    spanning many chunks is still read (and in few decodes)."""
    monkeypatch.setattr(sources, "_CHUNK", 64)
    src = tmp_path / "a.json"
    src.write_text(
        "["
        + json.dumps(hs_row(0, -1, pad="x" * 5000))
        + ", {broken}, "
        + ", ".join(json.dumps(hs_row(i, -1)) for i in range(20_000))
        + "]"
    )
    reads: list[int] = []
    real_open = sources._open_text

    def counting_open(path: Path):
        f = real_open(path)
        read = f.read
        f.read = lambda n=-1: reads.append(n) or read(n)  # type: ignore[method-assign]
        return f

    monkeypatch.setattr(sources, "_open_text", counting_open)
    with pytest.raises(SchemaError, match="element 2 of the JSON array is not JSON"):
        convert("helpsteer3", src, tmp_path / "o.jsonl")
    assert sum(reads) < 20_000 and len(reads) < 12  # 5 KB element: doubling reads, not 5000/64 of them
