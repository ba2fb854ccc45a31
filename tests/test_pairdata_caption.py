"""`data caption` (pairdata.caption): the captions-stage turn sent per distinct context image, captions written into
the raw lines, existing captions kept, failures counted, text and generation pairs left alone; and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deltarubric.cli.main import app
from deltarubric.pairdata.caption import caption_file
from deltarubric.rm.backends import ImagePart
from deltarubric.rm.config import SamplingConfig
from deltarubric.rm.pairs import read_pairs
from tests.pairdata_images import scene
from tests.scripted import ScriptedBackend, user_text

runner = CliRunner()


def describe(conv) -> str | Exception:
    images = [p for p in conv[-1].content if isinstance(p, ImagePart)]
    if images[0].image.size == (33, 33):
        return RuntimeError("model overloaded")
    return f"{len(images)} picture(s), {images[0].image.size[0]} px wide. ({user_text(conv)})"


def pair_file(root: Path) -> Path:
    (root / "img").mkdir(parents=True)
    scene(1, (64, 48)).save(root / "img" / "one.png")
    scene(2, (80, 60)).save(root / "img" / "two.png")
    scene(3, (33, 33)).save(root / "img" / "fails.png")
    rows = [
        {
            "id": "u1",
            "question": "Q1?",
            "images": ["img/one.png"],
            "a": "x",
            "b": "y",
            "label": "A",
            "rationale": "kept",
        },
        {"id": "u2", "question": "Q2?", "images": ["img/one.png"], "a": "x", "b": "y", "label": "B"},  # same image
        {"id": "u3", "question": "Q3?", "images": ["img/two.png"], "a": "x", "b": "y", "label": "A", "caption": "old"},
        {"id": "t1", "task_type": "text", "question": "2+2?", "a": "4", "b": "5", "label": "A"},
        {
            "id": "g1",
            "task_type": "image_generation",
            "question": "a cat",
            "a": {"image": "img/one.png"},
            "b": {"image": "img/two.png"},
            "label": "A",
        },
        {"id": "f1", "question": "Q?", "images": ["img/fails.png"], "a": "x", "b": "y", "label": "A"},
    ]
    path = root / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("chunk_size", [1, 16])
def test_caption_file(tmp_path: Path, chunk_size: int) -> None:
    src = pair_file(tmp_path / "data")
    backend = ScriptedBackend(describe)
    out = tmp_path / "out" / "captioned.jsonl"
    summary = caption_file(src, out, backend, SamplingConfig(max_tokens=64), chunk_size=chunk_size)
    assert summary.to_json() == {
        "out": str(out),
        "pairs": 6,
        "captioned": 2,
        "kept_existing": 1,
        "no_context_media": 2,
        "captions_generated": 1,
        "failed": {"backend: model overloaded": 1},
    }
    sent = [c for call in backend.calls for c in call]
    assert len(sent) == 2  # one.png once for two pairs, and the failing one; two.png had a caption
    assert user_text(sent[0]) == "Describe the image in detail."  # train sft's captions-stage question
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["u1", "u2", "u3", "t1", "g1", "f1"]  # file order, nothing dropped
    assert rows[0]["caption"] == rows[1]["caption"] == "1 picture(s), 64 px wide. (Describe the image in detail.)"
    assert rows[0]["rationale"] == "kept" and rows[2]["caption"] == "old"
    assert "caption" not in rows[3] and "caption" not in rows[4] and "caption" not in rows[5]
    assert read_pairs(out)[0].caption.startswith("1 picture(s)")  # media paths still resolve from the new folder


def test_caption_overwrite_in_place(tmp_path: Path) -> None:
    src = pair_file(tmp_path)
    caption_file(src, src, ScriptedBackend(describe), SamplingConfig(), overwrite=True)
    rows = [json.loads(line) for line in src.read_text().splitlines()]
    assert rows[2]["caption"].startswith("1 picture(s), 80 px wide")
    assert rows[0]["images"] == ["img/one.png"]  # in place: paths untouched
    assert not list(tmp_path.glob("*.part"))


def test_cli_caption(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = pair_file(tmp_path)
    backend = ScriptedBackend(describe)
    monkeypatch.setattr("deltarubric.rm.backends.make_backend", lambda config: backend)
    result = runner.invoke(
        app,
        [
            "data",
            "caption",
            str(src),
            "--out",
            str(tmp_path / "c.jsonl"),
            "-m",
            "judge",
            "--backend",
            "openai",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--max-tokens",
            "32",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["captioned"] == 2
    assert backend.calls  # the command built its backend from the judge options (here: the scripted one)
