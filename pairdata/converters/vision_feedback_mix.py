"""NiuTrans/vision-feedback-mix-binarized (also published as wangclnlp/...): image question pairs mixed from
LLaVA-Human-Preference-10K, VLFeedback, POVID, RLHF-V and RLAIF-V (MSRL stages 2-3, image understanding).

Fields (dataset card, "Format Description of Mixed Feedback Data"): id, origin_pre_dataset, image (the `datasets`
Image feature: {bytes, path}), image_path, and conversations: `[{"from": "human", "value": prompt}, {"from": "gpt",
"preference_values": [preferred, dispreferred]}]`, typed as a string on the card (a JSON string) and accepted as a
list too. `<image>` placeholders in the prompt are removed: the image goes in `images`.

Note: VL-RewardBench draws its items from the same sources (VLFeedback, POVID, RLHF-V, RLAIF-V); run
`deltarubric data dedup ... --against vl-rewardbench` on the output.
"""

from __future__ import annotations

import json
import re
from typing import Any

from deltarubric.pairdata.converters.base import Context, Converter, Draft, Skip, register, text
from deltarubric.pairdata.sources import Row, SchemaError

_IMAGE_TOKEN = re.compile(r"\s*<image>\s*")


def _turns(value: Any, row: Row) -> list[dict[str, Any]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise SchemaError(
                f"vision_feedback_mix: {row.path}:{row.number}: 'conversations' is a string but not JSON"
            ) from None
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise SchemaError(
            f"vision_feedback_mix: {row.path}:{row.number}: 'conversations' must be a list of turns "
            '({"from": "human", "value": ...}, {"from": "gpt", "preference_values": [...]})'
        )
    return value


def build(row: Row, ctx: Context) -> Draft:
    turns = _turns(row.data["conversations"], row)
    human = next((t for t in turns if t.get("from") == "human"), None)
    gpt = next((t for t in turns if "preference_values" in t), None)
    if human is None or gpt is None:
        raise Skip("conversations lack a human turn or a turn with preference_values")
    prefs = gpt["preference_values"]
    if not isinstance(prefs, list) or len(prefs) != 2:
        raise Skip("preference_values is not [preferred, dispreferred]")
    question = _IMAGE_TOKEN.sub("\n", text(human.get("value"), "human prompt")).strip()
    image = ctx.image(row.data.get("image") or row.data.get("image_path"), row)
    preferred, dispreferred = text(prefs[0], "preferred output"), text(prefs[1], "dispreferred output")
    return Draft(
        question=question,
        first=preferred,
        second=dispreferred,
        better=0,
        task_type="image_understanding",
        images=[image],
    )


CONVERTER = register(
    Converter(
        name="vision_feedback_mix",
        dataset="NiuTrans/vision-feedback-mix-binarized",
        description="Image question pairs (VLFeedback, POVID, RLHF-V, RLAIF-V, LLaVA-RLHF mix); images embedded.",
        fields=("image", "conversations"),
        schema="confirmed: the dataset card's format description "
        "(id, origin_pre_dataset, image, image_path, conversations)",
        build=build,
    )
)
