"""Every code block of README.md and docs/*.md runs as pasted, or says in the Markdown why it is not run here.

The rules a page follows (a failing test names the block and the rule):

- Every fenced block names its language. Commands are ```python (run with this project's python), ```bash / ```sh
  (run with `bash -e -o pipefail`) and ```console (the lines after `$ ` are run, the rest is output). Any other
  language (json, yaml, text, ...) is data or output, never run.
- A page is a worked example: its command blocks run in order in one fresh folder that looks like the checkout root
  (the checkout's tracked files linked in), so a later block may use what an earlier one wrote. Each page also gets a
  copy of `tiny-qwen3-vl/`, built by the README's own first command, as a reader who followed the README has it.
- Install steps (`python3 -m venv`, `. .venv/bin/activate`, `pip install`, `apt-get`) at the start of a command line
  are what CI's own set-up does (.ci/run installs the `test` extra, which holds every extra but vllm): they are left
  out and the rest of the line runs.
- A command block that cannot run here carries, on the line right above its fence, `<!-- not run in CI: REASON -->`
  (a GPU, real weights, the hub, a server that runs until stopped, a long training run), or
  `<!-- run in CI by tests/<the test>.py -->` when another test runs and checks it. Both are listed as skips
  (pytest -rs).
- A data block with `<!-- save as PATH -->` right above its fence is written to PATH for the blocks after it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
COMMAND_LANGUAGES = {"python", "bash", "sh", "console"}
INSTALL_STEP = re.compile(r"(python3? -m venv|\. \.venv/bin/activate|source \.venv/bin/activate|pip install|apt-get)\b")
FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)\s*$")
MARKER = re.compile(r"^<!--\s*(not run in CI|run in CI by|save as)\s*:?\s*(.*?)\s*-->$")
BLOCK_TIMEOUT_S = 240


@dataclass
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    marker: str = ""  # 'not run in CI', 'run in CI by', 'save as' or ''
    argument: str = ""  # the marker's reason, test file or path

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


@functools.cache
def read_blocks(page: str) -> list[Block]:
    """Read once per session, so the blocks run are the blocks collected even if a page changes meanwhile."""
    return parse_blocks(page, (ROOT / page).read_text())


def parse_blocks(page: str, markdown: str) -> list[Block]:
    """The fenced blocks of one page, in order, each with the marker on the line above its fence."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, language = opening.groups()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence), None)
        assert end is not None, f"{page}:{i + 1}: the block opened here is never closed"
        block = Block(page, i + 1, language.lower(), "\n".join(lines[i + 1 : end]) + "\n")
        above = lines[i - 1].strip() if i > 0 else ""
        if m := MARKER.match(above):
            block.marker, block.argument = m.group(1), m.group(2)
        blocks.append(block)
        i = end + 1
    return blocks


def without_install_steps(script: str) -> str:
    """The script with leading install steps of each command line removed (CI's own set-up performs them)."""
    kept = []
    for line in re.sub(r"\s*\\\n\s*", " ", script).splitlines():  # one logical line per command
        steps = line.split(" && ")
        while steps and INSTALL_STEP.match(steps[0].strip()):
            steps.pop(0)
        if steps:
            kept.append(" && ".join(steps))
    return "\n".join(kept).strip()


def console_commands(text: str) -> str:
    """The commands of a console transcript: the `$ ` lines and their backslash continuations."""
    commands, continuing = [], False
    for line in text.splitlines():
        if line.startswith("$ ") or continuing:
            commands.append(line[2:] if line.startswith("$ ") and not continuing else line)
            continuing = line.endswith("\\")
    return "\n".join(commands) + "\n"


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    command: str


@dataclass
class PageRun:
    """One page's command blocks run in order in its own folder; results are kept by block id."""

    page: str
    workdir: Path
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    done: int = 0  # how many of the page's blocks have been handled


def _environment() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRL_EXPERIMENTAL_SILENCE": "1",
        "WANDB_DISABLED": "true",
        "PYTHONUNBUFFERED": "1",
    }


