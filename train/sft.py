"""Supervised warm starts on TRL's `SFTTrainer`: gold traces, verdict-only targets (a baseline), or captions.

Examples are rendered with the judge's own prompt renderer; targets come from `rubrics/targets.yaml`. A DeltaRubric
pair gives two examples, one per role: the planner turn (target: the gold checklist, written as the verifier is later
shown it) and the verifier turn after that checklist (target: analysis, justification, winner).
"""

from __future__ import annotations

import hashlib
from typing import Any

from datasets import Dataset
from trl import SFTTrainer

from deltarubric.rm.backends.base import Message, TextPart
from deltarubric.rm.pairs import LabelledPair
from deltarubric.rubrics.prompts import Method, load_method
from deltarubric.rubrics.targets import render_target
from deltarubric.train.config import JudgeSFTConfig
from deltarubric.train.render import (
    checklist_reply,
    first_turn,
    next_turn,
    order_for,
    prepare_pair,
    shown,
    shown_text,
    to_trl,
)
from deltarubric.train.views import skip_reason


def _example(conversation: list[Message], target: str) -> dict[str, Any]:
    prompt, images = to_trl(conversation)
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": target}], "images": images}


TARGETS = ("traces", "verdicts", "captions", "captions_in_context")


def _caption_question(method: Method, pair: LabelledPair) -> str:
    return render_target("caption_question", media_word=method.words["media_word"][pair.request.task_type])


def _caption_in_context(
    pair: LabelledPair, layouts: list[str], order_seed: int, max_pixels: int | None
) -> dict[str, Any]:
    """The pair as one of the `layouts` judges shows it (any of their turns, picked by a stable hash), with the caption
    question appended to that turn; target: the caption. A base trained only on "image, then 'describe it'" reads
    images in that one layout: with text before or after the image (as in every judge prompt) its captions fall to
    chance (docs/training.md, "The testbed"), so the judge has nothing to check claims against."""
    if reason := skip_reason(pair):
        raise ValueError(
            f"pair {pair.request.id!r}: captions_in_context needs an image, text answers and a 'caption' ({reason})"
        )
    turns = [(name, i) for name in layouts for i in range(len(load_method(name).stages))]
    digest = hashlib.sha256(f"{order_seed}:{pair.request.id}:layout".encode()).digest()
    name, stage = turns[int.from_bytes(digest[:4], "big") % len(turns)]
    method = load_method(name)
    prepared = prepare_pair(method, pair, max_pixels)
    order = order_for(order_seed, pair.request.id, 0, 0)
    conversation = first_turn(method, prepared, order)
    if stage == 1:
        checklist = [shown_text(c, order) for c in pair.checklist] or ["Which response describes the image correctly?"]
        conversation = next_turn(method, prepared, order, conversation, checklist_reply(method, checklist), checklist)
    question = _caption_question(method, pair)
    last = conversation[-1]
    conversation[-1] = Message("user", (*last.content, TextPart(f"\n\n{question}")))
    return _example(conversation, pair.caption)


def sft_examples(
    pairs: list[LabelledPair],
    judge: str,
    targets: str,
    *,
    order_seed: int = 0,
    max_pixels: int | None = None,
    layouts: list[str] | None = None,
    trace_caption: bool = False,
) -> list[dict[str, Any]]:
    """Prompt-completion examples (TRL's conversational format with an `images` column). `layouts`: the judges whose
    prompts frame 'captions_in_context' examples (default: `judge`). `trace_caption`: gold traces open their analysis
    with the pair's caption ("The image shows: ...", in the task's media word)."""
    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {', '.join(map(repr, TARGETS))}")
    if targets == "verdicts" and judge == "deltarubric":
        raise ValueError("verdict-only targets train a one-step judge: use --judge direct")
    method = load_method(judge)
    examples, seen_images = [], set()
    for pair in pairs:
        if targets == "captions_in_context":
            examples.append(_caption_in_context(pair, layouts or [judge], order_seed, max_pixels))
            continue
        prepared = prepare_pair(method, pair, max_pixels)
        if targets == "captions":
            if not pair.caption:
                raise ValueError(f"pair {pair.request.id!r} has no 'caption' for caption targets")
            key = str(pair.request.images)
            if key in seen_images:
                continue
            seen_images.add(key)
            turn = Message("user", (*prepared.context, TextPart(_caption_question(method, pair))))
            examples.append(_example([turn], pair.caption))
            continue
        order = order_for(order_seed, pair.request.id, 0, 0)
        winner = shown(pair.label, order)
        checklist = [shown_text(c, order) for c in pair.checklist]
        findings = [shown_text(f, order) for f in pair.findings]
        rationale = shown_text(pair.rationale, order) if pair.rationale else f"Response {winner} is better."
        scene = " ".join(pair.caption.split()) if trace_caption and pair.caption else ""  # one line: items follow
        trace = render_target(
            "verdict",
            checklist=checklist,
            findings=findings,
            winner=winner,
            rationale=rationale,
            scene=scene,
            media_word=method.words["media_word"][pair.request.task_type],
        )
        conversation = first_turn(method, prepared, order)
        if targets == "verdicts":
            examples.append(_example(conversation, render_target("verdict_only", winner=winner)))
        elif judge == "deltarubric":
            if not checklist:
                raise ValueError(f"pair {pair.request.id!r} has no gold 'checklist': DeltaRubric traces need one")
            reply = checklist_reply(method, checklist)
            examples.append(_example(conversation, reply))
            verifier = next_turn(method, prepared, order, conversation, reply, checklist)
            examples.append(_example(verifier, trace))
        elif method.stages[-1].parser == "msrl":
            target = render_target(
                "msrl", task_type=pair.request.task_type, caption=pair.caption, rationale=rationale, winner=winner
            )
            examples.append(_example(conversation, target))
        else:
            examples.append(_example(conversation, trace))
    return examples


def make_sft_trainer(
    model: Any, args: JudgeSFTConfig, examples: list[dict[str, Any]], *, processing_class: Any, **kwargs: Any
) -> SFTTrainer:
    """TRL's SFTTrainer on examples from `sft_examples` (loss on the completion only)."""
    rows = examples
    args.remove_unused_columns = False
    args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": False}
    return SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=processing_class, **kwargs
    )


__all__ = ["make_sft_trainer", "sft_examples"]
