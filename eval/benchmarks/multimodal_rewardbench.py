"""Multimodal RewardBench (Meta FAIR): ~5k (prompt, image, two responses) triplets in six areas.

Official metric (`scripts/2_get_accuracy.py` @ b4b92cd, exactly): "[[A]]" in the output -> A, else "[[B]]" -> B
(both present -> A), else a random guess `'A' if random() < 0.5 else 'B'` drawn from one stream seeded 123 before
the loop, in file order. Overall = micro accuracy; per category, where a Category equal to 'safety' is split by the
lower-cased ID (starts with 'pairs': safety/bias, else safety/toxicity) and one equal to 'reasoning' likewise
('math': reasoning/math, else reasoning/coding); any other Category is its own group.
Our runs have one verdict per item for that rule: the raw text with the official preset run as the protocol runs it,
otherwise the winner every judged order gave (`decided`); an item whose orders split, or with no verdict, is
undecided and gets the official guess. `write_official` writes exactly that verdict ('[[A]]', '[[B]]', or a line
with neither tag), so the official script on the export gives the same numbers as `official_*` here.
"strict" (ours) counts an undecided item wrong instead of guessing.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from deltarubric.eval.core import EvalItem, Prediction, decided, judge_stats, pct
from deltarubric.eval.io import find_file, media_path, read_records
from deltarubric.eval.spec import Benchmark, Scores, register
from deltarubric.rm.types import JudgeRequest
from deltarubric.rubrics.parsing import parse_mmrb

UNDECIDED = "No verdict: the judged orders disagreed or none could be read."  # carries neither tag


def category(item_id: str, raw_category: str) -> str:
    """The official split: Category compared for equality, the ID's prefix checked lower-cased."""
    if raw_category == "safety":
        return "safety/bias" if item_id.lower().startswith("pairs") else "safety/toxicity"
    if raw_category == "reasoning":
        return "reasoning/math" if item_id.lower().startswith("math") else "reasoning/coding"
    return raw_category


_TAG_SIDE = {"[[A]]": "A", "[[B]]": "B"}


def verdict(p: Prediction) -> str | None:
    """The one verdict the official rule sees: the tag the official parser read ('[[A]]' first) when the item was
    judged once in the official format, else the winner all judged orders gave; None (undecided: a split, a tie,
    unparsable) gets the official random guess."""
    if p.official_format:
        return _TAG_SIDE.get(p.labels[0] or "") if len(p.labels) == 1 else None
    d = decided(p)
    return d if d in ("A", "B") else None


def score(preds: list[Prediction], task: str = "default") -> Scores:
    rng = random.Random(123)  # one stream in file order, as the official script draws its guesses
    official, strict = [], []
    for p in preds:
        choice = verdict(p)
        strict.append(choice == p.gold)
        official.append((choice or ("A" if rng.random() < 0.5 else "B")) == p.gold)
    out: Scores = {"official_overall": pct(sum(official), len(preds)), "strict_overall": pct(sum(strict), len(preds))}
    for group in sorted({p.group for p in preds}):
        idx = [i for i, p in enumerate(preds) if p.group == group]
        out[f"official_{group}"] = pct(sum(official[i] for i in idx), len(idx))
    out["both_tags_rate"] = pct(sum("[[A]]" in (p.raw or "") and "[[B]]" in (p.raw or "") for p in preds), len(preds))
    return out | judge_stats(preds)


def read_official(path: Path) -> list[Prediction]:
    """The official prediction schema: {ID, Image, Label: "A"|"B", output, Meta: {Category}}."""
    preds = []
    for row in read_records(path):
        parsed = parse_mmrb(row["output"])
        preds.append(
            Prediction(
                key=row["ID"],
                gold=row["Label"],
                group=category(row["ID"], row["Meta"]["Category"]),
                raw=row["output"],
                official_format=True,
                winner=parsed.winner,
                samples=[("AB", parsed.winner)],
                labels=[parsed.label],
                parse_ok=parsed.winner is not None,
                meta={"Image": row.get("Image", ""), "Category": row["Meta"]["Category"]},
            )
        )
    return preds


def write_official(preds: list[Prediction], path: Path) -> None:
    """Our predictions in the official schema, in our order, so the benchmark's own script scores them as `score`
    does: official-format text verbatim, else '[[A]]' / '[[B]]' for a decided item and a line with neither tag for
    an undecided one (never the aggregate's tie-break, never our own raw text, which may hold both tags)."""
    with path.open("w") as f:
        for p in preds:
            choice = verdict(p)
            output = (p.raw or "") if p.official_format else f"[[{choice}]]" if choice else UNDECIDED
            row = {
                "ID": p.key,
                "Image": p.meta.get("Image", ""),
                "Label": p.gold,
                "output": output,
                "Meta": {"Category": p.meta.get("Category", p.group)},
            }
            f.write(json.dumps(row) + "\n")


def load(data_dir: Path, task: str = "default") -> list[EvalItem]:
    """`all_data_release.json` after the official download script ran: ID, Text, Image, Output1, Output2, Better,
    Category, with images relative to data_dir."""
    items = []
    for row in read_records(find_file(data_dir, "all_data_release.json")):
        request = JudgeRequest(
            id=row["ID"],
            question=row["Text"],
            images=[media_path(data_dir, row["Image"])],
            a=row["Output1"],
            b=row["Output2"],
        )
        gold = "B" if row["Better"] == "Output2" else "A"
        meta = {"Image": row["Image"], "Category": row["Category"]}
        items.append(
            EvalItem(key=row["ID"], request=request, gold=gold, group=category(row["ID"], row["Category"]), meta=meta)
        )
    return items


BENCHMARK = register(
    Benchmark(
        name="multimodal-rewardbench",
        description="Multimodal RewardBench (Meta): general correctness/preference, knowledge, reasoning, safety, VQA.",
        tasks=("default",),
        load=load,
        score=score,
        read_official=read_official,
        official_judge="mmrb_official",
        official_order="given",
        headline=("official_overall", "strict_overall"),
        data_revision="facebookresearch/multimodal_rewardbench @ b4b92cd (data rebuilt by its download script)",
        write_official=write_official,
    )
)
