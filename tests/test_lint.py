"""The checkout passes ruff as configured in pyproject.toml: lint (E, F, W, I; 120 columns) and formatting."""

from __future__ import annotations

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
