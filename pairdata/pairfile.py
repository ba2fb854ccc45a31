"""Rewriting a pair file line by line: each line's raw row (written back as it was, so fields this code does not know
survive) next to its validated `LabelledPair` (media paths resolved, for reading the media). Used by `dedup` and
`caption`, which drop or extend lines but never re-serialise pairs they do not change."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from deltarubric.rm.pairs import LabelledPair, PairFileError, parse_pair

_URL = ("http://", "https://", "data:", "file://")


def read_lines(path: Path) -> Iterator[tuple[int, dict[str, Any], LabelledPair]]:
    """(line number, raw row, pair) for every non-blank line; ids default as `read_pairs` gives them."""
    src_dir = path.parent.resolve()
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise PairFileError(f"{path}:{n}: not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise PairFileError(f"{path}:{n}: a line must hold a JSON object")
            try:
                pair = parse_pair({"id": f"{path.stem}-{n}", **row}, src_dir, check_media=False)
            except ValueError as e:
                raise PairFileError(f"{path}:{n}: {e}") from None
            yield n, row, pair


def relocate(row: dict[str, Any], src_dir: Path, out_dir: Path) -> dict[str, Any]:
    """The row with relative media paths rewritten from the input file's folder to the output's."""
    if src_dir.resolve() == out_dir.resolve():
        return row

    def move(ref: Any) -> Any:
        if not isinstance(ref, str) or ref.startswith(_URL) or Path(ref).is_absolute():
            return ref
        return os.path.relpath(src_dir / ref, out_dir)

    row = dict(row)
    for key in ("images", "videos"):
        if isinstance(row.get(key), list):
            row[key] = [move(r) for r in row[key]]
    for side in ("a", "b"):
        if isinstance(row.get(side), dict):
            row[side] = {k: move(v) if k in ("image", "video") else v for k, v in row[side].items()}
    return row


@contextmanager
def atomic_lines(out: Path) -> Iterator[TextIO]:
    """A file to write lines to that appears as `out` only when the block completes (may replace the input itself)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            yield f
    except BaseException:
        tmp.unlink(missing_ok=True)  # a cut-short output must not pass for a finished one
        raise
    tmp.replace(out)


def write_row(f: TextIO, row: dict[str, Any]) -> None:
    f.write(json.dumps(row, ensure_ascii=False) + "\n")
