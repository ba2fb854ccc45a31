"""Review of the command line built from the config models: flags that were ignored, a default --help misstated, a
resume that mixed two judges' verdicts, a config file that crashed with a traceback."""

from __future__ import annotations

import json
import sys

import pytest
import typer.rich_utils
from typer.testing import CliRunner

from deltarubric.cli.main import app
from deltarubric.eval.judge_file import judge_file
from deltarubric.eval.registry import get_benchmark
from deltarubric.eval.runner import eval_config
from deltarubric.rm.config import build_config
from deltarubric.rm.judge import Judge
from deltarubric.rm.types import JudgeRequest
from tests.scripted import ScriptedBackend

PAIR = ["-q", "Q?", "--response-a", "a", "--response-b", "b", "--task", "text"]


def run_main(argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """cli.main.main in this process, as the console script runs it: (exit code, stderr)."""
    from deltarubric.cli.main import main

    monkeypatch.setattr(sys, "argv", ["deltarubric", *argv])
    monkeypatch.delenv("DELTARUBRIC_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "section, flag", [("sampling: 5", ["--max-tokens", "8"]), ("compute: [1]", ["--backend", "openai"])]
)
def test_a_file_section_that_is_no_mapping_is_a_one_line_error_when_a_flag_of_it_is_given(
    section, flag, tmp_path, monkeypatch, capsys
):
    """A flag of a section merged into the file's section with `{**file_value}`: a TypeError and its traceback."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: m\n{section}\n")
    code, err = run_main(["judge", "--config", str(cfg), *PAIR, *flag], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{cfg} line 2: {section.split(':')[0]}: Input should be a valid dictionary" in err


def test_eval_run_keeps_a_presentation_the_user_set():
    """`eval run --presentation given` was replaced by 'random' without a word; unset, random stays the default."""
    bench = get_benchmark("vl-rewardbench")
    assert eval_config(bench, build_config(model="m", presentation="given"), official=False).presentation == "given"
    assert eval_config(bench, build_config(model="m"), official=False).presentation == "random"


def test_eval_run_help_shows_the_presentation_it_uses(monkeypatch):
    """`eval run --help` said '[default: given]' while a run without the flag is shown in random order."""
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 400)
    monkeypatch.setattr(typer.rich_utils, "FORCE_TERMINAL", False)
    out = CliRunner().invoke(app, ["eval", "run", "--help"]).output
    (line,) = [x for x in out.splitlines() if "--presentation" in x]
    assert "[default: (random" in line and "[default: given]" not in line, line


@pytest.mark.parametrize("extra", [["--task", "text"], ["-q", "Q?"], ["--image", "x.png"], ["--id", "7"]])
def test_judge_input_refuses_pair_flags_it_would_ignore(extra, tmp_path, monkeypatch, capsys):
    """With --input every pair comes from the file: a --task (or any pair flag) given with it was silently dropped."""
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"id": "1", "task_type": "text", "question": "Q", "a": "x", "b": "y"}) + "\n")
    code, err = run_main(["judge", "-m", str(tmp_path / "no-model"), "--input", str(path), *extra], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{extra[0] if extra[0] != '-q' else '--question'}: with --input" in err


def _scripted_judge(**settings) -> Judge:
    return Judge(build_config(model="m", **settings), backend=ScriptedBackend(lambda conv: "no verdict here"))


def test_judge_file_refuses_to_resume_an_output_of_another_judge(tmp_path):
    """Resuming into an output written by another judge configuration skipped every id and left the other judge's
    verdicts as this one's; compute settings (how verdicts are computed) may still change."""
    requests = [JudgeRequest(id=str(i), task_type="text", question="Q", a="x", b="y") for i in range(3)]
    out = tmp_path / "v.jsonl"
    assert len(judge_file(_scripted_judge(judge="direct"), requests[:2], out)) == 2
    with pytest.raises(ValueError, match="another judge configuration.*judge: 'direct' there, 'msrl' now"):
        judge_file(_scripted_judge(judge="msrl"), requests, out)
    with pytest.raises(ValueError, match="swap: False there, True now"):
        judge_file(_scripted_judge(judge="direct", swap=True), requests, out)
    # the same judge, computed with another batch size: resumes, judging only the new id
    assert len(judge_file(_scripted_judge(judge="direct", compute={"batch_size": 1}), requests, out)) == 1
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["0", "1", "2"]
