"""VL-RewardBench (Li et al., CVPR 2025): 1,250 image-question pairs; groups general 183 / hallucination 749 /
reasoning 318 by the corrected official mapping.

Strict metrics (the headline): correct / all items, an unparsable or split verdict counts wrong.
Official metrics (`cal.py`): per item a majority over its samples (here: the judged orders) of agree / reject /
doesn't-match; items without an agree or reject majority are dropped from numerator and denominator. Overall is
micro over the kept items, macro the mean of the three group accuracies.
The released order puts the preferred response first in 1,245 of 1,250 rows, so runs show a seeded random order
(or both orders) instead.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from PIL import Image

from eval.core import EvalItem, Prediction, decided, judge_stats, pct, short_hash
from eval.io import find_file, media_path, read_records
from eval.registry import Benchmark, HubSource, Scores, register
from rm.types import JudgeRequest

GROUPS = ("general", "hallucination", "reasoning")
_SUBSET_GROUP = {
    "povid": "hallucination",
    "rlaif-v": "hallucination",
    "rlhf-v": "hallucination",
    "wildvision-battle": "general",
    "vlfeedback": "general",
    "reasoning": "reasoning",
}


def subset_of(item_id: str) -> str:
    """The official id rule (`cal.py:get_dataset_from_id`), with the 2025-05 fix that sends POVID to hallucination."""
    prefix = re.split(r"[_-]", item_id, maxsplit=1)[0]
    rules = {"RLAIF": "rlaif-v", "RLHF": "rlhf-v", "mathverse": "reasoning", "mmmu": "reasoning",
             "wildvision": "wildvision-battle", "hallucination": "povid"}  # fmt: skip
    return rules.get(prefix, "vlfeedback")


def group_of(item_id: str) -> str:
    return _SUBSET_GROUP[subset_of(item_id)]


def _official_class(p: Prediction) -> str:
    votes = [w for _, w in p.samples] or [p.winner]
    agree = sum(v == p.gold for v in votes)
    reject = sum(v in ("A", "B") and v != p.gold for v in votes)
    if agree > len(votes) / 2:
        return "agree"
    return "reject" if reject > len(votes) / 2 else "dropped"


def score(preds: list[Prediction], task: str = "default") -> Scores:
    out: Scores = {}
    for name, correct, counted in (
        ("strict", lambda p: decided(p) == p.gold, lambda p: True),
        ("official", lambda p: _official_class(p) == "agree", lambda p: _official_class(p) != "dropped"),
    ):
        per_group = {g: [p for p in preds if p.group == g and counted(p)] for g in GROUPS}
        accs = {g: pct(sum(map(correct, ps)), len(ps)) for g, ps in per_group.items()}
        kept = [p for ps in per_group.values() for p in ps]
        out[f"{name}_overall"] = pct(sum(map(correct, kept)), len(kept))
        out[f"{name}_macro"] = sum(accs.values()) / len(accs)
        out |= {f"{name}_{g}": a for g, a in accs.items()}
    return out | judge_stats(preds)


def item_key(row: dict) -> str:
    """The official item key is id + query + sorted responses (ids repeat); hashed here to a short stable key."""
    return f"{row['id']}#{short_hash(row['query'], *sorted(row['response']))}"


def load(data_dir: Path, task: str = "default") -> list[EvalItem]:
    """The hub's parquet (images embedded) if data_dir holds `data/test-*.parquet`; otherwise `data.jsonl` (from
    data_dir, else the shipped copy) with images at `<data_dir>/<image_path>`. Item keys are the same either way."""
    parquet = sorted(data_dir.glob("data/test-*.parquet"))
    rows = [r for p in parquet for r in read_records(p)] or read_records(
        find_file(data_dir, "data.jsonl", shipped="vl-rewardbench/data.jsonl")
    )
    items = []
    for row in rows:
        key = item_key(row)
        embedded = row.get("image")
        image = Image.open(io.BytesIO(embedded["bytes"])) if embedded else media_path(data_dir, row["image_path"])
        request = JudgeRequest(
            id=key,
            question=row["query"].replace("<image>\n", ""),
            images=[image],
            a=row["response"][0],
            b=row["response"][1],
        )
        gold = "A" if row["human_ranking"][0] < row["human_ranking"][1] else "B"
        items.append(EvalItem(key=key, request=request, gold=gold, group=group_of(row["id"]), meta={"id": row["id"]}))
    return items


BENCHMARK = register(
    Benchmark(
        name="vl-rewardbench",
        description="VL-RewardBench: image QA pairs, general / hallucination / reasoning.",
        tasks=("default",),
        load=load,
        score=score,
        official_judge="vlrb_official",
        official_order="random",
        headline=("strict_overall", "strict_macro", "official_overall", "official_macro"),
        data_revision="original 1,250-row release (VL_RewardBench @ e492d65 data/data.jsonl, pre-2025-05 label fix)",
        # The hub parquet of the same 1,250-row release ("Cleanup parquet data (#3)", before the 2025-05 fixes).
        hub=HubSource("MMInstruction/VL-RewardBench", "49b8e26430f73b021bd0655fcd27ebf0f384fede", ("data/test-*.parquet",)),
    )
)
