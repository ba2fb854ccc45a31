"""Benchmark runs on the tiny model with placeholder images: resumable after a kill, reproducible, reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from deltarubric.cli.main import app
from deltarubric.eval.core import json_scores
from deltarubric.eval.registry import get_benchmark
from deltarubric.eval.runner import RESULTS_FILE, completed_keys, eval_config, read_predictions, run_benchmark

VLRB = get_benchmark("vl-rewardbench")
runner = CliRunner()


@pytest.fixture(scope="module")
def vlrb_dir(tmp_path_factory) -> Path:
    """The shipped VL-RewardBench metadata plus placeholder images for its first 48 rows."""
    root = tmp_path_factory.mktemp("vlrb")
    rows = [
        json.loads(line)
        for line in (Path(__file__).parents[1] / "data/vl-rewardbench/data.jsonl").read_text().splitlines()
    ]
    for i, row in enumerate(rows[:48]):
        path = root / row["image_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64 + 8 * (i % 5), 48), (i * 5 % 255, 100, 150)).save(path)
    return root


def eval_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "deltarubric.cli", "eval", *args]


def result_keys(run: Path) -> list[str]:
    return [json.loads(line)["key"] for line in (run / RESULTS_FILE).read_text().splitlines()]


def test_killed_run_resumes_without_loss_or_duplicates(tiny_model_dir, vlrb_dir, tmp_path):
    run = tmp_path / "run"
    args = eval_cli(
        "run",
        "vl-rewardbench",
        "-m",
        str(tiny_model_dir),
        "--data-dir",
        str(vlrb_dir),
        "--out",
        str(run),
        "--limit",
        "40",
        "--chunk-size",
        "2",
        "--judge",
        "deltarubric",
        "--max-tokens",
        "48",
    )
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    results = run / RESULTS_FILE
    deadline = time.monotonic() + 120
    while not (results.exists() and len(results.read_text().splitlines()) >= 4):
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # no clean-up: as after a crash or an OOM kill
    proc.wait()
    before = results.read_text().splitlines()
    assert 4 <= len(before) < 40
    with results.open("a") as f:
        f.write('{"key": "torn-by-the-cr')  # a line cut off mid-write

    resumed = subprocess.run(args + ["--json"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    keys = result_keys(run)
    assert len(keys) == len(set(keys)) == 40  # nothing lost, nothing twice, the torn line gone
    assert results.read_text().splitlines()[: len(before)] == before  # earlier results kept as written
    expected = [i.key for i in VLRB.load(vlrb_dir, "default")[:40]]
    assert sorted(keys) == sorted(expected)
    scores = json.loads(resumed.stdout)
    assert scores["n"] == 40 and json.loads((run / "summary.json").read_text())["scores"] == scores


def test_torn_line_is_cut_off(tmp_path):
    path = tmp_path / RESULTS_FILE
    path.write_text('{"key": "a", "verdict": {}}\n{"key": "b", "verdict": {}}\n{"key": "c", "ver')
    assert completed_keys(path) == {"a", "b"}
    assert path.read_text() == '{"key": "a", "verdict": {}}\n{"key": "b", "verdict": {}}\n'


def test_rerun_is_a_no_op_and_other_config_is_refused(tiny_config, tiny_backend, vlrb_dir, tmp_path):
    from deltarubric.rm.judge import Judge

    config = eval_config(VLRB, tiny_config.model_copy(update={"judge": "direct"}), official=False)
    assert config.presentation == "random"  # the released order would reward position bias
    judge = Judge(config, backend=tiny_backend)
    first = run_benchmark(VLRB, "default", config, vlrb_dir, tmp_path / "r", limit=6, judge=judge)
    lines = (tmp_path / "r" / RESULTS_FILE).read_text()
    again = run_benchmark(VLRB, "default", config, vlrb_dir, tmp_path / "r", limit=6, judge=judge)
    assert json_scores(again) == json_scores(first)
    assert (tmp_path / "r" / RESULTS_FILE).read_text() == lines  # nothing judged again
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    assert record["prompt"]["sha256"] == judge.method.sha256 and record["judge"]["sampling"]["seed"] == 0
    assert record["data_revision"] and record["versions"]["transformers"]
    orders = {p.samples[0][0] for p in read_predictions(tmp_path / "r")}
    assert orders == {"AB", "BA"}  # seeded random order per item, recorded in every row
    other = config.model_copy(update={"judge": "msrl"})
    with pytest.raises(ValueError, match="another judge configuration"):
        run_benchmark(
            VLRB, "default", other, vlrb_dir, tmp_path / "r", limit=6, judge=Judge(other, backend=tiny_backend)
        )


def test_report_shows_two_runs_side_by_side_with_plots(tiny_config, tiny_backend, vlrb_dir, tmp_path):
    from deltarubric.rm.judge import Judge

    for name, judge_name, swap in (("tiny-deltarubric", "deltarubric", True), ("tiny-direct", "direct", False)):
        config = eval_config(VLRB, tiny_config.model_copy(update={"judge": judge_name, "swap": swap}), official=False)
        run_benchmark(
            VLRB, "default", config, vlrb_dir, tmp_path / name, limit=8, judge=Judge(config, backend=tiny_backend)
        )
    result = runner.invoke(app, ["eval", "report", str(tmp_path / "tiny-deltarubric"), str(tmp_path / "tiny-direct")])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| metric (%) | tiny-deltarubric | tiny-direct |" in report
    assert "| strict_overall |" in report and "![groups.png](groups.png)" in report
    for png in ("groups.png", "judge_behaviour.png"):
        with Image.open(tmp_path / "report" / png) as img:
            assert img.format == "PNG" and img.size[0] > 300


def test_score_command_on_a_run_directory_matches_the_run(tiny_config, tiny_backend, vlrb_dir, tmp_path):
    from deltarubric.rm.judge import Judge

    config = eval_config(VLRB, tiny_config.model_copy(update={"judge": "direct"}), official=False)
    scores = run_benchmark(
        VLRB, "default", config, vlrb_dir, tmp_path / "r", limit=5, judge=Judge(config, backend=tiny_backend)
    )
    result = runner.invoke(app, ["eval", "score", "vl-rewardbench", "--predictions", str(tmp_path / "r"), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["strict_overall"] == pytest.approx(scores["strict_overall"]) and printed["n"] == 5


def test_official_preset_run_keeps_the_official_format(tiny_config, tiny_backend, tmp_path):
    """GenAI-Bench official preset: left = A, one order, raw text scored with the official four-way rule."""
    from deltarubric.rm.judge import Judge

    data = tmp_path / "genai"
    data.mkdir()
    rows = []
    for i, vote in enumerate(["leftvote", "rightvote", "tievote", "bothbad_vote"]):
        for side in ("left", "right"):
            Image.new("RGB", (48, 48), (60 * i, 200 if side == "left" else 20, 90)).save(data / f"{i}_{side}.png")
        rows.append(
            {
                "id": i,
                "prompt": f"a cat number {i}",
                "left_image": f"{i}_left.png",
                "right_image": f"{i}_right.png",
                "vote_type": vote,
            }
        )
    (data / "image_generation.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    bench = get_benchmark("genai-bench")
    config = eval_config(bench, tiny_config.model_copy(update={"swap": True}), official=True)
    assert (config.judge, config.presentation, config.swap) == ("genai_bench_official", "given", False)
    scores = run_benchmark(
        bench, "image_generation", config, data, tmp_path / "run", judge=Judge(config, backend=tiny_backend)
    )
    preds = read_predictions(tmp_path / "run")
    assert all(p.official_format and p.raw is not None and p.samples[0][0] == "AB" for p in preds)
    assert 0.0 <= scores["official_4way"] <= 100.0  # defined (not n/a): computed from the raw text


def test_hub_parquet_layout_gives_the_same_items(tiny_config, tiny_backend, tmp_path):
    """The pinned hub revision's layout (data/test-*.parquet, images embedded) loads to the same keys and labels."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from deltarubric.rm.judge import Judge

    rows = [
        json.loads(line)
        for line in (Path(__file__).parents[1] / "data/vl-rewardbench/data.jsonl").read_text().splitlines()
    ][:5]
    records = []
    for i, row in enumerate(rows):
        buf = io.BytesIO()
        Image.new("RGB", (40 + i, 30), (10 * i, 80, 160)).save(buf, format="PNG")
        hub_row = {k: row[k] for k in ("id", "query", "response", "human_ranking", "models", "judge")}
        records.append(hub_row | {"image": {"bytes": buf.getvalue(), "path": f"{row['id']}.png"}})
    (tmp_path / "hub" / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "hub/data/test-00000-of-00001.parquet")

    from_hub = VLRB.load(tmp_path / "hub", "default")
    from_jsonl = VLRB.load(tmp_path / "nothing-here", "default")[:5]
    assert [(i.key, i.gold, i.group) for i in from_hub] == [(i.key, i.gold, i.group) for i in from_jsonl]
    assert all(isinstance(i.request.images[0], Image.Image) for i in from_hub)
    config = eval_config(VLRB, tiny_config.model_copy(update={"judge": "direct"}), official=False)
    run_benchmark(
        VLRB, "default", config, tmp_path / "hub", tmp_path / "run", judge=Judge(config, backend=tiny_backend)
    )
    assert all(p.error is None for p in read_predictions(tmp_path / "run"))


