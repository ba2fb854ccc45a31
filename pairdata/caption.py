"""Add `caption` targets to a pair file with any judge backend (`deltarubric data caption`).

MSRL's stage 2a replaces each image by its caption and stage 2b distils from caption-conditioned chains, so every
multimodal pair needs a description of its visual input. The request sent is the captions-stage turn of
`train sft --targets captions` exactly (the pair's context images, then "Describe the image in detail."), so the
model is asked for captions the way it will be trained to write them. One caption per distinct set of context media:
sources such as RLAIF-V reuse an image for many pairs. Pairs without context media (text pairs, generation pairs
whose images are the candidates) are left as they are and counted; the pair format has one `caption` per pair, not one
per candidate. Lines are copied unchanged except for the added caption; a failed generation leaves its line without a
caption and is counted, never fatal, so a rerun (without --overwrite) fills only the gaps.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deltarubric.pairdata.pairfile import atomic_lines, read_lines, relocate, write_row
from deltarubric.rm.backends import Backend, Conversation, ImagePart, Message, TextPart, VideoPart
from deltarubric.rm.config import SamplingConfig
from deltarubric.rm.media import DEFAULT_MAX_INPUT_PIXELS, MediaError, load_image
from deltarubric.rm.pairs import LabelledPair
from deltarubric.rubrics.prompts import load_method
from deltarubric.rubrics.targets import render_target


@dataclass
class CaptionSummary:
    out: Path
    pairs: int = 0
    captioned: int = 0  # pairs given a new caption
    kept: int = 0  # pairs that already had one (without --overwrite)
    no_context_media: int = 0
    generated: int = 0  # model calls: distinct context media captioned
    failed: Counter = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "pairs": self.pairs,
            "captioned": self.captioned,
            "kept_existing": self.kept,
            "no_context_media": self.no_context_media,
            "captions_generated": self.generated,
            "failed": dict(self.failed.most_common()),
        }


@dataclass
class _Pending:
    rows: list[tuple[dict[str, Any], str | None]] = field(default_factory=list)  # (row, media key or None)
    requests: dict[str, Conversation] = field(default_factory=dict)  # media key -> captioning conversation


class Captioner:
    """Builds the captioning turn for a pair and remembers captions per context media."""

    def __init__(self, media_words: dict[str, str], max_input_pixels: int, max_pixels: int | None) -> None:
        self.media_words, self.max_input_pixels, self.max_pixels = media_words, max_input_pixels, max_pixels
        self.captions: dict[str, str] = {}

    @staticmethod
    def key(pair: LabelledPair) -> str | None:
        media = [*map(str, pair.request.images), *pair.request.videos]
        return "\x00".join(media) if media else None

    def conversation(self, pair: LabelledPair) -> Conversation:
        """The captions-stage user turn of train/sft.py: the context media, then the caption question."""
        r = pair.request
        parts = [
            ImagePart(load_image(i, max_input_pixels=self.max_input_pixels, max_pixels=self.max_pixels))
            for i in r.images
        ] + [VideoPart(v) for v in r.videos]
        question = render_target("caption_question", media_word=self.media_words[r.task_type])
        return [Message("user", (*parts, TextPart(question)))]


def caption_file(
    path: Path,
    out: Path,
    backend: Backend,
    sampling: SamplingConfig,
    *,
    judge: str = "direct",
    max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS,
    max_pixels: int | None = None,
    overwrite: bool = False,
    chunk_size: int = 16,
) -> CaptionSummary:
    """Write `path` to `out` (which may be `path` itself) with a `caption` on every pair that has context media."""
    captioner = Captioner(load_method(judge).words["media_word"], max_input_pixels, max_pixels)
    summary = CaptionSummary(out=out)
    pending = _Pending()
    with atomic_lines(out) as w:
        for _, row, pair in read_lines(path):
            summary.pairs += 1
            row = relocate(row, path.parent, out.parent)
            key = captioner.key(pair)
            if key is None:
                summary.no_context_media += 1
            elif row.get("caption") and not overwrite:
                summary.kept += 1
                key = None
            elif key not in captioner.captions and key not in pending.requests:
                try:
                    pending.requests[key] = captioner.conversation(pair)
                except (MediaError, OSError, ValueError):  # one reason, not one per file: the counter stays short
                    summary.failed["context media could not be loaded"] += 1
                    key = None
            pending.rows.append((row, key))
            if len(pending.requests) >= chunk_size:
                _flush(pending, captioner, backend, sampling, summary, w)
        _flush(pending, captioner, backend, sampling, summary, w)
    return summary


def _flush(
    pending: _Pending, captioner: Captioner, backend: Backend, sampling: SamplingConfig, summary: CaptionSummary, w: Any
) -> None:
    """Caption the pending media in one backend call, then write the buffered rows in file order."""
    keys = list(pending.requests)
    if keys:
        for key, gen in zip(keys, backend.generate([pending.requests[k] for k in keys], sampling), strict=True):
            text = (gen.text or "").strip()
            if gen.error or not text:
                summary.failed[f"backend: {gen.error[:120]}" if gen.error else "empty caption"] += 1
                continue
            captioner.captions[key] = text
            summary.generated += 1
    for row, key in pending.rows:
        if key is not None and key in captioner.captions:
            row = {**row, "caption": captioner.captions[key]}
            summary.captioned += 1
        write_row(w, row)
    pending.rows.clear()
    pending.requests.clear()
