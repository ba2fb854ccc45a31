"""MM-RLHF-style image/video understanding pairs (yifanzhang114/MM-RLHF and files in its layout).

Fields: the layout of MM-RLHF-RewardBench's `mm_reward_bench.jsonl`, which this project reads as a benchmark
(`eval/benchmarks/mm_rlhf_rewardbench.py`): `prompt` (or `question`), `image` (a path relative to the file, or an
embedded Image feature) or `video` (a path), `chosen`, `rejected`. The training release's own schema could not be
confirmed here: files in another layout fail with the fields expected and found. Videos are kept as video
references (task video_understanding); a folder of frames is not expanded here.
"""

from __future__ import annotations

from deltarubric.pairdata.converters.base import Context, Converter, Draft, register, text
from deltarubric.pairdata.sources import Row, SchemaError, schema_message

EXPECTED = "prompt (or question), image (or video), chosen, rejected"
_ALTERNATIVES = (("prompt", "question"), ("image", "video"))


def build(row: Row, ctx: Context) -> Draft:
    d = row.data
    if missing := [" or ".join(alt) for alt in _ALTERNATIVES if not any(k in d for k in alt)]:
        raise SchemaError(schema_message(row, "mm_rlhf", missing, EXPECTED))
    question = d.get("prompt", d.get("question"))
    chosen, rejected = text(d["chosen"], "chosen"), text(d["rejected"], "rejected")
    if d.get("image"):
        return Draft(
            question=text(question, "prompt"),
            first=chosen,
            second=rejected,
            better=0,
            task_type="image_understanding",
            images=[ctx.image(d["image"], row)],
        )
    video = ctx.video(d.get("video"), row)
    return Draft(
        question=text(question, "prompt"),
        first=chosen,
        second=rejected,
        better=0,
        task_type="video_understanding",
        videos=[video],
    )


CONVERTER = register(
    Converter(
        name="mm_rlhf",
        dataset="yifanzhang114/MM-RLHF (and files in MM-RLHF-RewardBench's layout)",
        description="Image/video understanding pairs: prompt, image or video, chosen, rejected.",
        fields=("chosen", "rejected"),
        expected=EXPECTED,
        schema="assumed: MM-RLHF-RewardBench's jsonl layout (prompt, image|video, chosen, rejected)",
        build=build,
    )
)
