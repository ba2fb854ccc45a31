"""docs/data.md's worked example runs as pasted (from the repository root, here a copy of its data/ folder link) and
prints what the page says it prints."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_data_walkthrough_runs_as_pasted(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "data.md").read_text()
    section = doc.split("## Try it in a few seconds", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```(\w*)\n(.*?)^```$", section, re.DOTALL | re.MULTILINE)  # (language, body), in order
    (script,), (shown_pair,), (shown_output,) = (
        [b for lang, b in blocks if lang == k] for k in ("bash", "json", "text")
    )
    shown_dedup = shown_output.splitlines()
    (tmp_path / "data").symlink_to(ROOT / "data")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-len(shown_dedup) :] == shown_dedup
    first = json.loads((tmp_path / "runs" / "pairs" / "helpsteer3.jsonl").read_text().splitlines()[0])
    assert first == json.loads(shown_pair)
    report = json.loads((tmp_path / "runs" / "clean" / "dedup_report.json").read_text())
    assert [d["id"] for d in report["dropped"]] == ["mm_rlhf-2"]
    assert len((tmp_path / "runs" / "clean" / "mm.jsonl").read_text().splitlines()) == 2
