"""The `deltarubric` command: in-process with typer's runner, and once as a real subprocess for exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from deltarubric.cli.main import app
from deltarubric.cli.options import JUDGE_OPTIONS, config_from_flags
from tests.conftest import make_image

runner = CliRunner()


def judge_args(model: Path, image: Path, *extra: str) -> list[str]:
    return [
        "judge",
        "-m",
        str(model),
        "--image",
        str(image),
        "-q",
        "How many cats?",
        "--response-a",
        "Two cats.",
        "--response-b",
        "Three cats.",
        "--max-tokens",
        "8",
        *extra,
    ]


def test_judge_prints_the_verdict_json(tiny_model_dir, image_file):
    result = runner.invoke(app, judge_args(tiny_model_dir, image_file, "--judge", "deltarubric", "--swap", "--json"))
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    expected = {
        "winner",
        "p_a",
        "consistent",
        "checklist",
        "findings",
        "rationale",
        "raw",
        "parse_ok",
        "usage",
        "latency_s",
    }
    assert expected <= set(verdict)
    assert set(verdict["raw"]) == {"AB/planner", "AB/verifier", "BA/planner", "BA/verifier"}
    assert verdict["judge"] == "deltarubric" and verdict["error"] is None


def test_config_file_is_layered_under_flags(tmp_path, tiny_model_dir, image_file):
    cfg = tmp_path / "judge.yaml"
    cfg.write_text(f"model: {tiny_model_dir}\njudge: msrl\nswap: true\nsampling:\n  max_tokens: 5\n  seed: 3\n")
    result = runner.invoke(
        app,
        [
            "judge",
            "--config",
            str(cfg),
            "--image",
            str(image_file),
            "-q",
            "Q?",
            "--response-a",
            "x",
            "--response-b",
            "y",
            "--no-swap",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert verdict["judge"] == "msrl"  # from the file
    assert set(verdict["raw"]) == {"AB/judge"}  # --no-swap beat the file's swap: true
    assert verdict["usage"]["AB/judge"]["completion_tokens"] <= 5  # file's sampling kept


def test_flag_precedence_unit():
    flags = dict.fromkeys(JUDGE_OPTIONS) | {
        "model": "m",
        "seed": 9,
        "base_url": ["http://a/v1", "http://b/v1"],
        "timeout": 5.0,
    }
    config = config_from_flags(flags)
    assert config.sampling.seed == 9 and config.sampling.max_tokens == 1024
    assert config.compute.base_urls == ["http://a/v1", "http://b/v1"] and config.compute.timeout_s == 5.0


def test_jsonl_input_gives_jsonl_verdicts(tmp_path, tiny_model_dir):
    img = make_image(tmp_path / "a.png")
    lines = [
        {"id": "one", "question": "Q1?", "images": [str(img)], "a": {"text": "x"}, "b": {"text": "y"}},
        {"id": "two", "task_type": "text", "question": "Q2?", "a": {"text": "x"}, "b": {"text": "y"}},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    result = runner.invoke(
        app, ["judge", "-m", str(tiny_model_dir), "--input", str(path), "--judge", "direct", "--max-tokens", "4"]
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == ["one", "two"]


def test_make_tiny_model_command(tmp_path):
    result = runner.invoke(app, ["make-tiny-model", str(tmp_path / "ckpt")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ckpt" / "model.safetensors").is_file() and (tmp_path / "ckpt" / "chat_template.jinja").is_file()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DELTARUBRIC_DEBUG": ""}
    return subprocess.run(
        [sys.executable, "-m", "deltarubric.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_user_errors_are_one_line_without_traceback(tmp_path, tiny_model_dir):
    missing = run_cli(*judge_args(tiny_model_dir, tmp_path / "nope.png", "--json"))
    assert missing.returncode == 1  # the verdict is printed, with its error
    assert "file not found" in json.loads(missing.stdout)["error"]

    invalid = run_cli("judge", "-m", "x", "-q", "Q?", "--response-a", "a", "--response-b", "b", "--judge", "best")
    assert invalid.returncode == 2 and "Traceback" not in invalid.stderr
    assert "judge" in invalid.stderr and "deltarubric" in invalid.stderr  # names the field and the allowed values

    no_image = run_cli("judge", "-m", "x", "-q", "Q?", "--response-a", "a", "--response-b", "b")
    assert no_image.returncode == 2 and "needs at least one image" in no_image.stderr


def test_serve_command_answers_openai_requests(tiny_model_dir, image_file):
    """`deltarubric serve` as a user starts it, then the judge's openai backend against it."""
    import httpx

    from deltarubric.rm.config import JudgeConfig
    from deltarubric.rm.judge import Judge
    from deltarubric.rm.types import JudgeRequest
    from tests.conftest import served

    with served("-m", str(tiny_model_dir), "--served-model-name", "judge") as base:
        assert httpx.get(base + "/v1/models").json()["data"][0]["id"] == "judge"
        config = JudgeConfig(
            model="judge",
            compute={"backend": "openai", "base_urls": [base + "/v1"]},
            judge="msrl",
            sampling={"max_tokens": 6},
        )
        v = Judge(config).judge(JudgeRequest(question="How many?", images=[str(image_file)], a="1", b="2"))
        assert v.error is None and set(v.raw) == {"AB/judge"} and v.usage["AB/judge"].prompt_tokens > 0
