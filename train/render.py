"""Training examples rendered with the judge's own prompt renderer (`deltarubric.rm.prompting`), in TRL's
conversational shape.

TRL wants a prompt as message dicts with `{"type": "image"}` placeholders plus the images in order; we get those from
the same `Conversation` the judge sends, so a trained model sees at inference exactly what it saw in training.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from PIL import Image

from deltarubric.rm.aggregate import Order, flip_winner
from deltarubric.rm.backends.base import Conversation, ImagePart, TextPart, to_chat_dicts
from deltarubric.rm.media import DEFAULT_MAX_INPUT_PIXELS, load_image
from deltarubric.rm.pairs import LabelledPair
from deltarubric.rm.prompting import PreparedRequest, assistant_reply, prepare, system_messages, user_turn
from deltarubric.rubrics.prompts import Method


def order_for(seed: int, pair_id: str, step: int, chain: int) -> Order:
    """The A/B order shown in one rollout chain: a stable hash of (seed, pair, step, chain), so reruns agree."""
    return "BA" if hashlib.sha256(f"{seed}:{pair_id}:{step}:{chain}".encode()).digest()[0] & 1 else "AB"


def shown(label: str, order: Order) -> str:
    """The caller's label as the model sees it in `order`."""
    return label if order == "AB" else flip_winner(label)


def shown_text(text: str, order: Order) -> str:
    """Gold text written in the caller's labels, as the model sees it in `order`."""
    return swap_labels(text) if order == "BA" else text


def checklist_reply(method: Method, checklist: list[str]) -> str:
    """The first stage's reply as the conversation carries it: the cleaned checklist (DeltaRubric's planner)."""
    part = assistant_reply(method.stages[0], "", checklist).content[0]
    assert isinstance(part, TextPart)
    return part.text


def swap_labels(text: str) -> str:
    """'Response A' <-> 'Response B' (and 'Image', '[[A]]', 'Favors: A') in gold text written in the caller's labels."""
    return re.sub(
        r"(\b(?:Response|Image|Video|Candidate|Answer)\s+|\[\[|Favors:\s*)([AB])\b",
        lambda m: m.group(1) + flip_winner(m.group(2)),
        text,
    )


def prepare_pair(method: Method, pair: LabelledPair, max_pixels: int | None = None) -> PreparedRequest:
    if pair.request.videos or pair.request.a.kind == "video":
        raise ValueError(
            f"pair {pair.request.id!r}: video pairs cannot be trained (TRL's GRPO and SFT trainers take images only)"
        )
    return prepare(
        method,
        pair.request,
        lambda ref: ImagePart(load_image(ref, max_input_pixels=DEFAULT_MAX_INPUT_PIXELS, max_pixels=max_pixels)),
        no_video_backend="train",
    )


def to_trl(conversation: Conversation) -> tuple[list[dict[str, Any]], list[Image.Image]]:
    """A Conversation as TRL prompt messages (image placeholders) and its images in order."""
    images: list[Image.Image] = []

    def image(img: Image.Image) -> dict[str, Any]:
        images.append(img)
        return {"type": "image"}

    def video(_: str) -> dict[str, Any]:
        raise ValueError("video pairs cannot be trained here: TRL's GRPO and SFT trainers take images only")

    return to_chat_dicts(conversation, image, video), images


def first_turn(method: Method, prepared: PreparedRequest, order: Order) -> Conversation:
    """System prompt and the first stage's user turn (the planner's for DeltaRubric, the judge's otherwise)."""
    return system_messages(method) + [user_turn(method, method.stages[0], prepared, order, [])]


def next_turn(
    method: Method,
    prepared: PreparedRequest,
    order: Order,
    conversation: Conversation,
    reply: str,
    checklist: list[str],
) -> Conversation:
    """The conversation after the first stage's reply, ending with the second stage's user turn (the verifier's)."""
    first, second = method.stages[0], method.stages[1]
    return conversation + [
        assistant_reply(first, reply, checklist),
        user_turn(method, second, prepared, order, checklist),
    ]
