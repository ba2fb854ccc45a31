"""data-is-better-together/open-image-preferences-v1-binarized: text-to-image pairs (MSRL stages 2-3, image
generation). Fields: `prompt`, `chosen` and `rejected` (both the `datasets` Image feature, bytes embedded in the
parquet); other columns (model names, category) are ignored. The three fields are as the issue and the dataset's
name state them; the card's full feature list could not be read here, so other layouts fail with the fields found.
"""

from __future__ import annotations

from deltarubric.pairdata.converters.base import Context, Converter, Draft, register, text
from deltarubric.pairdata.sources import Row


def build(row: Row, ctx: Context) -> Draft:
    d = row.data
    prompt = text(d["prompt"], "prompt")
    chosen, rejected = ctx.image(d["chosen"], row), ctx.image(d["rejected"], row)
    return Draft(
        question=prompt, first={"image": chosen}, second={"image": rejected}, better=0, task_type="image_generation"
    )


CONVERTER = register(
    Converter(
        name="open_image_preferences",
        dataset="data-is-better-together/open-image-preferences-v1-binarized",
        description="Text-to-image pairs: prompt, chosen image, rejected image (embedded).",
        fields=("prompt", "chosen", "rejected"),
        schema="assumed: prompt/chosen/rejected as the issue names them (the card's feature list was not readable)",
        build=build,
    )
)
