"""Judge a JSONL file of requests into JSONL verdicts: every line checked before anything runs, verdicts written as
each chunk of items is judged, a progress bar on stderr, and a rerun into the same output file resuming.

The resume is eval.runner's (`resume_rows`): ids already in the output file with a verdict are skipped, a line torn
by a crash is cut off, and verdicts that ended with an error are dropped from the file and judged again, so the file
ends with one verdict per id. The judge configuration that decides the verdicts (all but its compute section, and the
prompt's hash) is kept beside the output, in `<output>.judge.json`: a rerun with other such settings is refused, as
`eval run` refuses one, rather than mixing two judges' verdicts in one file.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from pydantic import ValidationError
from tqdm import tqdm

from deltarubric.eval.runner import resume_rows, setting_differences, write_json_atomic
from deltarubric.rm.config import verdict_identity
from deltarubric.rm.judge import Judge
from deltarubric.rm.types import JudgeRequest
from deltarubric.rm.validation import describe


def read_requests(path: Path) -> list[JudgeRequest]:
    """Every request of a JSONL file, validated before any is judged. A bad line raises ValueError naming the file,
    the line and the field. A line without an id gets '<file stem>-<line>'; ids must be unique (they key the output
    and its resume)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{path}: cannot read it: {e.strerror or e}") from None
    requests: list[JudgeRequest] = []
    lines: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} line {n}: not valid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path} line {n}: a line must hold a JSON object (one JudgeRequest)")
        row.setdefault("id", f"{path.stem}-{n}")
        try:
            request = JudgeRequest.model_validate(row)
        except ValidationError as e:
            raise ValueError(f"{path} line {n}: {describe(e, JudgeRequest)}") from None
        if request.id in lines:
            raise ValueError(
                f"{path} line {n}: id {request.id!r} again (first on line {lines[request.id]}); ids key "
                "the verdicts and the resume"
            )
        lines[request.id] = n
        requests.append(request)
    if not requests:
        raise ValueError(f"{path}: no requests in the file")
    return requests


@contextmanager
def _output(path: Path | None) -> Iterator[IO[str]]:
    if path is None:
        yield sys.stdout
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        yield f


def check_same_judge(out: Path, judge: Judge) -> None:
    """Record the verdict-deciding settings beside `out` (`<out>.judge.json`), or refuse when the ones recorded there
    differ from `judge`'s, naming what differs."""
    record_file = out.with_name(out.name + ".judge.json")
    method = judge.method
    record = {
        "judge": verdict_identity(judge.config),
        "prompt": {"name": method.name, "version": method.version, "sha256": method.sha256},
    }
    if not record_file.exists() or not out.exists() or not out.stat().st_size:  # no verdicts yet: any judge may start
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(record_file, record)
        return
    try:
        previous = json.loads(record_file.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{record_file} is not JSON ({e}): restore it, or pass a new --output") from None
    if diffs := setting_differences(previous, record):
        raise ValueError(
            f"{out} holds verdicts of another judge configuration ({'; '.join(diffs)}; recorded in {record_file}): "
            "rerun with the same settings, or pass a new --output"
        )


def judge_file(
    judge: Judge, requests: list[JudgeRequest], out: Path | None, *, chunk_size: int = 16
) -> list[str | None]:
    """Judge `requests` in chunks (one batched judge call each), writing one verdict per line to `out` (None: stdout)
    after each chunk; with an `out` that already holds verdicts, their ids are skipped. Returns the error (None when
    there was none) of each verdict judged now, so the caller can tell a broken run from a good one."""
    if out is not None:
        check_same_judge(out, judge)
    done = set() if out is None else resume_rows(out, lambda v: v["id"], lambda v: v.get("error"), compact=True)
    todo = [r for r in requests if r.id not in done]
    if done:
        print(f"resuming: {len(requests) - len(todo)} of {len(requests)} pairs already in {out}", file=sys.stderr)
    errors: list[str | None] = []
    with (
        _output(out) as f,
        tqdm(total=len(requests), initial=len(requests) - len(todo), unit="pair", desc="judge", file=sys.stderr) as bar,
    ):
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start : start + chunk_size]
            for verdict in judge.judge_batch(chunk):
                f.write(verdict.model_dump_json() + "\n")
                errors.append(verdict.error)
            f.flush()
            if out is not None:
                os.fsync(f.fileno())  # a crash after this point loses nothing already judged
            bar.update(len(chunk))
    return errors
