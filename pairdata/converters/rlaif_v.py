"""openbmb/RLAIF-V-Dataset: image question pairs with AI feedback (image understanding).

Fields (dataset card, "Data fields"): ds_name, image (dict with path and bytes), question, chosen, rejected,
origin_dataset, origin_split, idx, image_path. VL-RewardBench's hallucination group draws on RLAIF-V: dedup the output.
"""

from __future__ import annotations

from deltarubric.pairdata.converters.base import Context, Converter, Draft, register, text
from deltarubric.pairdata.sources import Row


def build(row: Row, ctx: Context) -> Draft:
    d = row.data
    image = ctx.image(d["image"] or d.get("image_path"), row)
    return Draft(
        question=text(d["question"], "question"),
        first=text(d["chosen"], "chosen"),
        second=text(d["rejected"], "rejected"),
        better=0,
        task_type="image_understanding",
        images=[image],
    )


CONVERTER = register(
    Converter(
        name="rlaif_v",
        dataset="openbmb/RLAIF-V-Dataset",
        description="Image question pairs (chosen/rejected), images embedded.",
        fields=("image", "question", "chosen", "rejected"),
        schema="confirmed: dataset card's data fields table",
        build=build,
    )
)
