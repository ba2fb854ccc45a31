"""A broken run must look broken: item errors counted apart from parse failures, a wrong --data-dir or a dead backend
stops the run with a message that says what to fix, a missing hub says at once what to pass, a larger --limit
extends a run, run files are written atomically, reports and scores refuse mixed-up inputs, GenAI-Bench runs the
tasks it has data for, and `eval prepare genai-bench` turns the release's parquet files into the local layout."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from deltarubric.cli.main import app
from deltarubric.eval.core import Prediction
from deltarubric.eval.registry import get_benchmark
from deltarubric.eval.runner import RESULTS_FILE, RUN_FILE, SUMMARY_FILE, eval_config, read_predictions, run_benchmark
from deltarubric.rm.config import JudgeConfig
from tests.scripted import ScriptedBackend, user_text

runner = CliRunner()
GENAI = get_benchmark("genai-bench")
VLRB = get_benchmark("vl-rewardbench")
SHIPPED_VLRB = Path(__file__).resolve().parents[1] / "data/vl-rewardbench/data.jsonl"
VERDICT = "Analysis: compared.\nJustification: it is better.\nWinner: [[A]]"


def respond(conv):
    """The direct judge's answer, except for questions marked [fail]: a backend error (as when the server is down)."""
    return RuntimeError("connection refused") if "[fail]" in user_text(conv) else VERDICT


@pytest.fixture
def scripted(monkeypatch):
    """Every Judge the CLI builds answers through the scripted backend (no model is loaded)."""
    import deltarubric.rm.judge as judge_module

    real = judge_module.Judge
    monkeypatch.setattr(
        judge_module, "Judge", lambda config, backend=None: real(config, backend=ScriptedBackend(respond))
    )


def scripted_judge(**update):
    from deltarubric.rm.judge import Judge

    config = eval_config(GENAI, JudgeConfig(model="scripted", judge="direct", **update), official=False)
    return config, Judge(config, backend=ScriptedBackend(respond))


