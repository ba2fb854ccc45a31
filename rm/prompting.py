"""The one prompt renderer: a request, shown in one order, becomes the exact chat turns a method's stages send.

The judge renders its conversations here, and so does the trainer's rollout: training and inference prompts cannot
drift apart. Media are loaded once per request (`prepare`) and placed where the method's template prints them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deltarubric.rm.aggregate import Order
from deltarubric.rm.backends.base import ImagePart, Message, Part, TextPart, VideoPart
from deltarubric.rm.media import MediaError, describe, local_file
from deltarubric.rm.types import Candidate, JudgeRequest
from deltarubric.rubrics.prompts import Method, Stage, media_marker, render, split_media


@dataclass(frozen=True)
class PreparedRequest:
    """A request with its media loaded once, shared by both orders and all stages."""

    request: JudgeRequest
    context: list[Part]
    candidates: dict[str, Part | str]  # "a"/"b" -> text or media part


def prepare(
    method: Method,
    request: JudgeRequest,
    load_image: Callable[[Any], ImagePart],
    *,
    no_video_backend: str | None = None,
) -> PreparedRequest:
    """Load a request's media for `method`. Raises ValueError (MediaError for media) naming what is wrong.

    `no_video_backend`: the name of a backend that cannot decode video here, so video requests are refused early.
    """
    if request.task_type not in method.task_types:
        raise ValueError(
            f"judge {method.name!r} is written for {', '.join(method.task_types)}, not {request.task_type}"
        )
    if request.videos or request.a.kind == "video":
        if no_video_backend:
            raise MediaError(
                f"video input is not supported by the {no_video_backend!r} backend here: it needs torchvision for "
                "decoding (install it on a GPU machine), or use --backend openai/vllm"
            )
        for v in list(request.videos) + [c.video for c in (request.a, request.b) if c.video]:
            if not v.startswith(("http://", "https://", "data:")) and not local_file(v).is_file():
                raise MediaError(f"{describe(v)}: file not found")

    def part(c: Candidate) -> Part | str:
        if c.text is not None:
            return c.text
        return load_image(c.image) if c.image is not None else VideoPart(c.video)  # type: ignore[arg-type]

    context: list[Part] = [load_image(img) for img in request.images] + [VideoPart(v) for v in request.videos]
    return PreparedRequest(request, context, {"a": part(request.a), "b": part(request.b)})


def system_messages(method: Method) -> list[Message]:
    return [Message.text("system", method.system)] if method.system else []


def user_turn(method: Method, stage: Stage, prepared: PreparedRequest, order: Order, checklist: list[str]) -> Message:
    """The user turn of `stage` for this request shown in `order` ("BA": the caller's B is shown as A)."""
    media: list[Part] = []

    def show(x: Part | str) -> str:
        if isinstance(x, str):
            return x
        media.append(x)
        return media_marker(len(media) - 1)

    req = prepared.request
    first, second = ("a", "b") if order == "AB" else ("b", "a")
    variables = {
        "task_type": req.task_type,
        "question": req.question,
        "reference": req.reference,
        "noun": method.words["noun"][req.a.kind],
        "media_word": method.words["media_word"][req.task_type],
        "context": [show(p) for p in prepared.context],
        "a": show(prepared.candidates[first]),
        "b": show(prepared.candidates[second]),
        "checklist": checklist,
    }
    text = render(stage.user, variables)
    return Message("user", tuple(media[x] if isinstance(x, int) else TextPart(x) for x in split_media(text)))


def assistant_reply(stage: Stage, text: str, checklist: list[str]) -> Message:
    """How the model's reply to `stage` is written back into the conversation (DeltaRubric: the cleaned checklist)."""
    return Message.text("assistant", render(stage.reply, {"checklist": checklist}) if stage.reply else text)
