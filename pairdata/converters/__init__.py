"""The converter registry and the one loop every converter runs through.

One module per public dataset, each declaring a `Converter` (`base.py`); looking a name up imports them all, found by
listing this package, so a new dataset is a new module and nothing else. `convert` streams the rows, draws each
pair's A/B order from the seed and the pair's id (so `--limit` or a reordered source does not change other pairs'
orders), validates it as a `LabelledPair` and writes JSONL. A row the converter cannot use (a tie, a missing image) is
skipped and counted by reason; a row without the expected fields stops the run with `SchemaError`, since then the
whole file is wrong.
"""

from __future__ import annotations

import functools
import importlib
import json
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from deltarubric.pairdata.converters.base import REGISTERED, Context, Converter, ConvertSummary, Skip, ordered
from deltarubric.pairdata.media import ImageStore, MediaSkip
from deltarubric.pairdata.sources import iter_rows, require
from deltarubric.rm.pairs import LabelledPair

__all__ = ["ConvertSummary", "convert", "converter_names", "get_converter"]


@functools.cache
def _import_converter_modules() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def converter_names() -> list[str]:
    _import_converter_modules()
    return sorted(REGISTERED)


def get_converter(name: str) -> Converter:
    _import_converter_modules()
    key = name.strip().lower().replace("-", "_")
    if key not in REGISTERED:
        raise ValueError(f"unknown dataset converter {name!r}; available: {', '.join(sorted(REGISTERED))}")
    return REGISTERED[key]


def convert(
    name: str,
    src: str | Path,
    out: str | Path,
    *,
    seed: int = 0,
    limit: int | None = None,
    id_prefix: str | None = None,
) -> ConvertSummary:
    """Convert the dataset at `src` (a file or folder) into a pair file at `out`; returns what was written and skipped.
    Ids are `<id_prefix>-<row index>` (default prefix: the converter's name); give each split its own prefix when
    converting them separately, or their ids collide. The file appears under its name only when complete (written as
    `<out>.part` first)."""
    conv = get_converter(name)
    prefix = conv.name if id_prefix is None else id_prefix.strip()
    if not prefix or any(c.isspace() for c in prefix):
        raise ValueError(f"--id-prefix {id_prefix!r}: give a non-empty prefix without spaces")
    src, out = Path(src), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    store = ImageStore(out.parent)
    summary = ConvertSummary(out=out)
    tmp = out.with_name(out.name + ".part")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for pair in _pairs(conv, src, Context(store), seed, limit, summary, prefix):
                f.write(json.dumps(pair.to_json(), ensure_ascii=False) + "\n")
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half file left behind to be mistaken for a result
        raise
    tmp.replace(out)
    summary.images_written = store.written
    return summary


def _pairs(
    conv: Converter, src: Path, ctx: Context, seed: int, limit: int | None, summary: ConvertSummary, prefix: str
) -> Iterator[LabelledPair]:
    if limit is not None and limit < 1:
        return
    for index, row in enumerate(iter_rows(src)):
        summary.rows += 1
        require(row, conv.fields, conv.name, conv.expected)
        try:
            pair = ordered(conv.build(row, ctx), f"{prefix}-{index}", seed)
        except (Skip, MediaSkip) as e:
            summary.skipped[str(e)] += 1
            continue
        except ValidationError as e:  # e.g. an empty response: the judge could not be asked about it
            summary.skipped[_first_error(e)] += 1
            continue
        summary.written += 1
        summary.labels[pair.label] += 1
        yield pair
        if limit is not None and summary.written >= limit:
            return  # before the next row is read: --limit on a 21 GB file reads only what it needs


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"] if p != "request")
    return "invalid pair: " + (f"{where}: " if where else "") + re.sub(r"^Value error, ", "", err["msg"])
