"""The converter registry and the one loop every converter runs through.

A converter is a declaration (`Converter`): the dataset it reads, the fields it needs, whether that schema was
confirmed against the dataset's card or assumed, and a `build` function turning one source row into a `Draft`: the
pair as the source orders it plus which one is better. `convert` streams the rows, draws each pair's A/B order from
the seed and the pair's id (so `--limit` or a reordered source does not change other pairs' orders), validates it as a
`LabelledPair` and writes JSONL. A row the converter cannot use (a tie, a missing image) is skipped and counted by
reason; a row without the expected fields stops the run with `SchemaError`, since then the whole file is wrong.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from deltarubric.pairdata.media import ImageStore, MediaSkip
from deltarubric.pairdata.sources import Row, iter_rows, require
from deltarubric.rm.pairs import LabelledPair
from deltarubric.rm.types import JudgeRequest

# Placeholders a rationale uses for "the first-listed / second-listed response"; replaced by "Response A" or
# "Response B" once the order is drawn, so the rationale names the candidates as the judge will see them.
FIRST, SECOND = "\ue000", "\ue001"


class Skip(ValueError):
    """A row that holds no usable pair (a tie, an unparsable prompt); counted under its message."""


@dataclass
class Draft:
    """One pair as the source lists it: `first`/`second` are a text or {"image": ref}; `better` indexes the better."""

    question: str
    first: str | dict[str, str]
    second: str | dict[str, str]
    better: Literal[0, 1]
    task_type: str
    images: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    rationale: str | None = None  # may mention FIRST / SECOND


@dataclass(frozen=True)
class Context:
    """What a build function may use besides its row: where images go."""

    images: ImageStore

    def image(self, value: Any, row: Row) -> str:
        return self.images.ref(value, row.path.parent)

    def video(self, value: Any, row: Row) -> str:
        """A video path, resolved like an image's (videos are never embedded in these sources)."""
        if not isinstance(value, str):
            raise MediaSkip("no video path in the row")
        return self.images.ref(value, row.path.parent, kind="video")


@dataclass(frozen=True)
class Converter:
    name: str
    dataset: str  # the public dataset, as the hub names it
    description: str
    fields: tuple[str, ...]  # required in every row
    schema: str  # "confirmed: <where>" or "assumed: <why>", shown by `data list` and in docs/data.md
    build: Callable[[Row, Context], Draft]
    expected: str = ""  # the layout as a schema error names it, when `fields` cannot (fields with alternatives)


@dataclass
class ConvertSummary:
    out: Path
    rows: int = 0
    written: int = 0
    images_written: int = 0
    skipped: Counter = field(default_factory=Counter)
    labels: Counter = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "rows_read": self.rows,
            "pairs_written": self.written,
            "images_written": self.images_written,
            "labels": dict(self.labels),
            "skipped": dict(self.skipped.most_common()),
        }


_REGISTRY: dict[str, Converter] = {}


def register(converter: Converter) -> Converter:
    if converter.name in _REGISTRY:
        raise ValueError(f"converter {converter.name!r} is registered twice")
    _REGISTRY[converter.name] = converter
    return converter


def converter_names() -> list[str]:
    import deltarubric.pairdata.converters  # noqa: F401  (registers every converter module)

    return sorted(_REGISTRY)


def get_converter(name: str) -> Converter:
    import deltarubric.pairdata.converters  # noqa: F401

    key = name.strip().lower().replace("-", "_")
    if key not in _REGISTRY:
        raise ValueError(f"unknown dataset converter {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def ordered(draft: Draft, pair_id: str, seed: int) -> LabelledPair:
    """The draft with its A/B order drawn from (seed, id): a pair keeps its order however the file is cut."""
    swap = random.Random(f"{seed}:{pair_id}").random() < 0.5
    a, b = (draft.second, draft.first) if swap else (draft.first, draft.second)
    label = "A" if (draft.better == 0) != swap else "B"
    rationale = draft.rationale
    if rationale is not None:
        first, second = ("Response B", "Response A") if swap else ("Response A", "Response B")
        rationale = rationale.replace(FIRST, first).replace(SECOND, second)
    request = JudgeRequest(
        id=pair_id,
        task_type=draft.task_type,
        question=draft.question,
        images=draft.images,
        videos=draft.videos,
        a=a,
        b=b,
    )
    return LabelledPair(request=request, label=label, rationale=rationale or None)


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


def text(value: Any, what: str) -> str:
    """A non-empty string field, or Skip naming it."""
    if not isinstance(value, str) or not value.strip():
        raise Skip(f"empty or non-text {what}")
    return value
