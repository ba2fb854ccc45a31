"""Rapidata's text-to-image human preference sets (e.g. Rapidata/OpenAI-4o_t2i_human_preference, MSRL stages 2-3,
image generation): two generated images per prompt with crowd votes weighted by annotator reliability.

Fields (the family's dataset cards, e.g. HunyuanImage-2.1_t2i_human_preference's dataset_info): prompt, image1,
image2 (Image feature, embedded), model1, model2, and per criterion `weighted_results_image{1,2}_{preference,
coherence,alignment}` with `detailed_results_*`. The criterion is Preference (overall preference), found
case-insensitively (older sets capitalise it); sets with only `votes_image1/2` (the 700k FLUX/SD3/MJ/DALLE3 set) use
those, as do rows whose weighted scores are null. The image with the higher score is better; equal scores are ties
and dropped. The OpenAI-4o set's own card was not readable here: its schema is assumed to be the family's.
"""

from __future__ import annotations

import math
from typing import Any

from deltarubric.pairdata.converters.base import Context, Converter, Draft, Skip, register, text
from deltarubric.pairdata.sources import Row, SchemaError

CRITERION = "preference"


def _scores(d: dict[str, Any], row: Row) -> tuple[float, float]:
    """The weighted scores, else the votes: a set can have the weighted columns but null in some rows."""
    lower = {k.lower(): k for k in d}
    found = False
    for pattern in (f"weighted_results_image{{}}_{CRITERION}", "votes_image{}"):
        keys = [lower.get(pattern.format(i)) for i in (1, 2)]
        if all(keys):
            found = True
            values = [d[k] for k in keys]
            if all(_number(v) for v in values):
                return float(values[0]), float(values[1])
    if found:
        raise Skip("preference scores missing")
    raise SchemaError(
        f"rapidata: {row.path}:{row.number} has no preference scores: expected weighted_results_image1_{CRITERION} and "
        f"weighted_results_image2_{CRITERION} (or votes_image1/votes_image2); the row has {', '.join(sorted(d))}"
    )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)  # NaN: pandas' null


def build(row: Row, ctx: Context) -> Draft:
    d = row.data
    s1, s2 = _scores(d, row)
    if s1 == s2:
        raise Skip("tie (equal preference scores)")
    prompt = text(d["prompt"], "prompt")
    return Draft(
        question=prompt,
        first={"image": ctx.image(d["image1"], row)},
        second={"image": ctx.image(d["image2"], row)},
        better=0 if s1 > s2 else 1,
        task_type="image_generation",
    )


CONVERTER = register(
    Converter(
        name="rapidata",
        dataset="Rapidata/*_t2i_human_preference (e.g. OpenAI-4o_t2i_human_preference)",
        description="Text-to-image pairs with weighted human preference scores; ties dropped.",
        fields=("prompt", "image1", "image2"),
        schema="confirmed: the family's card (HunyuanImage-2.1 set); assumed: the OpenAI-4o set follows it",
        build=build,
    )
)
