"""`deltarubric eval run pairs --data FILE`: own labelled pairs through the benchmarks' runner, metrics and report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from deltarubric.cli.main import app
from deltarubric.eval.core import decided, pct
from deltarubric.eval.runner import RESULTS_FILE, read_predictions
from deltarubric.rm.backends.base import ImagePart
from tests.conftest import make_image
from tests.scripted import ScriptedBackend, user_text

runner = CliRunner()
GOOD_WIDTH, BAD_WIDTH = 96, 80  # generated candidates: the labelled-better image is the wider one

# (id, task_type, label, how the scripted judge behaves on it)
PAIRS = [
    ("u1", "image_understanding", "A", "right"),
    ("u2", "image_understanding", "B", "right"),
    ("u3", "image_understanding", "A", "wrong"),
    ("t1", "text", "B", "right"),
    ("t2", "text", "A", "garbage"),
    ("g1", "image_generation", "A", "right"),
    ("g2", "image_generation", "B", "first"),
    ("e1", "image_editing", "B", "right"),
]


def write_pair_file(root: Path, pairs=PAIRS) -> Path:
    """A pair file with generated PNGs beside it (relative paths, as users write them)."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for n, (pid, task, label, behaviour) in enumerate(pairs):
        better, worse = ("a", "b") if label == "A" else ("b", "a")
        row = {"id": pid, "task_type": task, "question": f"[{behaviour}] question number {n}?", "label": label}
        if task in ("image_generation", "image_editing"):
            for side, width in ((better, GOOD_WIDTH), (worse, BAD_WIDTH)):
                make_image(root / f"img/{pid}-{side}.png", size=(width, 64), seed=n)
                row[side] = {"image": f"img/{pid}-{side}.png"}
        else:
            row |= {better: f"GOODANSWER {n}", worse: f"BADANSWER {n}"}
        if task in ("image_understanding", "image_editing"):
            row["images"] = [str(make_image(root / f"img/{pid}.png", seed=n).relative_to(root))]
        rows.append(row)
    path = root / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def scripted_judge(conv) -> str:
    """Answers in the direct judge's format: picks the labelled-better candidate ('right'), the other ('wrong'),
    whatever is shown first ('first': position bias, so the two orders split), or nothing parsable ('garbage')."""
    text = user_text(conv)
    behaviour = re.search(r"\[(right|wrong|garbage|first)\]", text).group(1)
    if behaviour == "garbage":
        return "I would rather not say."
    if "GOODANSWER" in text:
        good_first = text.index("GOODANSWER") < text.index("BADANSWER")
    else:  # image candidates are the last two images of the turn, in the order shown
        last = [m for m in conv if m.role == "user"][-1]
        shown = [p.image.width for p in last.content if isinstance(p, ImagePart)][-2:]
        good_first = shown[0] == GOOD_WIDTH
    pick = {"right": good_first, "wrong": not good_first, "first": True}[behaviour]
    return f"Analysis: compared.\nJustification: it is better.\nWinner: [[{'A' if pick else 'B'}]]"


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / RESULTS_FILE).read_text().splitlines()]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DELTARUBRIC_DEBUG": ""}
    return subprocess.run(
        [sys.executable, "-m", "deltarubric.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_run_score_report_and_resume_on_the_tiny_model(tiny_model_dir, tmp_path):
    data = write_pair_file(tmp_path / "data")
    run = tmp_path / "run"
    args = [
        "eval",
        "run",
        "pairs",
        "--data",
        str(data),
        "-m",
        str(tiny_model_dir),
        "--judge",
        "direct",
        "--max-tokens",
        "8",
        "--chunk-size",
        "3",
        "--out",
        str(run),
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert [r["key"] for r in rows(run)] == [p[0] for p in PAIRS]  # every pair, in file order
    assert [(r["gold"], r["group"]) for r in rows(run)] == [(p[2], p[1]) for p in PAIRS]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["benchmark"] == "pairs" and summary["n"] == len(PAIRS) and summary["scores"] == printed
    expected = {
        "strict_overall",
        "strict_macro",
        "parse_failure_rate",
        "error_rate",
        "swap_consistency",
        "first_position_rate",
        "n",
    }
    expected |= {f"strict_{task}" for task in ("image_understanding", "text", "image_generation", "image_editing")}
    assert set(printed) == expected and printed["n"] == len(PAIRS)
    record = json.loads((run / "run.json").read_text())
    assert record["benchmark"] == "pairs" and str(data.resolve()) in record["data_revision"]
    assert record["items_sha256"] and record["official_preset"] is False and record["judge"]["presentation"] == "random"

    scored = runner.invoke(app, ["eval", "score", "pairs", "--predictions", str(run), "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout) == printed
    reported = runner.invoke(app, ["eval", "report", str(run)])
    assert reported.exit_code == 0, reported.output
    report = (tmp_path / "report" / "report.md").read_text()
    assert "# pairs report" in report and str(data.resolve()) in report and "| strict_text |" in report
    assert "![groups.png](groups.png)" in report
    with Image.open(tmp_path / "report" / "groups.png") as img:
        assert img.format == "PNG"

    # Rerunning the same command is a no-op: every item is done.
    written = (run / RESULTS_FILE).read_text()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert (run / RESULTS_FILE).read_text() == written and json.loads(again.stdout) == printed

    # What a kill leaves behind: a few results and a line torn mid-write. The same command judges only the rest.
    kept = written.splitlines(keepends=True)[:3]
    (run / RESULTS_FILE).write_text("".join(kept) + '{"key": "t1", "verd')
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    lines = (run / RESULTS_FILE).read_text().splitlines(keepends=True)
    assert lines[:3] == kept  # earlier results kept as written
    assert sorted(json.loads(line)["key"] for line in lines) == sorted(p[0] for p in PAIRS)  # none lost, none twice


def test_scores_equal_a_hand_computation(monkeypatch, tmp_path):
    """Scripted verdicts, both orders: right / wrong / unparsable / split between orders, in four task types."""
    import deltarubric.rm.judge as judge_module

    real_judge = judge_module.Judge
    monkeypatch.setattr(
        judge_module, "Judge", lambda config: real_judge(config, backend=ScriptedBackend(scripted_judge))
    )
    data = write_pair_file(tmp_path / "data")
    run = tmp_path / "run"
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
            str(run),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)

    # By construction: right on u1 u2 t1 g1 e1; wrong on u3 (wrong pick), t2 (unparsable), g2 (orders split).
    by_task = {"image_understanding": 2 / 3, "text": 1 / 2, "image_generation": 1 / 2, "image_editing": 1.0}
    assert scores["strict_overall"] == pytest.approx(100 * 5 / 8, abs=1e-4)
    assert scores["strict_macro"] == pytest.approx(100 * sum(by_task.values()) / 4, abs=1e-4)
    for task, acc in by_task.items():
        assert scores[f"strict_{task}"] == pytest.approx(100 * acc, abs=1e-4)
    assert scores["parse_failure_rate"] == pytest.approx(100 / 8, abs=1e-4)  # t2
    assert scores["swap_consistency"] == pytest.approx(100 * 6 / 7, abs=1e-4)  # 7 items parsed in both orders, g2 split
    # 14 decisive judgments; the right/wrong ones pick the first-shown candidate in exactly one of their two orders.
    assert scores["first_position_rate"] == pytest.approx(100 * (6 + 2) / 14, abs=1e-4)

    # The same figures recomputed by hand from results.jsonl: a pair counts only if both orders named its label.
    results = rows(run)
    assert {r["key"] for r in results} == {p[0] for p in PAIRS}
    right = {r["key"]: [o["winner"] for o in r["verdict"]["orders"]] == [r["gold"]] * 2 for r in results}
    assert scores["strict_overall"] == pytest.approx(100 * sum(right.values()) / len(right), abs=1e-4)
    for task in by_task:
        keys = [r["key"] for r in results if r["group"] == task]
        assert scores[f"strict_{task}"] == pytest.approx(100 * sum(right[k] for k in keys) / len(keys), abs=1e-4)
    assert [p.key for p in read_predictions(run) if decided(p) == p.gold] == [k for k, ok in right.items() if ok]
    failures = sum(not r["verdict"]["parse_ok"] for r in results)
    assert pct(failures, len(results)) == pytest.approx(scores["parse_failure_rate"], abs=1e-4)


@pytest.mark.parametrize(
    ("line", "break_it", "message"),
    [
        (2, lambda row: row.pop("label"), "missing 'label'"),
        (4, lambda row: row.update(task_type="audio_understanding"), "task_type"),
        (6, lambda row: row.update(a={"image": "img/not-there.png"}), "media file not found"),
    ],
)
def test_a_bad_line_fails_naming_it_before_any_model_is_loaded(tmp_path, line, break_it, message):
    data = write_pair_file(tmp_path / "data")
    lines = [json.loads(x) for x in data.read_text().splitlines()]
    break_it(lines[line - 1])
    data.write_text("".join(json.dumps(r) + "\n" for r in lines))
    # No such model: had it been loaded first, that would be the error.
    run = tmp_path / "run"
    result = cli("eval", "run", "pairs", "--data", str(data), "-m", str(tmp_path / "no-model"), "--out", str(run))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"Error: {data}:{line}: ") and message in result.stderr
    assert not run.exists()


def test_misused_options_are_one_line_errors(tmp_path):
    data = write_pair_file(tmp_path / "data", PAIRS[:1])
    base = ["eval", "run", "-m", str(tmp_path / "no-model"), "--out", str(tmp_path / "run")]
    cases = [
        (["pairs", "--data", str(data), "--official"], "pairs has no official preset"),
        (["pairs"], "pairs needs --data FILE.jsonl"),
        (["pairs", "--data-dir", str(tmp_path / "data")], "pass --data FILE.jsonl instead of --data-dir"),
        (["vl-rewardbench", "--data", str(data)], "vl-rewardbench reads --data-dir"),
        (["pairs", "--data", str(data), "--task", "text"], "pairs has no task 'text'"),
    ]
    for extra, message in cases:
        result = cli(*base, *extra)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, (extra, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (extra, result.stderr)
    assert not (tmp_path / "run").exists()
    listed = cli("eval", "list")
    assert listed.returncode == 0 and any(line.startswith("pairs ") for line in listed.stdout.splitlines())
