"""Labelled preference pairs: the one file format for training a judge and for evaluating it on your own data.

A JSONL file, one pair per line: the fields of `JudgeRequest` plus `label` ("A" or "B", the better candidate), and
optionally warm-start targets (`caption`, `checklist`, `findings`, `rationale`). Media paths are relative to the file.
Example:

    {"id": "p0", "question": "What colour is the square?", "images": ["img/0.png"],
     "a": "It is red.", "b": "It is blue.", "label": "B", "checklist": ["Is the square blue?"]}

Every line is checked before anything runs; an error names the file, the line and the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deltarubric.rm.types import JudgeRequest

Label = Literal["A", "B"]
TARGET_FIELDS = ("caption", "checklist", "findings", "rationale")


class PairFileError(ValueError):
    """A pair file that cannot be used; the message names the file and line."""


class LabelledPair(BaseModel):
    """One line of a pair file: a request, which candidate is better, and optional warm-start targets."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    request: JudgeRequest
    label: Label
    caption: str | None = Field(None, description="A description of the visual input (captions stage, warm starts).")
    checklist: list[str] = Field(default_factory=list, description="A gold checklist (DeltaRubric warm start).")
    findings: list[str] = Field(
        default_factory=list,
        description=(
            "Per checklist item, what the visual input shows and which candidate that favours, ending 'Favors: A|B' "
            "(warm start: a trace that checks before it decides)."
        ),
    )
    rationale: str | None = Field(None, description="A gold justification (warm start).")

    @model_validator(mode="after")
    def _findings_match_checklist(self) -> LabelledPair:
        if self.findings and len(self.findings) != len(self.checklist):
            raise ValueError(f"findings: one per checklist item ({len(self.checklist)}), got {len(self.findings)}")
        return self

    def to_json(self) -> dict[str, Any]:
        """The file form (media as given, relative paths stay relative)."""
        row = self.request.model_dump(exclude_none=True, exclude_defaults=False)
        row = {k: v for k, v in row.items() if v not in ([], None)}
        for side in ("a", "b"):
            row[side] = {k: v for k, v in row[side].items() if v is not None}
            if list(row[side]) == ["text"]:
                row[side] = row[side]["text"]
        row["label"] = self.label
        row.update({k: getattr(self, k) for k in TARGET_FIELDS if getattr(self, k)})
        return row


def _resolve(ref: Any, base: Path) -> Any:
    """A relative media path made absolute against the pair file's folder; URLs and absolute paths as given."""
    if (
        not isinstance(ref, str)
        or ref.startswith(("http://", "https://", "data:", "file://"))
        or Path(ref).is_absolute()
    ):
        return ref
    return str(base / ref)


def _media(request: JudgeRequest) -> list[str]:
    refs = [*request.images, *request.videos, *(x for c in (request.a, request.b) for x in (c.image, c.video))]
    return [r for r in refs if isinstance(r, str)]


def parse_pair(row: dict[str, Any], base: Path, *, check_media: bool = True) -> LabelledPair:
    """One decoded JSON line -> a pair with media paths resolved against `base`. Raises ValueError naming the field."""
    if not isinstance(row, dict):
        raise ValueError("a line must hold a JSON object")
    row = dict(row)
    if "label" not in row:
        raise ValueError('missing \'label\' ("A" or "B": the better candidate)')
    targets = {k: row.pop(k) for k in TARGET_FIELDS if k in row}
    label = row.pop("label")
    if label not in ("A", "B"):
        raise ValueError(f'label must be "A" or "B", got {label!r}')
    row["images"] = [_resolve(x, base) for x in row.get("images") or []]
    row["videos"] = [_resolve(x, base) for x in row.get("videos") or []]
    for side in ("a", "b"):
        if isinstance(row.get(side), dict):
            row[side] = {k: _resolve(v, base) if k in ("image", "video") else v for k, v in row[side].items()}
    try:
        pair = LabelledPair(request=JudgeRequest.model_validate(row), label=label, **targets)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p not in ("request",))
        raise ValueError(f"{where + ': ' if where else ''}{first['msg']}") from None
    if check_media:
        for ref in _media(pair.request):
            if not ref.startswith(("http://", "https://", "data:")) and not Path(ref.removeprefix("file://")).is_file():
                raise ValueError(f"media file not found: {ref}")
    return pair


def read_pairs(path: str | Path, *, check_media: bool = True) -> list[LabelledPair]:
    """Every pair of a JSONL file, validated; the first bad line raises `PairFileError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise PairFileError(f"{path}: pair file not found")
    pairs, ids = [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if isinstance(row, dict) and "id" not in row:
                row["id"] = f"{path.stem}-{n}"  # ids key results and resumes; a file need not carry them
            pair = parse_pair(row, path.parent.resolve(), check_media=check_media)
        except (ValueError, json.JSONDecodeError) as e:
            raise PairFileError(f"{path}:{n}: {e}") from None
        if pair.request.id in ids:
            raise PairFileError(f"{path}:{n}: duplicate id {pair.request.id!r} (ids key results and resumes)")
        ids.add(pair.request.id)
        pairs.append(pair)
    if not pairs:
        raise PairFileError(f"{path}: no pairs in the file")
    return pairs


def write_pairs(pairs: Iterable[LabelledPair], path: str | Path) -> Path:
    """Write pairs as JSONL (media references as they are held: relative paths stay relative to `path`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps(p.to_json(), ensure_ascii=False) + "\n")
    return path
