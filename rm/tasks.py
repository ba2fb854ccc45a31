"""The task type of a pair whose caller did not name one, inferred from what it holds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from deltarubric.rm.types import TaskType

CandidateKind = Literal["text", "image", "video"]


def infer_task_type(
    candidate: CandidateKind = "text",
    images: Sequence[object] = (),
    videos: Sequence[object] = (),
    *,
    require_media: bool = False,
) -> TaskType:
    """The task type for candidates of kind `candidate` with these context `images` and `videos`.

    Text candidates are understanding (of the video, else of the images), or `text` without context media; with
    `require_media` they are image understanding even then, so that a forgotten image fails the request's validation
    ("image_understanding needs at least one image") instead of quietly becoming a text judgment. Image candidates
    are editing with a source image, else generation; video candidates are generation.
    """
    if candidate == "video":
        return "video_generation"
    if candidate == "image":
        return "image_editing" if images else "image_generation"
    if videos:
        return "video_understanding"
    if images or require_media:
        return "image_understanding"
    return "text"
