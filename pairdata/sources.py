"""Reading a dataset's rows one at a time from a local file or folder: JSON Lines (optionally .gz), JSON arrays and
parquet. Nothing here loads a whole file: GRAM-RR's files are 7 and 21 GB, vision-feedback-mix's parquet 4-13 GB."""

from __future__ import annotations

import gzip
import io
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")
_CHUNK = 1 << 20  # characters read at a time from a JSON array
_PEEK = 1 << 12  # characters read to tell JSON Lines from a JSON array
_LOOKAHEAD = 16  # past a decode error: a cut element's error is this close to the buffer's end
_PARQUET_BATCH = 64  # rows per parquet batch: rows with embedded images are large


class SchemaError(ValueError):
    """A source row without the fields a converter needs; the message lists what was expected and what was found."""


@dataclass(frozen=True)
class Row:
    """One source record and where it came from (media paths in it are relative to `path`'s folder)."""

    data: dict[str, Any]
    path: Path
    number: int  # 1-based within its file (line number for JSON Lines)


def source_files(src: Path) -> list[Path]:
    """`src` itself, or every supported file under a folder, in sorted order (shards are read in name order)."""
    if src.is_file():
        if not src.name.endswith(SUFFIXES):
            raise ValueError(f"{src}: not a supported file ({', '.join(SUFFIXES)})")
        return [src]
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such file or folder")
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES) and not _hidden(p, src))
    if not files:
        raise ValueError(f"{src}: no {', '.join(SUFFIXES)} files in this folder")
    # One format per dataset: a parquet release's stray .json (dataset_info.json and the like) is metadata, not rows.
    for family in (".parquet", (".jsonl", ".jsonl.gz"), (".json", ".json.gz")):
        chosen = [p for p in files if p.name.endswith(family)]
        if chosen:
            return chosen
    return files  # pragma: no cover - every suffix belongs to a family


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)  # .cache/ of huggingface_hub downloads


def iter_rows(src: Path) -> Iterator[Row]:
    """Every record of every file under `src`, streamed."""
    for path in source_files(src):
        reader = _parquet_rows if path.suffix == ".parquet" else _json_rows
        for number, data in enumerate(reader(path), 1):
            if not isinstance(data, dict):
                raise SchemaError(f"{path}:{number}: a record must be a JSON object, got {type(data).__name__}")
            yield Row(data, path, number)


def _open_text(path: Path) -> TextIO:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open(encoding="utf-8")


def _json_rows(path: Path) -> Iterator[Any]:
    """JSON Lines, or a JSON array (the GRAM datasets are documented as arrays): both streamed. The layout is told from
    the first non-blank character of a small chunk: reading the first line instead would load a one-line array (what
    `json.dump` writes) whole."""
    with _open_text(path) as f:
        head = f.read(_PEEK)
        while head and not head.strip():  # leading blank lines: keep their newlines, they count for line numbers
            more = f.read(_PEEK)
            if not more:
                return
            head += more
        if not head:
            return
        body = head.lstrip()
        if body.startswith("["):
            yield from _json_array(f, path, body[1:])
            return
        if not head.endswith("\n"):
            head += f.readline()  # complete the line the chunk cut, so the lines below are whole
        first = True
        for number, line in enumerate(itertools.chain(io.StringIO(head), f), 1):
            if line.strip():
                yield from _json_line(line, path, number, first)
                first = False


def _json_line(line: str, path: Path, number: int, first: bool) -> Iterator[Any]:
    try:
        yield json.loads(line)
    except json.JSONDecodeError as e:
        layout = " (a file must hold one record per line, or one JSON array of records)" if first else ""
        raise SchemaError(f"{path}:{number}: not JSON ({e.msg}){layout}") from None


def _json_array(f: TextIO, path: Path, buf: str) -> Iterator[Any]:
    """The elements of a JSON array whose '[' was already read (`buf`: the text after it), decoded one at a time
    from a rolling buffer, so memory holds about one element."""
    decoder = json.JSONDecoder()
    pos, n = 0, 0
    while True:
        while pos < len(buf) and (buf[pos].isspace() or buf[pos] == ","):
            pos += 1
        if pos < len(buf) and buf[pos] == "]":
            return
        try:
            value, end = decoder.raw_decode(buf, pos)
        except json.JSONDecodeError as e:
            # Read at least as much as is pending: an element of many chunks is then decoded O(log size) times, not
            # once per chunk (quadratic in its size). A broken element is reported now: reading on would not fix it
            # and would pull the rest of the file into the buffer.
            more = f.read(max(_CHUNK, len(buf) - pos)) if _cut(e, buf) else ""
            if not more:  # the element is broken, or incomplete and the file has ended
                raise SchemaError(f"{path}: element {n + 1} of the JSON array is not JSON ({e.msg})") from None
            buf, pos = buf[pos:] + more, 0
            continue
        if end == len(buf):  # a number at the buffer's end may continue in the next chunk
            more = f.read(_CHUNK)
            if more:
                buf, pos = buf[pos:] + more, 0
                continue
        n += 1
        yield value
        pos = end  # the buffer is cut only when refilled: cutting per element would copy it once per element


def _cut(e: json.JSONDecodeError, buf: str) -> bool:
    """Whether decoding failed because `buf` ends inside the element (more text may complete it), not on bad JSON.
    An open string fails where it starts; anything else fails within a few characters of the end (a literal or a
    \\uXXXX escape cut short)."""
    return e.msg.startswith("Unterminated string") or e.pos >= len(buf) - _LOOKAHEAD


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError("reading parquet needs pyarrow: pip install 'deltarubric[hub]'") from e
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_PARQUET_BATCH):
        yield from batch.to_pylist()


def require(row: Row, fields: tuple[str, ...], dataset: str, expected: str | None = None) -> None:
    """Raise SchemaError naming the expected fields and the ones the row has, if any expected field is missing.
    `expected` describes the layout when `fields` cannot (fields with alternatives)."""
    missing = [f for f in fields if f not in row.data]
    if missing:
        raise SchemaError(schema_message(row, dataset, missing, expected or ", ".join(fields)))


def schema_message(row: Row, dataset: str, missing: list[str], expected: str) -> str:
    found = ", ".join(sorted(row.data)) or "none"
    return (
        f"{dataset}: {row.path}:{row.number} lacks {', '.join(missing)}. This converter expects the fields "
        f"{expected}; the row has {found}. Is --src the right dataset?"
    )
