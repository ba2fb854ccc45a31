"""VL-RewardBench (Li et al., CVPR 2025): 1,250 image-question pairs; groups general 183 / hallucination 749 /
reasoning 318 by the corrected official mapping.

Strict metrics (the headline, ours): correct / all items; an unparsable verdict, a number other than 1 or 2, or a
split between samples counts wrong.
Official metrics (`cal.py` @ 9b10abd, exactly): each sample (here: each judged order of each of the run's
`--samples k` judgments; in a published file, each row) is *agree*, *reject* or *doesntMatch*. With the official
output format the number N of 'Answer N is better' is read as `int()` reads it (`deltarubric.rubrics.parsing.
vlrb_answer`; a run records it as each order's vote label, a published file's text is read once): reject iff N is the
position the rejected answer was shown at, agree for any other number ('Answer 3', 'Answer ０', 'Answer 01' when 2
was rejected), doesntMatch without a match.
Without the official format (our judges) the sample's winner is agree / reject, anything else doesntMatch. An item
is agree, reject or doesntMatch when more than half of its samples are, else split; only agree and reject items are
kept. Overall is micro over the kept items, macro the mean of the three group accuracies; an empty group is n/a
(where cal.py would divide by zero). `official_dropped` counts the items left out (`official_doesnt_match` of them
with a doesntMatch majority, the rest split), as cal.py prints its counts.
The released order puts the preferred response first in 1,245 of 1,250 rows, so runs show a seeded random order
(or both orders) instead. The official protocol (`eval run --official --samples k`) judges every item k times at the
official inference's sampling (temperature 0.2, top_p 0.2, 2,048 tokens), each sample drawing its own order; the
preset's text is read with the official rule whatever the order (cal.py reads each sample with the order it drew).
"""

from __future__ import annotations

import io
import random
import re
from pathlib import Path

from PIL import Image

from deltarubric.eval.core import EvalItem, Prediction, decided, judge_stats, pct, short_hash
from deltarubric.eval.io import find_file, json_lines, media_path, read_records
from deltarubric.eval.spec import Benchmark, HubSource, Scores, register
from deltarubric.rm.types import JudgeRequest
from deltarubric.rubrics.parsing import parse_vlrb

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
    rules = {
        "RLAIF": "rlaif-v",
        "RLHF": "rlhf-v",
        "mathverse": "reasoning",
        "mmmu": "reasoning",
        "wildvision": "wildvision-battle",
        "hallucination": "povid",
    }
    return rules.get(prefix, "vlfeedback")


def group_of(item_id: str) -> str:
    return _SUBSET_GROUP[subset_of(item_id)]


def rejected_position(gold: str, order: str) -> int:
    """Where the rejected answer was shown (1 = first), as cal.py derives it from the ranking and the order drawn."""
    return 2 if (gold == "A") == (order == "AB") else 1


def official_votes(p: Prediction) -> list[str]:
    """cal.py's status of each sample: 'agree', 'reject' or 'doesntMatch'."""
    samples = p.samples or [("AB", p.winner)]
    if p.official_format:
        numbers = p.labels if len(p.labels) == len(samples) else [None] * len(samples)
        return [
            "doesntMatch" if n is None else "reject" if n == str(rejected_position(p.gold, o)) else "agree"
            for (o, _), n in zip(samples, numbers)
        ]
    return ["agree" if w == p.gold else "reject" if w in ("A", "B") else "doesntMatch" for _, w in samples]


def official_class(votes: list[str]) -> str:
    """cal.py's item class: the status held by more than half of the samples, else 'other' (a split)."""
    return next((c for c in ("agree", "reject", "doesntMatch") if votes.count(c) > len(votes) / 2), "other")


def _official(preds: list[Prediction], classes: list[str], prefix: str) -> Scores:
    kept = {g: [c for p, c in zip(preds, classes) if p.group == g and c in ("agree", "reject")] for g in GROUPS}
    accs = {g: pct(cs.count("agree"), len(cs)) for g, cs in kept.items()}
    every = [c for cs in kept.values() for c in cs]
    overall = pct(every.count("agree"), len(every))
    return {
        f"{prefix}_overall": overall,
        f"{prefix}_macro": sum(accs.values()) / len(accs),
        **{f"{prefix}_{g}": a for g, a in accs.items()},
    }


def score(preds: list[Prediction], task: str = "default") -> Scores:
    per_group = {g: [p for p in preds if p.group == g] for g in GROUPS}
    strict = {g: pct(sum(decided(p) == p.gold for p in ps), len(ps)) for g, ps in per_group.items()}
    everyone = [p for ps in per_group.values() for p in ps]
    out: Scores = {
        "strict_overall": pct(sum(decided(p) == p.gold for p in everyone), len(everyone)),
        "strict_macro": sum(strict.values()) / len(strict),
        **{f"strict_{g}": a for g, a in strict.items()},
    }
    votes = [official_votes(p) for p in preds]
    classes = [official_class(v) for v in votes]
    out |= _official(preds, classes, "official")
    out["official_dropped"] = float(sum(c not in ("agree", "reject") for c in classes))
    out["official_doesnt_match"] = float(classes.count("doesntMatch"))
    out |= _cal_py_k_scores(preds, votes)
    return out | judge_stats(preds)