def write_genai(root: Path, tasks=("image_generation",), n: int = 10, fail=()) -> Path:
    """A GenAI-Bench folder in the local layout: <task>.jsonl and small PNGs; rows in `fail` get a [fail] prompt."""
    root.mkdir(parents=True, exist_ok=True)
    votes = ["leftvote", "rightvote", "tievote", "bothbad_vote"]
    for task in tasks:
        rows = []
        for i in range(n):
            names = {}
            for side in ("left", "right", "source"):
                names[side] = f"{task}-{i}-{side}.png"
                Image.new("RGB", (40, 32), (20 * i % 255, 90 if side == "left" else 180, 40)).save(root / names[side])
            text = f"{'[fail]' if i in fail else '[ok]'} picture number {i}"
            row = {"id": i, "vote_type": votes[i % 4], "left_image": names["left"], "right_image": names["right"]}
            if task == "image_edition":
                row |= {
                    "instruct_prompt": text,
                    "source_prompt": "a",
                    "target_prompt": "b",
                    "source_image": names["source"],
                }
            else:
                row["prompt"] = text
            rows.append(row)
        (root / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def lines(run: Path) -> list[str]:
    return (run / RESULTS_FILE).read_text().splitlines()


# 1. item errors are not parse failures -------------------------------------------------------------------------------


def test_errors_are_counted_apart_from_parse_failures():
    from deltarubric.eval.core import error_kind

    preds = [
        Prediction(key="ok", gold="A", winner="A", samples=[("AB", "A")], parse_ok=True),
        Prediction(key="unparsable", gold="A", samples=[("AB", None)], parse_ok=False),
        Prediction(key="no-image", gold="A", parse_ok=False, error="/data/images/1.jpg: file not found"),
        Prediction(
            key="backend",
            gold="B",
            samples=[("AB", None)],
            parse_ok=False,
            error="backend error in stage 'judge': http://h:8000/v1: ConnectError: refused",
        ),
    ]
    scores = get_benchmark("mm-rlhf-rewardbench").score(
        [p.model_copy(update={"meta": {"id": p.key}}) for p in preds], "default"
    )
    assert scores["parse_failure_rate"] == pytest.approx(25.0)  # only the answer that could not be read
    assert scores["error_rate"] == pytest.approx(50.0)  # no answer at all
    assert scores["accuracy"] == pytest.approx(25.0)  # strict: errors and unparsable verdicts are both wrong
    assert error_kind("/a/b/1.jpg: file not found") == error_kind("/c/2.jpg: file not found") == "media: file not found"
    assert error_kind("backend error in stage 'verdict': http://h:8000/v1: HTTP 503: busy 12") == error_kind(
        "backend error in stage 'verdict': http://g:9000/v1: HTTP 503: busy 7"
    )


def test_wrong_data_dir_stops_after_the_first_chunk_naming_the_path_then_resumes(scripted, tmp_path):
    empty = tmp_path / "not-the-data"
    empty.mkdir()
    run = tmp_path / "run"
    args = ["eval", "run", "vl-rewardbench", "-m", "scripted", "--judge", "direct", "--out", str(run)]
    result = runner.invoke(app, [*args, "--data-dir", str(empty)])
    assert result.exit_code == 1, result.output
    first = json.loads(SHIPPED_VLRB.read_text().splitlines()[0])
    assert f"no media found under --data-dir {empty}: looked for {empty / first['image_path']}" in result.stderr
    assert "strict_overall" not in result.stdout  # no table of zeros
    assert len(lines(run)) == 16 and not (run / SUMMARY_FILE).exists()  # the first chunk, not 1,250 items

    # The right folder, the same --out: the items that errored are judged again.
    data = tmp_path / "vlrb"
    for row in map(json.loads, SHIPPED_VLRB.read_text().splitlines()[:20]):
        (data / row["image_path"]).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (48, 40), (30, 90, 200)).save(data / row["image_path"])
    resumed = runner.invoke(app, [*args, "--data-dir", str(data), "--limit", "20", "--json"])
    assert resumed.exit_code == 0, resumed.output
    scores = json.loads(resumed.stdout)
    assert scores["n"] == 20 and scores["error_rate"] == 0.0 and scores["parse_failure_rate"] == 0.0
    preds = read_predictions(run)
    assert len(preds) == 20 and all(p.error is None for p in preds)


def test_a_dead_backend_stops_the_run_early(scripted, tmp_path):
    data = write_genai(tmp_path / "data", n=12, fail=range(12))
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "eval",
            "run",
            "genai-bench",
            "--task",
            "image_generation",
            "--data-dir",
            str(data),
            "-m",
            "scripted",
            "--judge",
            "direct",
            "--chunk-size",
            "4",
            "--out",
            str(run),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "the first 8 items all failed the same way" in result.stderr and "connection refused" in result.stderr
    assert len(lines(run)) == 8