def test_benchmark_without_hub_data_asks_for_a_folder(tiny_model_dir, tmp_path):
    result = subprocess.run(
        eval_cli("run", "genai-bench", "-m", str(tiny_model_dir), "--out", str(tmp_path / "r")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "pass --data-dir" in result.stderr and "Traceback" not in result.stderr


def test_multimodal_rewardbench_run_exports_the_official_schema(tiny_config, tiny_backend, tmp_path):
    from deltarubric.rm.judge import Judge

    data = tmp_path / "mmrb"
    (data / "images").mkdir(parents=True)
    rows = []
    for i, (cat, better) in enumerate([("vqa", "Output1"), ("safety", "Output2"), ("reasoning", "Output1")]):
        Image.new("RGB", (48, 40), (30 * i, 90, 200)).save(data / f"images/{i}.png")
        rows.append(
            {
                "ID": f"{'pairs' if cat == 'safety' else 'math' if cat == 'reasoning' else 'vqa'}_{i}",
                "Text": f"Q{i}?",
                "Image": f"images/{i}.png",
                "Output1": "first",
                "Output2": "second",
                "Better": better,
                "Category": cat,
            }
        )
    (data / "all_data_release.json").write_text(json.dumps(rows))
    bench = get_benchmark("multimodal-rewardbench")
    config = eval_config(bench, tiny_config, official=True)
    run_benchmark(bench, "default", config, data, tmp_path / "run", judge=Judge(config, backend=tiny_backend))
    out = tmp_path / "official.jsonl"
    result = runner.invoke(
        app, ["eval", "score", "multimodal-rewardbench", "--predictions", str(tmp_path / "run"), "--export", str(out)]
    )
    assert result.exit_code == 0, result.output
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["ID"], r["Label"], r["Meta"]["Category"]) for r in exported] == [
        ("vqa_0", "A", "vqa"),
        ("pairs_1", "B", "safety"),
        ("math_2", "A", "reasoning"),
    ]
    assert set(exported[0]) == {"ID", "Image", "Label", "output", "Meta"} and exported[0]["Image"] == "images/0.png"
    rescored = runner.invoke(app, ["eval", "score", "multimodal-rewardbench", "--predictions", str(out), "--json"])
    assert json.loads(rescored.stdout)["official_safety/bias"] is not None


