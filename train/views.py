"""The two other views of a labelled pair that MSRL's early stages train on, made from the pair's `caption`.

- **caption view** (stage 2a): the pair with each image replaced by its caption, written into the question; no image.
  A request without an image cannot be `image_understanding` (`JudgeRequest` refuses it), so the view is a `text`
  pair; the stage rewards the task type of the pair it came from (`source_task_types`).
- **text view** (stage 1, the testbed's "text preference" data): the scene told as prose ("The top left cell has a red
  square."), every mention of an image made a scene, task type `text`, no caption: a text-only preference pair about
  the same kind of content, as HelpSteer3 or GRAM-RR pairs are for a real model.

Only pairs whose visual input is their context images have a view: one `caption` per pair cannot stand for two
candidate images (image generation / editing), and a pair without a caption has nothing to show instead.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from deltarubric.rm.pairs import LabelledPair, read_pairs, write_pairs

CAPTION_LEAD = "Image description: "
SCENE_LEAD = "Scene: "
# The testbed's caption: "top left: red square. top right: empty. ..." (train/synthetic.py `caption`).
_CELL_RE = re.compile(r"(top|bottom) (left|right): (empty|\w+ \w+)\.")
_IMAGE_RE = re.compile(r"\b([Ii])mage(s?)\b")


def skip_reason(pair: LabelledPair) -> str | None:
    """Why `pair` has no caption or text view, or None."""
    r = pair.request
    if r.a.kind != "text":
        return "candidates are images or videos (one caption cannot describe both)"
    if r.videos:
        return "video input"
    if not r.images:
        return "no image (already text)"
    if not pair.caption:
        return "no caption"
    return None


def _bare(pair: LabelledPair, **request: object) -> LabelledPair:
    """The pair as a text request: no media, no caption, no DeltaRubric targets (checklists quote the image)."""
    return LabelledPair(
        request=pair.request.model_copy(update={"images": [], "task_type": "text", **request}),
        label=pair.label,
        rationale=pair.rationale,
    )


def caption_view(pair: LabelledPair) -> LabelledPair:
    """Stage 2a's pair: the caption where the image was (before the question), a `text` request, same id and label."""
    if reason := skip_reason(pair):
        raise ValueError(f"pair {pair.request.id!r} has no caption view: {reason}")
    return _bare(pair, question=f"{CAPTION_LEAD}{pair.caption}\n\n{pair.request.question}")


def describe(caption: str) -> str:
    """A caption told as prose. The testbed's cell-by-cell caption becomes sentences; any other caption is kept."""
    cells = _CELL_RE.findall(caption)
    if not cells or _CELL_RE.sub("", caption).strip():
        return caption
    return " ".join(f"The {v} {h} cell {'is empty' if what == 'empty' else f'has a {what}'}." for v, h, what in cells)


def _scene(text: str) -> str:
    return _IMAGE_RE.sub(lambda m: ("S" if m.group(1) == "I" else "s") + "cene" + m.group(2), text)


def text_view(pair: LabelledPair) -> LabelledPair:
    """Stage 1's pair: the scene described in prose and judged as text (task type `text`)."""
    if reason := skip_reason(pair):
        raise ValueError(f"pair {pair.request.id!r} has no text view: {reason}")
    r = pair.request
    viewed = _bare(
        pair,
        question=f"{SCENE_LEAD}{describe(pair.caption or '')}\n\n{_scene(r.question)}",
        a=r.a.model_copy(update={"text": _scene(r.a.text or "")}),
        b=r.b.model_copy(update={"text": _scene(r.b.text or "")}),
    )
    return viewed.model_copy(update={"rationale": _scene(pair.rationale) if pair.rationale else None})


def views(pairs: list[LabelledPair], kind: str) -> tuple[list[LabelledPair], Counter[str]]:
    """The `kind` ('caption' or 'text') view of every pair that has one, and why the others were skipped."""
    make = {"caption": caption_view, "text": text_view}[kind]
    out, skipped = [], Counter[str]()
    for p in pairs:
        if reason := skip_reason(p):
            skipped[reason] += 1
        else:
            out.append(make(p))
    return out, skipped


def write_views(src: Path, out: Path, kinds: tuple[str, ...] = ("caption", "text")) -> dict[str, dict[str, object]]:
    """OUT/<kind>.jsonl for each kind from the pair file SRC; returns per kind the path, pairs written and skips."""
    pairs = read_pairs(src)
    summary: dict[str, dict[str, object]] = {}
    for kind in kinds:
        viewed, skipped = views(pairs, kind)
        if not viewed:
            raise ValueError(f"{src}: no pair has a {kind} view ({dict(skipped)})")
        path = write_pairs(viewed, Path(out) / f"{kind}.jsonl")
        summary[kind] = {"path": str(path), "pairs": len(viewed), "skipped": dict(skipped)}
    return summary
