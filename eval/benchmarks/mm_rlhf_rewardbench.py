"""MM-RLHF-RewardBench (Kwai): 170 chosen/rejected pairs over 46 ids, five categories.

Accuracy: a pair is correct only if the chosen response strictly wins (a tie or an unparsable verdict is wrong).
ACC+: an id counts only if all of its pairs are correct. Both overall and per category (the first of mcq / long /
short / safety / video found in the media path). The released file lists chosen first, so runs randomise the order.
"""

from __future__ import annotations

from pathlib import Path

from eval.core import EvalItem, Prediction, decided, judge_stats, pct
from eval.io import find_file, media_path, read_records
from eval.registry import Benchmark, HubSource, Scores, register
from rm.types import JudgeRequest

CATEGORIES = ("mcq", "long", "short", "safety", "video")


def category_of(media: str) -> str:
    return next((c for c in CATEGORIES if c in media), "other")


def score(preds: list[Prediction], task: str = "default") -> Scores:
    out: Scores = {}
    for name, subset in [("", preds)] + [(f"_{c}", [p for p in preds if p.group == c]) for c in CATEGORIES]:
        by_id: dict[str, list[bool]] = {}
        for p in subset:
            by_id.setdefault(p.meta["id"], []).append(decided(p) == p.gold)
        out[f"accuracy{name}"] = pct(sum(decided(p) == p.gold for p in subset), len(subset))
        out[f"acc_plus{name}"] = pct(sum(all(v) for v in by_id.values()), len(by_id))
    return out | judge_stats(preds)


def load(data_dir: Path, task: str = "default") -> list[EvalItem]:
    """`mm_reward_bench.jsonl` (from data_dir, else the shipped copy); media at `<data_dir>/<image or video>`."""
    items = []
    rows = read_records(find_file(data_dir, "mm_reward_bench.jsonl", shipped="mm-rlhf-rewardbench/mm_reward_bench.jsonl"))
    for n, row in enumerate(rows):
        media = row.get("image") or row["video"]
        key = f"{row['id']}/{n}"  # ids repeat (2-6 pairs each); the row number makes the key unique and stable
        video = "video" in row
        request = JudgeRequest(
            id=key,
            task_type="video_understanding" if video else "image_understanding",
            question=row["prompt"],
            images=[] if video else [media_path(data_dir, media)],
            videos=[media_path(data_dir, media)] if video else [],
            a=row["chosen"],
            b=row["rejected"],
        )
        items.append(EvalItem(key=key, request=request, gold="A", group=category_of(media), meta={"id": row["id"]}))
    return items


BENCHMARK = register(
    Benchmark(
        name="mm-rlhf-rewardbench",
        description="MM-RLHF-RewardBench (Kwai): 170 chosen/rejected pairs, accuracy and ACC+.",
        tasks=("default",),
        load=load,
        score=score,
        official_judge="direct",  # there is no official pairwise prompt; the metric is the official part
        official_order="random",
        headline=("accuracy", "acc_plus"),
        data_revision="r1_reward @ 3693413 inference/MM-RLHF-Reward/mm_reward_bench.jsonl",
        # The dataset repo ships the same jsonl with its images/ folder, which is the local layout.
        hub=HubSource("yifanzhang114/MM-RLHF-RewardBench", "3cf983d3acc020ff590e8beb10b3bae0473908e1",
                      ("mm_reward_bench.jsonl", "images/**")),  # fmt: skip
    )
)