def test_official_format_only_for_the_preset_run_as_the_protocol_runs_it(tiny_config, tiny_backend, tmp_path):
    from deltarubric.rm.judge import Judge

    bench = get_benchmark("genai-bench")
    data = tmp_path / "genai"
    data.mkdir()
    for side in ("left", "right"):
        Image.new("RGB", (32, 32), (200 if side == "left" else 20, 90, 90)).save(data / f"{side}.png")
    (data / "image_generation.jsonl").write_text(
        json.dumps(
            {"id": 0, "prompt": "a cat", "left_image": "left.png", "right_image": "right.png", "vote_type": "leftvote"}
        )
        + "\n"
    )
    swapped = tiny_config.model_copy(update={"judge": "genai_bench_official", "swap": True})
    run_benchmark(
        bench, "image_generation", swapped, data, tmp_path / "swap", judge=Judge(swapped, backend=tiny_backend)
    )
    assert json.loads((tmp_path / "swap" / "run.json").read_text())["official_preset"] is False
    assert not any(p.official_format for p in read_predictions(tmp_path / "swap"))


def test_resume_judges_failed_items_again(tiny_config, tiny_backend, vlrb_dir, tmp_path):
    from deltarubric.rm.judge import Judge

    config = eval_config(VLRB, tiny_config.model_copy(update={"judge": "direct"}), official=False)
    judge = Judge(config, backend=tiny_backend)
    run = tmp_path / "r"
    run_benchmark(VLRB, "default", config, vlrb_dir, run, limit=3, judge=judge)
    rows = [json.loads(line) for line in (run / RESULTS_FILE).read_text().splitlines()]
    rows[1]["verdict"]["error"] = "backend error: connection refused"  # as if the server had been down for this one
    (run / RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert completed_keys(run / RESULTS_FILE) == {rows[0]["key"], rows[2]["key"]}
    run_benchmark(VLRB, "default", config, vlrb_dir, run, limit=3, judge=judge)
    lines = (run / RESULTS_FILE).read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[-1])["key"] == rows[1]["key"]  # judged again, appended
    preds = read_predictions(run)
    assert len(preds) == 3 and all(p.error is None for p in preds)  # the later line replaced the failed one


def test_a_last_line_without_newline_is_torn(tmp_path):
    path = tmp_path / RESULTS_FILE
    path.write_text('{"key": "a", "verdict": {}}\n{"key": "b", "verdict": {}}')
    assert completed_keys(path) == {"a"}
    assert path.read_text() == '{"key": "a", "verdict": {}}\n'
