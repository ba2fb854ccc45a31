"""Load a Qwen3-VL processor on machines without torchvision.

transformers' `Qwen3VLProcessor` always carries a `Qwen3VLVideoProcessor`, and that class hard-requires torchvision:
`AutoProcessor.from_pretrained` raises `ImportError` without it, even when only text and images will be processed.
The CPU environment cannot have torchvision (the only release matching our torch is a CUDA build that breaks image
processing too), so here the processor is assembled by hand: tokenizer, PIL image processor and a video processor
that can be built and saved but not run. Text and image inputs then work; video inputs raise when processed.
Where torchvision is installed (GPU/serving environments) the plain `AutoProcessor` path is used.
docs/backends.md ("Without torchvision") says what works. The workaround leans on transformers internals, so
transformers is pinned.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from typing import TYPE_CHECKING

from transformers.utils import is_torchcodec_available, is_torchvision_available

if TYPE_CHECKING:
    import transformers

__all__ = ["expose_video_processor_base", "load_processor", "video_supported"]

logger = logging.getLogger(__name__)


def check_model_name(model: str) -> None:
    """A local checkpoint folder or a hub id `org/name`, else a ValueError at once: a mistyped folder name would
    otherwise be taken for a hub id and fail only after the hub client has retried for a minute."""
    path = pathlib.Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(f"{model}: not a checkpoint folder (it has no config.json)")
        return
    if model.count("/") != 1 or model.startswith((".", "/", "~")):
        raise ValueError(f"{model}: no such folder, and not a hub model id of the form org/name")


def video_supported() -> bool:
    """Whether video inputs can be processed: frames are resized with torchvision and decoded with torchcodec."""
    return is_torchvision_available() and is_torchcodec_available()


def expose_video_processor_base() -> None:
    """Make `ProcessorMixin`'s sub-processor type check work without torchvision. Idempotent.

    The check looks up `VideoProcessorMixin` on the lazy `transformers` module object that
    `transformers.processing_utils` keeps for itself, and that object exports the class only when torchvision is
    installed. Setting it on the top-level `transformers` namespace is not enough.
    """
    if is_torchvision_available():
        return
    from transformers import processing_utils
    from transformers.video_processing_utils import VideoProcessorMixin

    processing_utils.transformers_module.VideoProcessorMixin = VideoProcessorMixin


def load_processor(path: str | os.PathLike) -> transformers.ProcessorMixin:
    """Load the Qwen3-VL processor saved at `path`, with or without torchvision.

    Works for our tiny checkpoints (`deltarubric.rm.tiny`) and for real `Qwen/Qwen3-VL-*-Instruct` directories.
    Without torchvision the returned processor handles text and images; video inputs raise.
    """
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    if is_torchvision_available():
        return AutoProcessor.from_pretrained(path)

    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    expose_video_processor_base()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return Qwen3VLProcessor(
        # Resolves to the PIL backend (Qwen2VLImageProcessorPil) when torchvision is absent.
        image_processor=AutoImageProcessor.from_pretrained(path),
        tokenizer=tokenizer,
        video_processor=_load_video_processor(path),
        chat_template=_read_chat_template(path) or tokenizer.chat_template,
    )


def _load_video_processor(path: str | os.PathLike):
    # Import from the module: the top-level `transformers.Qwen3VLVideoProcessor` is a dummy that raises without
    # torchvision, while the real class can be built and saved (only processing a video needs torchvision).
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    try:
        return Qwen3VLVideoProcessor.from_pretrained(path)
    except OSError as e:
        # Image-only checkpoints may ship no video config; the processor still needs some video processor.
        logger.info("No video processor config at %s (%s); using Qwen3VLVideoProcessor defaults.", path, e)
        return Qwen3VLVideoProcessor()


def _read_chat_template(path: str | os.PathLike) -> str | None:
    # transformers >= 4.5x saves chat_template.jinja; older Qwen releases ship chat_template.json. Anything else
    # (or a hub id instead of a directory) falls back to the template stored in the tokenizer config.
    directory = pathlib.Path(path)
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    legacy = directory / "chat_template.json"
    if legacy.is_file():
        return json.loads(legacy.read_text(encoding="utf-8")).get("chat_template")
    return None
