"""The `deltarubric` command: in-process with typer's runner, and once as a real subprocess for exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
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
    help_text = " ".join(runner.invoke(app, ["demo", "--help"]).output.split())  # rich may wrap the line anywhere
    assert 'pip install "deltarubric[demo]"' in help_text and 'pip install -e ".[demo]"' in help_text


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


def test_input_file_mostly_errors_is_a_failed_run_and_a_few_a_warning(tmp_path, tiny_model_dir):
    """Missing media are errors, not verdicts: a file where most pairs failed exits 1 and names the cause; one failed
    pair among many is a warning (exit 0) that says rerunning judges it again."""
    img = make_image(tmp_path / "a.png")
    good = {"question": "Q?", "images": [str(img)], "a": {"text": "x"}, "b": {"text": "y"}}
    bad = {**good, "images": [str(tmp_path / "gone.png")]}
    args = ["judge", "-m", str(tiny_model_dir), "--judge", "direct", "--max-tokens", "2"]

    path = tmp_path / "broken.jsonl"
    path.write_text("".join(json.dumps({**bad, "id": f"b{i}"}) + "\n" for i in range(3)))
    result = runner.invoke(app, [*args, "--input", str(path)])
    assert result.exit_code == 1, result.output
    assert "3 of 3 pairs ended with an error" in result.stderr and "file not found" in result.stderr

    path = tmp_path / "mostly_fine.jsonl"
    lines = [{**good, "id": f"g{i}"} for i in range(24)] + [{**bad, "id": "b"}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = runner.invoke(app, [*args, "--input", str(path)])
    assert result.exit_code == 0, result.output
    assert "warning: 1 of 25 pairs ended with an error" in result.stderr


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
    assert no_image.returncode == 2 and no_image.stderr.count("\n") == 1
    assert "give --image" in no_image.stderr and "--task text" in no_image.stderr  # the flags to fix it, not fields


def test_judge_help_imports_no_server_training_demo_or_engine_module():
    """Each command imports what it uses: `judge --help` needs none of the server, training, demo or engine stacks,
    nor httpx (local media only need it for http(s) URLs)."""
    heavy = ("fastapi", "uvicorn", "gradio", "trl", "matplotlib", "torch", "transformers", "httpx", "datasets")
    code = (
        "import sys\n"
        "sys.argv = ['deltarubric', 'judge', '--help']\n"
        "from deltarubric.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--max-tokens" in proc.stdout, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "[]"


def run_main(argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """cli.main.main in this process, as the console script runs it: (exit code, stderr)."""
    from deltarubric.cli.main import main

    monkeypatch.setattr(sys, "argv", ["deltarubric", *argv])
    monkeypatch.delenv("DELTARUBRIC_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


PAIR = ["-q", "Q?", "--response-a", "a", "--response-b", "b", "--task", "text"]


@pytest.mark.parametrize(
    "argv, message",
    [
        # a missing required field: the flag to give, not 'model: Field required'
        (["judge", *PAIR], "Error: give --model (or model: in the --config file)\n"),
        # a bound broken by a flag names the flag
        (["judge", "-m", "x", *PAIR, "--max-tokens", "0"], "--max-tokens: Input should be greater than or equal to 1"),
        # a request built from flags names the flag of the bad field
        (["judge", "-m", "x", *PAIR[:-1], "banana"], "--task: Input should be 'image_understanding'"),
        (["judge", "-m", "x", *PAIR, "--image", "cat.png"], "text takes no context images"),
        (["judge", "-m", "x", "--output", "o.jsonl", *PAIR], "--output goes with --input"),
        (["serve", "-m", "x", "--max-batch", "0"], "Error: --max-batch: Input should be greater than or equal to 1"),
    ],
)
def test_usage_errors_name_the_flag_in_one_line(argv, message, monkeypatch, capsys):
    code, err = run_main(argv, monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err and "Field required" not in err and "Value error" not in err


def test_config_file_errors_name_the_file_line_and_nearest_key(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model: m\nsampling:\n  max_tokenz: 8\nbackend: openai\n")
    code, err = run_main(["judge", "--config", str(cfg), *PAIR], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"{cfg} line 3: sampling: unknown key 'max_tokenz' (did you mean 'max_tokens'?)" in err
    assert f"{cfg} line 4: unknown key 'backend' (it belongs under 'compute')" in err

    cfg.write_text("model: m\nswap: [true\n")
    code, err = run_main(["judge", "--config", str(cfg), *PAIR], monkeypatch, capsys)
    assert code == 2 and f"{cfg} line 3: not valid YAML" in err

    cfg.write_text("model: m\nsampling: {temperature: 9}\n")  # the file's value: named by its file and line
    code, err = run_main(["judge", "--config", str(cfg), *PAIR, "--top-p", "2"], monkeypatch, capsys)
    assert f"{cfg} line 2: sampling.temperature: Input should be less than or equal to 2" in err
    assert "--top-p: Input should be less than or equal to 1" in err  # the flag's value: named by its flag


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"question": "Q", "a": "x", "b": "y"', "line 2: not valid JSON: Expecting ',' delimiter"),
        ('["Q", "x", "y"]', "line 2: a line must hold a JSON object"),
        ('{"question": "Q", "a": {"txt": "x"}, "b": "y", "task_type": "text"}', "line 2: a: unknown key 'txt' (did "),
        ('{"questoin": "Q", "a": "x", "b": "y", "task_type": "text"}', "line 2: unknown key 'questoin' (did you mean"),
        ('{"question": "Q", "a": "x", "b": "y", "task_type": "txt"}', "line 2: task_type: Input should be"),
        ('{"id": "one", "question": "Q", "a": "x", "b": "y", "task_type": "text"}', "line 2: id 'one' again"),
    ],
)
def test_input_file_errors_name_the_file_line_and_field(line, message, tmp_path, monkeypatch, capsys):
    path = tmp_path / "in.jsonl"
    first = {"id": "one", "task_type": "text", "question": "Q", "a": "x", "b": "y"}
    path.write_text(json.dumps(first) + "\n" + line + "\n")
    code, err = run_main(["judge", "-m", str(tmp_path / "no-model"), "--input", str(path)], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{path} {message}" in err and "missing" not in err  # before loading a model: the model path does not exist


def test_input_streams_to_output_and_a_killed_run_resumes(tmp_path, tiny_model_dir):
    """`judge --input --output`: killed with SIGKILL after some verdicts (and with a line torn by the kill), the same
    command judges only the rest; every id ends in the file exactly once, and errored verdicts are judged again."""
    n = 40
    path = tmp_path / "in.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "task_type": "text", "question": f"Q{i}?", "a": "x", "b": "y"}) + "\n"
            for i in range(n)
        )
    )
    out = tmp_path / "out.jsonl"
    argv = [sys.executable, "-m", "deltarubric.cli", "judge", "-m", str(tiny_model_dir), "--input", str(path)]
    argv += ["--output", str(out), "--chunk-size", "1", "--judge", "deltarubric", "--swap", "--max-tokens", "24"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while not (out.exists() and out.read_text().count("\n") >= 3) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [json.loads(x) for x in out.read_text().splitlines() if x.endswith("}")]
    assert 3 <= len(before) < n, "the run finished before it could be killed: give it more to do"
    with out.open("a") as f:
        failed = before[-1] | {"id": f"p{n - 1}", "error": "backend error: connection refused"}  # judged again
        f.write(json.dumps(failed) + "\n")
        f.write('{"id": "p3')  # torn mid-write

    resumed = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(before)}/{n}" in resumed.stderr and "pair" in resumed.stderr  # the progress bar starts where it was
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert sorted(ids) == sorted(f"p{i}" for i in range(n))  # each once: the errored row dropped, judged again
    assert ids[: len(before)] == [v["id"] for v in before]  # what was written stays as written


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


def test_a_mistyped_model_folder_fails_at_once_naming_it(tmp_path, monkeypatch, capsys):
    """Not a folder and not org/name: refused before the hub client is asked (it retries for a minute offline)."""
    from deltarubric.rm.hf_compat import check_model_name

    code, err = run_main(["judge", "-m", str(tmp_path / "tiny-qwen3vl"), *PAIR], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert f"{tmp_path / 'tiny-qwen3vl'}: no such folder" in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no config.json"):
        check_model_name(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="not a hub model id"):
        check_model_name("tiny-qwen3vl")
    check_model_name("Qwen/Qwen3-VL-8B-Instruct")  # a hub id: left to the hub client