def _checkout_like(workdir: Path) -> None:
    """Link the checkout's tracked top-level entries into `workdir`, so paths such as data/examples/cats.png resolve."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in sorted({p.split("/", 1)[0] for p in tracked.splitlines()}):
        if (ROOT / name).exists():
            (workdir / name).symlink_to(ROOT / name)


class Runner:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.pages: dict[str, PageRun] = {}

    def outcome(self, block: Block) -> Outcome | None:
        """Run the page up to and including `block`; its outcome, or None when it is not a command."""
        run = self._page(block.page)
        blocks = read_blocks(block.page)
        while run.done < len(blocks):
            current = blocks[run.done]
            run.done += 1
            result = self._run_one(run, current)
            if result is not None:
                run.outcomes[current.id] = result
            if current.id == block.id:
                break
        return run.outcomes.get(block.id)

    def _page(self, page: str) -> PageRun:
        if page not in self.pages:
            workdir = self.base / re.sub(r"\W", "_", page)
            workdir.mkdir(parents=True)
            _checkout_like(workdir)
            if page != "README.md":
                tiny = self.readme_tiny_model()
                if tiny.is_dir():
                    shutil.copytree(tiny, workdir / tiny.name)
            self.pages[page] = PageRun(page, workdir)
        return self.pages[page]

    def readme_tiny_model(self) -> Path:
        """The README's `tiny-qwen3-vl/`, after running the README's blocks that build it."""
        readme = [b for b in read_blocks("README.md") if b.language in COMMAND_LANGUAGES and not b.marker]
        builder = next(b for b in readme if "make-tiny-model tiny-qwen3-vl" in b.text)
        self.outcome(builder)
        return self.pages["README.md"].workdir / "tiny-qwen3-vl"

    def _run_one(self, run: PageRun, block: Block) -> Outcome | None:
        if block.marker == "save as" and block.language not in COMMAND_LANGUAGES:
            target = run.workdir / block.argument
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text)
            return None
        if block.language not in COMMAND_LANGUAGES or block.marker:
            return None
        if block.language == "python":
            argv, script = [sys.executable, "-c", block.text], block.text
        else:
            text = console_commands(block.text) if block.language == "console" else block.text
            script = without_install_steps(text)
            if not script:
                return Outcome(0, "", "", "")
            argv = ["bash", "-e", "-o", "pipefail", "-c", script]
        try:
            proc = subprocess.run(
                argv, cwd=run.workdir, env=_environment(), capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S
            )
        except subprocess.TimeoutExpired as e:
            return Outcome(-1, str(e.stdout or ""), f"timed out after {BLOCK_TIMEOUT_S} s", script)
        return Outcome(proc.returncode, proc.stdout, proc.stderr, script)


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    return Runner(tmp_path_factory.mktemp("docs"))


ALL_BLOCKS = [b for page in PAGES for b in read_blocks(page)]


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.id for b in ALL_BLOCKS])
def test_block_runs_as_pasted(block: Block, runner: Runner) -> None:
    where = f"{block.id} ({block.language or 'no language'})"
    assert block.language, f"{where}: name the block's language (```bash, ```python, ```json, ```text, ...)"
    is_command = block.language in COMMAND_LANGUAGES
    if block.marker == "save as":
        assert not is_command, f"{where}: 'save as' is for data blocks; a command block writes its own files"
        assert block.argument and not Path(block.argument).is_absolute(), f"{where}: 'save as' needs a relative path"
    elif block.marker:
        assert is_command, f"{where}: '{block.marker}' is for command blocks; a {block.language} block is never run"
        assert block.argument, f"{where}: '{block.marker}' needs a reason or a test file after it"
    if block.marker == "run in CI by":
        test_file = ROOT / block.argument
        assert test_file.is_file(), f"{where}: {block.argument} does not exist"
        assert block.page in test_file.read_text(), f"{where}: {block.argument} does not mention {block.page}"
    outcome = runner.outcome(block)
    if block.marker == "not run in CI":
        pytest.skip(f"{block.id}: not run in CI: {block.argument}")
    if block.marker == "run in CI by":
        pytest.skip(f"{block.id}: run in CI by {block.argument}")
    if not is_command:
        return
    assert outcome is not None
    if not outcome.command:
        pytest.skip(f"{block.id}: only install steps, which CI's own set-up runs")
    assert outcome.returncode == 0, (
        f"{where} failed (exit {outcome.returncode}); run it, or mark it '<!-- not run in CI: REASON -->' on the line"
        f" above its fence.\n--- ran:\n{outcome.command[:2000]}\n--- stdout (end):\n{outcome.stdout[-2000:]}"
        f"\n--- stderr (end):\n{outcome.stderr[-3000:]}"
    )


def test_readme_first_command_prints_a_verdict(runner: Runner) -> None:
    """The README's first command prints what the README says: a DeltaRubric verdict in both orders, unparsable."""
    first = next(b for b in read_blocks("README.md") if "make-tiny-model tiny-qwen3-vl" in b.text)
    assert without_install_steps(first.text).startswith(
        "deltarubric make-tiny-model tiny-qwen3-vl && deltarubric judge"
    )
    outcome = runner.outcome(first)
    assert outcome is not None and outcome.returncode == 0, outcome and outcome.stderr[-2000:]
    verdict = json.loads(outcome.stdout[outcome.stdout.index("{") :])  # make-tiny-model prints its folder first
    assert verdict["judge"] == "deltarubric" and [o["shown_order"] for o in verdict["orders"]] == ["AB", "BA"]
    assert verdict["winner"] is None and verdict["parse_ok"] is False and verdict["error"] is None
    assert all(u["completion_tokens"] <= 64 for u in verdict["usage"].values())


@pytest.mark.parametrize(
    ("script", "kept"),
    [
        # The README's first command: the venv and pip steps go, the judgment stays.
        ("python3 -m venv .venv && . .venv/bin/activate && pip install x && deltarubric judge", "deltarubric judge"),
        ("pip install -e '.[demo]'\ndeltarubric demo", "deltarubric demo"),  # a line that only installs goes
        ("apt-get install -y chromium  # as root", ""),
        ("deltarubric judge && pip install x", "deltarubric judge && pip install x"),  # only leading steps go
        ("deltarubric judge \\\n    --json", "deltarubric judge --json"),  # continuation lines are one command
    ],
)
def test_install_steps_are_left_out(script: str, kept: str) -> None:
    assert without_install_steps(script) == kept


def test_console_blocks_run_their_dollar_lines() -> None:
    transcript = "$ deltarubric eval list \\\n    --json\nvl-rewardbench  ...\n$ echo done\ndone\n"
    assert console_commands(transcript) == "deltarubric eval list \\\n    --json\necho done\n"


def test_markers_are_read_from_the_line_above_the_fence() -> None:
    page = (
        "text\n<!-- not run in CI: needs a GPU -->\n```bash\nvllm serve x\n```\n\n<!-- save as a.yaml -->\n"
        "```yaml\nk: 1\n```\n<!-- not run in CI: x -->\n\n```python\nprint(1)\n```\n"
    )
    assert [(b.language, b.marker, b.argument, b.text) for b in parse_blocks("page.md", page)] == [
        ("bash", "not run in CI", "needs a GPU", "vllm serve x\n"),
        ("yaml", "save as", "a.yaml", "k: 1\n"),
        ("python", "", "", "print(1)\n"),  # a blank line between marker and fence: the marker is not this block's
    ]