CAL_PY_KS = (1, 3, 5, 7, 9)


def _cal_py_k_scores(preds: list[Prediction], votes: list[list[str]]) -> Scores:
    """cal.py's figures at k = 1, 3, 5, 7, 9 for a published file with more samples per item than k: it seeds the
    global RNG with 1234 once, then for each k reloads the file, shuffles the rows (nulls included) with a naive swap
    shuffle (`randint(0, n-1)` per position, the RNG carrying over between k) and counts at most the first k samples
    of each item. Replayed here from the rows' file positions, which `read_official` records; absent for runs."""
    rows = [p.meta.get("file_rows") for p in preds]
    if not preds or any(r is None or len(r) != len(p.samples) for r, p in zip(rows, preds)):
        return {}
    most = max(len(p.samples) for p in preds)
    n = int(preds[0].meta["file_n"])
    where = {pos: (i, j) for i, r in enumerate(rows) for j, pos in enumerate(r)}
    rng = random.Random(1234)
    out: Scores = {}
    for k in CAL_PY_KS:
        order = list(range(n))
        for i in range(n):
            j = rng.randint(0, n - 1)
            order[i], order[j] = order[j], order[i]
        if k >= most:  # every sample counts: the official figure above
            continue
        taken: dict[int, list[int]] = {}
        for pos in order:
            if pos in where:
                i, j = where[pos]
                if len(got := taken.setdefault(i, [])) < k:
                    got.append(j)
        subset = [preds[i] for i in taken]
        classes = [official_class([votes[i][j] for j in js]) for i, js in taken.items()]
        out |= _official(subset, classes, f"official_k{k}")
    return out


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


def read_official(path: Path) -> list[Prediction]:
    """The official per-sample output (`inference_hf.py`, cal.py's input): one row per sample, {id, query, response,
    ranking, meta: {random_number, filter_choice}}, optionally each wrapped as {"0": row}; null rows are skipped.
    Samples of one item (cal.py's key: id + query + sorted responses) become one prediction, in file order. The
    shown order is 'AB' when random_number is 0, else 'BA'; `filter_choice` is re-read with the official rule."""
    records = json_lines(path)
    if records and isinstance(records[0], dict) and "0" in records[0]:
        try:
            records = [r["0"] for r in records]
        except (KeyError, TypeError) as e:
            raise ValueError(f'{path}: the first row is wrapped as {{"0": row}} but not every row is') from e
    items: dict[str, dict] = {}
    for pos, row in enumerate(records):
        if row is None:
            continue
        try:
            ranking, meta = list(row["ranking"]), row["meta"]
            official_key = row["id"] + row["query"] + "\t".join(sorted(row["response"]))  # cal.py's grouping
            text, drawn = meta["filter_choice"], meta["random_number"]
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path}: row {pos + 1}: not a VL-RewardBench output row (missing {e})") from e
        if ranking not in ([0, 1], [1, 0]):
            raise ValueError(f"{path}: row {pos + 1}: ranking {ranking} is neither [0, 1] nor [1, 0]")
        gold, order = ("A" if ranking == [0, 1] else "B"), ("AB" if drawn == 0 else "BA")
        item = items.setdefault(
            official_key,
            {"key": item_key(row), "id": row["id"], "gold": gold, "samples": [], "labels": [], "rows": []},
        )
        if item["gold"] != gold:
            raise ValueError(f"{path}: row {pos + 1}: item {row['id']!r} has two different rankings")
        parsed = parse_vlrb(text or "")
        shown = {"A": 0, "B": 1}.get(parsed.winner or "")
        item["samples"].append((order, None if shown is None else order[shown]))
        item["labels"].append(parsed.label)
        item["rows"].append(pos)
    preds = []
    for it in items.values():
        winners = [w for _, w in it["samples"]]
        winner = next((w for w in ("A", "B") if winners.count(w) > len(winners) / 2), None)
        preds.append(
            Prediction(
                key=it["key"],
                gold=it["gold"],
                group=group_of(it["id"]),
                winner=winner,
                samples=it["samples"],
                labels=it["labels"],
                official_format=True,
                parse_ok=None not in winners,
                meta={"id": it["id"], "file_rows": it["rows"], "file_n": len(records)},
            )
        )
    return preds


BENCHMARK = register(
    Benchmark(
        name="vl-rewardbench",
        description="VL-RewardBench: image QA pairs, general / hallucination / reasoning.",
        tasks=("default",),
        load=load,
        score=score,
        read_official=read_official,
        official_judge="vlrb_official",
        official_order="random",
        official_sampling={
            "temperature": 0.2,
            "top_p": 0.2,
            "max_tokens": 2048,
        },  # the official inference's vLLM request
        votes_over_samples=True,
        official_any_order=True,
        headline=("strict_overall", "strict_macro", "official_overall", "official_macro"),
        data_revision="original 1,250-row release (VL_RewardBench @ e492d65 data/data.jsonl, pre-2025-05 label fix)",
        # The hub parquet of the same 1,250-row release ("Cleanup parquet data (#3)", before the 2025-05 fixes).
        hub=HubSource(
            "MMInstruction/VL-RewardBench", "49b8e26430f73b021bd0655fcd27ebf0f384fede", ("data/test-*.parquet",)
        ),
    )
)
