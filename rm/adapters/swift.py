"""ms-swift ORM plugin that scores GRPO completions against a reference with the reward server.

Register it in a plugin file and point ms-swift at it (ms-swift 4.x; in 3.x import `orms` from `swift.plugin`):

    # deltarubric_plugin.py
    from swift.rewards import orms
    from deltarubric.rm.adapters.swift import JudgeORM

    orms["deltarubric"] = JudgeORM

    DELTARUBRIC_REWARD_URL=http://judge-host:8000 swift rlhf --rlhf_type grpo \\
        --external_plugins deltarubric_plugin.py --reward_funcs deltarubric ...

ms-swift calls `orm(completions, **columns)` with `messages` (the conversation, question in the last user message),
`images` and every other dataset column; the reference comes from a `reference` column, else `solution`. ms-swift is
not imported: the class has the duck type of its `ORM` (`__init__(args=None, **kwargs)`, `__call__`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from deltarubric.rm.adapters.client import RewardClient, image_ref, last_user_text
from deltarubric.rm.reward_protocol import RewardItem

__all__ = ["JudgeORM"]


class JudgeORM:
    """One reward per completion: P(completion beats the reference), or None (NaN in ms-swift: the sample is left
    out) where the judge gave no valid verdict. Server root from env `DELTARUBRIC_REWARD_URL`, optional key from
    `DELTARUBRIC_API_KEY`."""

    def __init__(self, args: Any = None, **kwargs: Any) -> None:
        url = os.environ.get("DELTARUBRIC_REWARD_URL")
        if not url:
            raise ValueError("set DELTARUBRIC_REWARD_URL to the reward server's root, e.g. http://127.0.0.1:8000")
        self.client = RewardClient(url, api_key=os.environ.get("DELTARUBRIC_API_KEY"))

    def __call__(self, completions: Sequence[str], **kwargs: Any) -> list[float | None]:
        references = kwargs.get("reference") or kwargs.get("solution")
        if references is None:
            raise KeyError(f"JudgeORM needs a 'reference' or 'solution' column; got {sorted(kwargs)}")
        images = kwargs.get("images") or [None] * len(completions)
        items = [
            RewardItem(
                question=_strip_image_tags(last_user_text(messages)),
                images=[image_ref(image) for image in sample_images or []],
                response=completion,
                reference=str(reference),
            )
            for completion, messages, sample_images, reference in zip(
                completions, kwargs["messages"], images, references, strict=True
            )
        ]
        return self.client.rewards(items)


def _strip_image_tags(text: str) -> str:
    # ms-swift datasets mark image positions with literal <image> tags; the images travel separately.
    return text.replace("<image>", "").strip()
