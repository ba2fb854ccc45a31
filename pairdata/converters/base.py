"""What a converter module declares, and the pieces every converter shares.

A converter is a declaration (`Converter`): the dataset it reads, the fields it needs, whether that schema was
confirmed against the dataset's card or assumed, and a `build` function turning one source row into a `Draft`: the
pair as the source orders it plus which one is better; `register` adds it under its name. Each module in this package
imports this one and nothing above it; the package (`__init__.py`) finds the modules, imports them and runs the loop,
so imports run one way: package -> converter modules -> base.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from deltarubric.pairdata.media import ImageStore, MediaSkip
from deltarubric.pairdata.sources import Row
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


# Filled by register() as the converter modules are imported; looked up through the package (`get_converter`).
REGISTERED: dict[str, Converter] = {}


def register(converter: Converter) -> Converter:
    """Add a converter under its name (a module calls this once, at import); a second one of that name is an error."""
    if converter.name in REGISTERED:
        raise ValueError(f"converter {converter.name!r} is registered twice")
    REGISTERED[converter.name] = converter
    return converter


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


def text(value: Any, what: str) -> str:
    """A non-empty string field, or Skip naming it."""
    if not isinstance(value, str) or not value.strip():
        raise Skip(f"empty or non-text {what}")
    return value
