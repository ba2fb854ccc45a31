"""The `deltarubric` command: in-process with typer's runner, and once as a real subprocess for exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import typer.rich_utils
from typer.main import get_command
from typer.testing import CliRunner

from deltarubric.app.settings import ServerSettings
from deltarubric.cli.main import app
from deltarubric.cli.options import judge_options
from deltarubric.rm.config import ComputeConfig, JudgeConfig, SamplingConfig
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


def test_flags_override_the_file_which_overrides_the_defaults(tmp_path):
    """Only flags given on the command line override the file: --seed 0 is given (the file's 1 loses) although 0 is the
    default; --max-tokens is not given, so the file's 5 stays."""
    probe, seen = typer.Typer(), []

    @probe.command()
    @judge_options
    def show(config: JudgeConfig) -> None:
        seen.append(config)

    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: m\nsampling: {max_tokens: 5, seed: 1}\ncompute: {timeout_s: 9}\n")
    urls = ["--base-url", "http://a/v1", "--base-url", "http://b/v1"]
    result = runner.invoke(probe, ["--config", str(cfg), "--seed", "0", *urls, "--presentation", "random"])
    assert result.exit_code == 0, result.output
    (c,) = seen
    assert (c.sampling.seed, c.sampling.max_tokens, c.presentation) == (0, 5, "random")
    assert c.compute.base_urls == ["http://a/v1", "http://b/v1"] and c.compute.timeout_s == 9
    assert c.sampling.model_fields_set == {"seed", "max_tokens"}  # what eval's --official keeps as the user's


def _commands(command, path=()):
    """(path, click command) of every leaf command under `command`."""
    subcommands = getattr(command, "commands", None)
    if not subcommands:
        yield list(path), command
        return
    for name, sub in subcommands.items():
        yield from _commands(sub, (*path, name))


def _help_entries(output: str) -> dict[str, str]:
    """Rendered --help as {long flag: its whole entry, continuation lines included}."""
    entries: dict[str, str] = {}
    current = None
    for line in output.splitlines():
        m = re.match(r"^\W*(--[a-z0-9-]+)", line)
        if m:
            current = m.group(1)
            entries[current] = line
        elif current:
            entries[current] += " " + line
    return entries


def test_every_option_of_every_command_shows_its_default_or_is_required(monkeypatch):
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 400)  # one line per option: no wrapped flag names
    monkeypatch.setattr(typer.rich_utils, "FORCE_TERMINAL", False)  # no colour codes, also under CI
    checked = set()
    for path, command in _commands(get_command(app)):
        if path[:1] == ["train"] and path[1] in ("grpo", "sft", "msrl"):
            continue  # TRL's own --help, below
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        entries = _help_entries(result.output)
        for param in command.params:
            if param.param_type_name != "option" or param.name == "help":
                continue
            flag = next(o for o in param.opts if o.startswith("--"))
            entry = entries.get(flag, "")
            assert "[default: " in entry or "Required" in entry or "[required]" in entry, (path, flag, entry)
            checked.add((" ".join(path), flag))
    assert {("judge", "--top-p"), ("judge", "--backend"), ("serve", "--max-batch"), ("eval run", "--swap")} <= checked
    assert len(checked) > 150


def test_judge_help_shows_the_defaults_and_help_of_the_config_models(monkeypatch):
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 400)
    monkeypatch.setattr(typer.rich_utils, "FORCE_TERMINAL", False)
    entries = _help_entries(runner.invoke(app, ["judge", "--help"]).output)
    for flag, default in {
        "--backend": "transformers",
        "--judge": "deltarubric",
        "--swap": "no-swap",
        "--max-tokens": "1024",
        "--presentation": "given",
        "--base-url": "http://127.0.0.1:8000/v1",
        "--timeout": "600.0",
    }.items():
        assert f"[default: {default}]" in entries[flag], entries[flag]
    assert "Nucleus sampling" in entries["--top-p"]  # the field's description is the flag's help


@pytest.mark.parametrize("model", [JudgeConfig, SamplingConfig, ComputeConfig, ServerSettings])
def test_every_config_field_has_a_description(model):
    assert [n for n, f in model.model_fields.items() if not f.description] == []


def test_demo_help_names_the_extra_to_install(monkeypatch):
    monkeypatch.setattr(typer.rich_utils, "FORCE_TERMINAL", False)
    assert 'pip install -e ".[demo]"' in runner.invoke(app, ["demo", "--help"]).output


@pytest.mark.parametrize("command, flag", [("grpo", "--num_checklists"), ("sft", "--targets")])
def test_train_help_is_trls_own(command, flag):
    pytest.importorskip("trl")
    result = runner.invoke(app, ["train", command, "--help"])
    assert result.exit_code == 0 and flag in result.output


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
