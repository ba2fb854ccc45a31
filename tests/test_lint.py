"""The checkout passes ruff as configured in pyproject.toml (lint: E, F, W, I with 120 columns; formatting), and the
files that code, comments and docs cite exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command",
    [["check", "--output-format", "concise", "."], ["format", "--check", "."]],
    ids=["check", "format"],
)
def test_ruff(command: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"ruff {' '.join(command)}:\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}"


def _checkout_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [p for p in listed.split("\0") if p and (ROOT / p).is_file()]


# A path into one of the checkout's own top-level folders, ending in a file name with an extension.
CITED = r"(?<![\w./<-])((?:{tops})/(?:[\w.-]+/)*[\w-]+\.(?:md|py|pyi|yaml|yml|json|jsonl|txt|png|j2|toml))\b"
# A line citing another repository at a commit ("owner/repo @ 3693413, data/data.jsonl") names that repository's files.
OTHER_REPOSITORY = re.compile(r"@ ?[0-9a-f]{7,40}\b")


def cited_paths(text: str, tops: set[str]) -> list[tuple[int, str]]:
    pattern = re.compile(CITED.format(tops="|".join(re.escape(t) for t in sorted(tops))))
    return [
        (n, m.group(1))
        for n, line in enumerate(text.splitlines(), 1)
        if not OTHER_REPOSITORY.search(line)
        for m in pattern.finditer(line)
    ]


def test_cited_files_exist() -> None:
    """A comment, docstring or page that sends the reader to `docs/x.md` or `rm/y.py` sends them somewhere real."""
    files = _checkout_files()
    tops = {p.split("/", 1)[0] for p in files if "/" in p}
    missing = []
    for rel in files:
        if rel == "tests/test_lint.py":  # this file's examples cite missing files on purpose
            continue
        path = ROOT / rel
        if path.suffix not in {".py", ".md", ".yaml", ".yml", ".toml", ".j2", ".txt"} and rel != ".ci/run":
            continue
        for line, cited in cited_paths(path.read_text(encoding="utf-8"), tops):
            if not (ROOT / cited).exists() and not (path.parent / cited).exists():
                missing.append(f"{rel}:{line}: {cited}")
    assert not missing, "files cited but not in the checkout:\n" + "\n".join(missing)


@pytest.mark.parametrize(
    ("line", "found"),
    [
        ("See docs/environment.md section 2.", ["docs/environment.md"]),
        ("`rm/hf_compat.py` relies on it", ["rm/hf_compat.py"]),
        ("VL_RewardBench @ e492d65 data/data.jsonl", []),  # another repository's file
        ("runs/x/results.jsonl and ../data/a.png", []),  # not one of our folders; relative to somewhere else
    ],
)
def test_cited_paths_are_recognised(line: str, found: list[str]) -> None:
    assert [p for _, p in cited_paths(line, {"docs", "rm", "data"})] == found