def test_errors_above_max_error_rate_fail_naming_the_most_common(scripted, tmp_path):
    data = write_genai(tmp_path / "data", n=10, fail={3, 6, 9})
    run = tmp_path / "run"
    args = [
        "eval",
        "run",
        "genai-bench",
        "--task",
        "image_generation",
        "--data-dir",
        str(data),
        "-m",
        "scripted",
        "--judge",
        "direct",
        "--out",
        str(run),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "3 of 10 items ended with an error" in result.stderr and "connection refused" in result.stderr
    assert "--max-error-rate 0.05" in result.stderr
    table = dict(line.split() for line in result.stdout.splitlines())
    assert table["error_rate"] == "30.00" and table["parse_failure_rate"] == "0.00"  # the scores still print
    summary = json.loads((run / SUMMARY_FILE).read_text())
    assert summary["errors"][0]["count"] == 3 and "connection refused" in summary["errors"][0]["example"]

    allowed = runner.invoke(app, [*args, "--max-error-rate", "0.5"])
    assert allowed.exit_code == 0, allowed.output
    assert "warning: genai-bench/image_generation: 3 of 10 items ended with an error" in allowed.stderr
    assert len(lines(run)) == 13  # the three errored items were judged again (and failed again)


# 2. no data, no hub -------------------------------------------------------------------------------------------------


def run_main(argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """cli.main.main as the console script runs it: (exit code, stderr)."""
    from deltarubric.cli.main import main

    monkeypatch.setattr(sys, "argv", ["deltarubric", *argv])
    monkeypatch.delenv("DELTARUBRIC_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def test_offline_without_data_dir_says_what_to_pass_at_once(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code, err = run_main(
        ["eval", "run", "vl-rewardbench", "-m", str(tmp_path / "no-model"), "--out", str(tmp_path / "r")],
        monkeypatch,
        capsys,
    )
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "HF_HUB_OFFLINE=1" in err and "pass --data-dir DIR" in err and "MMInstruction/VL-RewardBench" in err


def test_unreachable_hub_without_data_dir_says_what_to_pass_at_once(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    from tests.conftest import free_port

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens
    code, err = run_main(
        ["eval", "run", "mm-rlhf-rewardbench", "-m", str(tmp_path / "no-model"), "--out", str(tmp_path / "r")],
        monkeypatch,
        capsys,
    )
    assert code == 2
    assert "cannot be reached" in err and "pass --data-dir DIR" in err and "Traceback" not in err


# 3. a larger --limit extends the run ----------------------------------------------------------------------------------


def test_a_larger_limit_extends_the_run_and_a_refusal_names_the_setting(tmp_path):
    data = write_genai(tmp_path / "data", n=10)
    config, judge = scripted_judge()
    run = tmp_path / "run"
    run_benchmark(GENAI, "image_generation", config, data, run, limit=4, judge=judge)
    first = lines(run)
    scores = run_benchmark(GENAI, "image_generation", config, data, run, limit=6, judge=judge)
    assert lines(run)[:4] == first and len(lines(run)) == 6 and scores["n"] == 6
    assert json.loads((run / RUN_FILE).read_text())["limit"] == 6
    smaller = run_benchmark(GENAI, "image_generation", config, data, run, limit=3, judge=judge)
    assert len(lines(run)) == 6 and smaller["n"] == 3  # nothing judged; the first 3 scored
    run_benchmark(GENAI, "image_generation", config, data, run, judge=judge)
    assert len(lines(run)) == 10 and json.loads((run / RUN_FILE).read_text())["limit"] is None

    other, other_judge = scripted_judge(sampling={"max_tokens": 99})
    with pytest.raises(ValueError, match=r"another judge configuration \(sampling.max_tokens: 1024 there, 99 now\)"):
        run_benchmark(GENAI, "image_generation", other, data, run, judge=other_judge)
    rows = [json.loads(x) for x in (data / "image_generation.jsonl").read_text().splitlines()]
    rows[0]["vote_type"] = "rightvote"
    (data / "image_generation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="another item set"):
        run_benchmark(GENAI, "image_generation", config, data, run, judge=judge)


def test_a_run_recorded_before_data_sha256_extends_too(tmp_path):
    data = write_genai(tmp_path / "data", n=8)
    config, judge = scripted_judge()
    run = tmp_path / "run"
    run_benchmark(GENAI, "image_generation", config, data, run, limit=3, judge=judge)
    record = json.loads((run / RUN_FILE).read_text())
    for new_field in ("data_sha256", "n_items"):
        record.pop(new_field)
    (run / RUN_FILE).write_text(json.dumps(record))  # as older versions wrote it: items_sha256 of the first 3
    run_benchmark(GENAI, "image_generation", config, data, run, limit=5, judge=judge)
    assert len(lines(run)) == 5 and json.loads((run / RUN_FILE).read_text())["limit"] == 5


# 4. run.json and summary.json are written atomically ------------------------------------------------------------------


def test_run_files_are_replaced_atomically(tmp_path, monkeypatch):
    import deltarubric.eval.runner as runner_module

    data = write_genai(tmp_path / "data", n=3)
    config, judge = scripted_judge()
    run = tmp_path / "run"
    replaced = []
    real_replace = runner_module.os.replace

    def spy(src, dst):
        replaced.append((Path(src), Path(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(runner_module.os, "replace", spy)
    run_benchmark(GENAI, "image_generation", config, data, run, judge=judge)
    assert [d.name for _, d in replaced] == [RUN_FILE, SUMMARY_FILE]
    assert all(s.parent == d.parent == run and s.name != d.name for s, d in replaced)  # a temp file in the same folder
    summary = (run / SUMMARY_FILE).read_text()

    def crash(src, dst):
        raise OSError("disk full")  # the process dies between writing the temp file and renaming it

    monkeypatch.setattr(runner_module.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        run_benchmark(GENAI, "image_generation", config, data, run, judge=judge)
    assert (run / SUMMARY_FILE).read_text() == summary  # the old file, whole
    assert sorted(p.name for p in run.iterdir()) == [RESULTS_FILE, RUN_FILE, SUMMARY_FILE]  # no temp file left


def test_an_empty_run_json_left_by_a_crash_does_not_block_the_resume(tmp_path):
    data = write_genai(tmp_path / "data", n=3)
    config, judge = scripted_judge()
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_FILE).write_text("")  # an older version died while writing it, before any result
    scores = run_benchmark(GENAI, "image_generation", config, data, run, judge=judge)
    assert scores["n"] == 3 and json.loads((run / RUN_FILE).read_text())["benchmark"] == "genai-bench"


# 5. reports and scores refuse mixed-up inputs -------------------------------------------------------------------------


def pairs_run(tmp_path: Path) -> Path:
    from deltarubric.eval.benchmarks import pairs
    from deltarubric.rm.judge import Judge

    data = tmp_path / "pairs.jsonl"
    data.write_text(
        json.dumps({"id": "t1", "task_type": "text", "question": "2+2?", "a": "4", "b": "5", "label": "A"}) + "\n"
    )
    bench = pairs.for_file(data)
    config = eval_config(bench, JudgeConfig(model="scripted", judge="direct"), official=False)
    run_benchmark(
        bench, "default", config, data, tmp_path / "pairs-run", judge=Judge(config, backend=ScriptedBackend(respond))
    )
    return tmp_path / "pairs-run"


def test_report_refuses_runs_of_different_benchmarks(tmp_path):
    config, judge = scripted_judge()
    genai_run = tmp_path / "genai-run"
    run_benchmark(GENAI, "image_generation", config, write_genai(tmp_path / "data", n=2), genai_run, judge=judge)
    result = runner.invoke(
        app, ["eval", "report", str(genai_run), str(pairs_run(tmp_path)), "--out", str(tmp_path / "rep")]
    )
    assert isinstance(result.exception, ValueError), result.output
    assert "a report compares runs of one benchmark" in str(result.exception)
    assert "genai-run is genai-bench" in str(result.exception) and not (tmp_path / "rep").exists()


def test_score_refuses_a_run_or_file_of_another_task_or_benchmark(tmp_path):
    config, judge = scripted_judge()
    genai_run = tmp_path / "genai-run"
    run_benchmark(GENAI, "image_generation", config, write_genai(tmp_path / "data", n=2), genai_run, judge=judge)

    def score(*args):
        return runner.invoke(app, ["eval", "score", *args, "--json"])

    assert score("genai-bench", "--predictions", str(genai_run)).exit_code == 0
    wrong_task = score("genai-bench", "--task", "video_generation", "--predictions", str(genai_run))
    assert "is a run of the task 'image_generation', not 'video_generation'" in str(wrong_task.exception)
    wrong_bench = score("vl-rewardbench", "--predictions", str(genai_run))
    assert "is a run of genai-bench, not vl-rewardbench" in str(wrong_bench.exception)

    editing = [
        {
            "idx": i,
            "source_prompt": "a",
            "target_prompt": "b",
            "instruct_prompt": "c",
            "response": "[[A>B]]",
            "model_vote": "[[A>B]]",
            "human_vote": "leftvote",
            "correct": True,
        }
        for i in range(3)
    ]
    published = tmp_path / "results/image_edition/gpt4o/pairwise.jsonl"
    published.parent.mkdir(parents=True)
    published.write_text("".join(json.dumps(r) + "\n" for r in editing))
    assert score("genai-bench", "--task", "image_edition", "--predictions", str(published)).exit_code == 0
    by_path = score("genai-bench", "--task", "image_generation", "--predictions", str(published))
    assert "predictions of image_edition (its path names image_edition), not of 'image_generation'" in str(
        by_path.exception
    )
    loose = tmp_path / "edits.jsonl"
    loose.write_text(published.read_text())
    by_rows = score("genai-bench", "--task", "video_generation", "--predictions", str(loose))
    assert "its rows carry instruct_prompt" in str(by_rows.exception)
    generation = tmp_path / "gen.jsonl"
    generation.write_text(
        "".join(
            json.dumps({k: v for k, v in r.items() if "_prompt" not in k} | {"prompt": "p"}) + "\n" for r in editing
        )
    )
    assert "not of 'image_edition'" in str(
        score("genai-bench", "--task", "image_edition", "--predictions", str(generation)).exception
    )


# 6. genai-bench without --task runs every task whose data is present ----------------------------------------------


def test_genai_bench_without_task_runs_the_tasks_present_and_names_the_rest(scripted, tmp_path):
    data = write_genai(tmp_path / "data", tasks=("image_generation", "image_edition"), n=3)
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "eval",
            "run",
            "genai-bench",
            "--data-dir",
            str(data),
            "-m",
            "scripted",
            "--judge",
            "direct",
            "--out",
            str(run),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"skipping video_generation ({data / 'video_generation.jsonl'} not found)" in result.stderr
    scores = json.loads(result.stdout)
    assert set(scores) == {"image_generation", "image_edition"} and scores["image_edition"]["n"] == 3
    assert sorted(p.name for p in run.iterdir()) == ["image_edition", "image_generation"]

    nothing = runner.invoke(
        app,
        [
            "eval",
            "run",
            "genai-bench",
            "--data-dir",
            str(tmp_path / "empty"),
            "-m",
            "scripted",
            "--out",
            str(tmp_path / "r2"),
        ],
    )
    assert "no task's data under --data-dir" in str(nothing.exception)


# 7. eval prepare genai-bench ---------------------------------------------------------------------------------------


def png(colour: tuple[int, int, int], fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (36, 28), colour).save(buf, format=fmt)
    return buf.getvalue()


def write_release(src: Path, split: str = "test_v1") -> None:
    """A miniature TIGER-Lab/GenAI-Bench download: <task>/<split>-00000-of-00001.parquet with the release's fields
    (images as the `datasets` Image feature, a struct of bytes and path; videos named by file, downloaded beside)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    votes = ["leftvote", "rightvote", "tievote", "bothbad_vote"]

    def img(i, side, fmt="PNG"):
        return {"bytes": png((40 * i % 255, 120 if side == "left" else 10, 60), fmt), "path": None}

    tables = {
        "image_generation": pa.table(
            {
                "prompt": [f"gen prompt {i}" for i in range(4)],
                "left_model": ["m1"] * 4,
                "right_model": ["m2"] * 4,
                "left_image": pa.array([img(i, "left") for i in range(4)], image),
                "right_image": pa.array([img(i, "right", "JPEG") for i in range(4)], image),
                "vote_type": votes,
            }
        ),
        "image_edition": pa.table(
            {
                "source_prompt": ["a taxi"] * 3,
                "target_prompt": ["a taxi and sheep"] * 3,
                "instruct_prompt": [f"add sheep {i}" for i in range(3)],
                "source_image": pa.array([img(i, "source") for i in range(3)], image),
                "left_output_image": pa.array([img(i, "left") for i in range(3)], image),
                "right_output_image": pa.array([img(i, "right") for i in range(3)], image),
                "vote_type": votes[:3],
            }
        ),
        "video_generation": pa.table(
            {
                "prompt": ["a dog", "a ball"],
                "left_video": ["https://example.org/videos/v0l.mp4", "v1l.mp4"],
                "right_video": ["https://example.org/videos/v0r.mp4", "v1r.mp4"],
                "vote_type": ["leftvote", "rightvote"],
            }
        ),
    }
    for task, table in tables.items():
        (src / task).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, src / task / f"{split}-00000-of-00001.parquet")
    (src / "videos").mkdir(exist_ok=True)
    for name in ("v0l.mp4", "v0r.mp4", "v1l.mp4", "v1r.mp4"):
        (src / "videos" / name).write_bytes(b"\x00\x00\x00\x18ftypmp42" + name.encode())


def test_prepare_turns_the_release_into_the_local_layout(scripted, tmp_path):
    src, out = tmp_path / "GenAI-Bench", tmp_path / "genai"
    write_release(src)
    write_release(src, split="test")  # the other split is left alone
    result = runner.invoke(app, ["eval", "prepare", "genai-bench", "--src", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "image_generation     4 rows" in result.stdout and f"--data-dir {out}" in result.stdout

    gen = GENAI.load(out, "image_generation")
    assert [(i.key, i.gold, i.request.question) for i in gen] == [
        (str(n), v, f"gen prompt {n}") for n, v in enumerate(["leftvote", "rightvote", "tievote", "bothbad_vote"])
    ]
    with Image.open(gen[1].request.a.image) as a, Image.open(gen[1].request.b.image) as b:
        assert (a.format, b.format, a.getpixel((0, 0))) == ("PNG", "JPEG", (40, 120, 60))
    first = json.loads((out / "image_generation.jsonl").read_text().splitlines()[0])
    assert (first["left_model"], first["right_model"]) == ("m1", "m2")
    edit = GENAI.load(out, "image_edition")
    assert [i.request.question for i in edit] == ["add sheep 0", "add sheep 1", "add sheep 2"]
    assert all(Path(i.request.images[0]).is_file() and Path(i.request.b.image).is_file() for i in edit)
    assert edit[0].meta == {"source_prompt": "a taxi", "target_prompt": "a taxi and sheep"}
    video = GENAI.load(out, "video_generation")
    assert Path(video[0].request.a.video).read_bytes().endswith(b"v0l.mp4")  # found under --src by its file name

    ran = runner.invoke(
        app,
        [
            "eval",
            "run",
            "genai-bench",
            "--task",
            "image_edition",
            "--data-dir",
            str(out),
            "-m",
            "scripted",
            "--judge",
            "direct",
            "--out",
            str(tmp_path / "run"),
            "--json",
        ],
    )
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout)["error_rate"] == 0.0


def test_prepare_names_the_fields_it_expects_and_what_it_found(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "GenAI-Bench"
    (src / "image_generation").mkdir(parents=True)
    pq.write_table(
        pa.table({"prompt": ["p"], "left_image": [b"x"], "right_image": [b"y"], "label": ["leftvote"]}),
        src / "image_generation/test_v1-00000-of-00001.parquet",
    )
    result = runner.invoke(app, ["eval", "prepare", "genai-bench", "--src", str(src), "--out", str(tmp_path / "out")])
    message = str(result.exception)
    assert "needs the fields prompt, left_image, right_image, vote_type; missing vote_type" in message
    assert "fields found: prompt, left_image, right_image, label" in message

    other = tmp_path / "old-download"
    write_release(other, split="train_v1")
    result = runner.invoke(
        app, ["eval", "prepare", "genai-bench", "--src", str(other), "--out", str(tmp_path / "out2")]
    )
    assert "no GenAI-Bench split 'test_v1'" in str(result.exception) and "image_generation: train_v1" in str(
        result.exception
    )
    assert (
        runner.invoke(
            app,
            [
                "eval",
                "prepare",
                "genai-bench",
                "--src",
                str(other),
                "--out",
                str(tmp_path / "out2"),
                "--split",
                "train_v1",
            ],
        ).exit_code
        == 0
    )


def test_prepare_says_which_videos_are_missing(tmp_path):
    src = tmp_path / "GenAI-Bench"
    write_release(src)
    (src / "videos/v1r.mp4").unlink()
    result = runner.invoke(app, ["eval", "prepare", "genai-bench", "--src", str(src), "--out", str(tmp_path / "out")])
    assert "video_generation: 1 media files named by the release are not under --src" in str(result.exception)
    assert "(e.g. v1r.mp4)" in str(result.exception)
