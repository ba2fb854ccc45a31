"""Our official metrics against oracles written from the benchmark authors' rules, on adversarial judge outputs.

Each oracle below is written here from the rules as read in the authors' code (commit cited beside it; none of their
code is copied) and works on the authors' own file format: the oracles share no parser or metric code with eval/ or
rubrics/. Where the authors' script prints a figure, the oracle gives that figure; our scorer must give the same.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from deltarubric.eval.core import EvalItem, Prediction
from deltarubric.eval.registry import get_benchmark
from deltarubric.rm.types import OrderResult, Verdict

EXTERNAL = Path(os.environ.get("DELTARUBRIC_EXTERNAL", Path(__file__).resolve().parents[2] / "shared" / "external"))
needs_external = pytest.mark.skipif(
    not EXTERNAL.is_dir() and not os.environ.get("CI"), reason=f"published benchmark outputs not at {EXTERNAL}"
)
SHIPPED = Path(__file__).resolve().parents[1] / "data"
VLRB = get_benchmark("vl-rewardbench")
MMRB = get_benchmark("multimodal-rewardbench")
MMRLHF = get_benchmark("mm-rlhf-rewardbench")
GENAI = get_benchmark("genai-bench")


def close(ours: float, oracle: float) -> bool:
    """Equal up to float summation order (and so equal as printed, two decimals)."""
    if math.isnan(oracle):
        return math.isnan(ours)
    return abs(ours - oracle) < 1e-9 and f"{ours:.2f}" == f"{oracle:.2f}"


# ===================================================================================================== VL-RewardBench
# Oracle: vl-rewardbench/VL_RewardBench @ 9b10abdc91678bc5fb2bd7eea4d73d3af484db9f, cal.py (main with reparse=True,
# use_llm_parse=False), read as:
# - a file row is one sample: {id, query, response, ranking, meta: {random_number, filter_choice}}; if the first row
#   has a key "0" every row is unwrapped from it; null rows are skipped;
# - the sample's text loses every newline and '*', then the case-insensitive pattern below is searched; no match is
#   doesntMatch; else the captured digits go through int(); equal to the rejected position
#   (ranking.index(1 if random_number == 0 else 0) + 1) is reject, any other number agree;
# - the item key is id + query + tab-joined sorted responses; the dataset comes from the id's prefix before the first
#   '_' or '-' (RLAIF, RLHF, mathverse/mmmu, wildvision, hallucination, else vlfeedback) and maps to a group;
# - random.seed(1234) once; for k in 1, 3, 5, 7, 9: reload, swap-shuffle every position i with randint(0, n - 1),
#   count at most k samples per item in that order; an item is agree / reject / doesntMatch with more than half of
#   its counted samples, else other; group accuracy = agree / (agree + reject); overall = sums over the groups;
#   macro = mean of the three group accuracies.
CAL_PATTERN = r"(?:Overall Judgment|Therefore)\s*.*\s*-*\s*Answer\s*(\d+)\s*is\s*(?:the\s*)?(?:slightly\s*)?better"
CAL_GROUP = {
    "RLAIF": "hallucination",
    "RLHF": "hallucination",
    "hallucination": "hallucination",
    "mathverse": "reasoning",
    "mmmu": "reasoning",
    "wildvision": "general",
}


def cal_status(row: dict) -> str:
    text = row["meta"]["filter_choice"].replace("\n", "").replace("*", "")
    hit = re.search(CAL_PATTERN, text, re.IGNORECASE)
    if not hit:
        return "doesntMatch"
    loser_at = row["ranking"].index(1 if row["meta"]["random_number"] == 0 else 0) + 1
    return "reject" if int(hit.group(1)) == loser_at else "agree"


def cal_group(item_id: str) -> str:
    cuts = [i for i in (item_id.find("_"), item_id.find("-")) if i >= 0]
    return CAL_GROUP.get(item_id[: min(cuts)] if cuts else item_id, "general")


def cal_figures(rows: list, k: int) -> dict:
    """One k of cal.py's printout for rows already in the order it counts them."""
    counts: dict[str, Counter] = {}
    group: dict[str, str] = {}
    for row in rows:
        if row is None:
            continue
        key = row["id"] + row["query"] + "\t".join(sorted(row["response"]))
        c = counts.setdefault(key, Counter())
        if sum(c.values()) >= k:
            continue
        c[cal_status(row)] += 1
        group[key] = cal_group(row["id"])
    agree, kept = Counter(), Counter()
    dropped = doesnt_match = 0
    for key, c in counts.items():
        n = sum(c.values())
        cls = next((s for s in ("agree", "reject", "doesntMatch") if c[s] > n / 2), "other")
        if cls in ("agree", "reject"):
            kept[group[key]] += 1
            agree[group[key]] += cls == "agree"
        else:
            dropped += 1
            doesnt_match += cls == "doesntMatch"
    accs = [agree[g] / kept[g] if kept[g] else float("nan") for g in ("reasoning", "hallucination", "general")]
    total = sum(kept.values())
    return {
        "overall": 100 * sum(agree.values()) / total if total else float("nan"),
        "macro": 100 * sum(accs) / 3,
        "general": 100 * accs[2],
        "hallucination": 100 * accs[1],
        "reasoning": 100 * accs[0],
        "dropped": dropped,
        "doesnt_match": doesnt_match,
    }


def cal_all_k(rows: list) -> dict[int, dict]:
    """cal.py's main: one seeded RNG carried over the five k values, the file reshuffled from its order each time."""
    if rows and rows[0] is not None and "0" in rows[0]:
        rows = [r["0"] for r in rows]
    rng = random.Random(1234)
    out = {}
    for k in (1, 3, 5, 7, 9):
        shuffled = list(rows)
        for i in range(len(shuffled)):
            j = rng.randint(0, len(shuffled) - 1)
            shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
        out[k] = cal_figures(shuffled, k)
    return out


def cal_every_sample(rows: list) -> dict:
    """cal.py's figure when k is at least the number of samples of every item (then the shuffle does not matter)."""
    if rows and rows[0] is not None and "0" in rows[0]:
        rows = [r["0"] for r in rows]
    return cal_figures(rows, 10**9)


def assert_official_equals_oracle(scores: dict, oracle: dict, prefix: str = "official") -> None:
    for name in ("overall", "macro", "general", "hallucination", "reasoning"):
        assert close(scores[f"{prefix}_{name}"], oracle[name]), (name, scores[f"{prefix}_{name}"], oracle[name])
    if prefix == "official":
        assert scores["official_dropped"] == oracle["dropped"]
        assert scores["official_doesnt_match"] == oracle["doesnt_match"]


# Judge outputs in the official format, "{n}" standing for the answer number the judge means.
VLRB_OUTPUTS = [
    "Accuracy: ...\nOverall Judgment: Answer {n} is better.",  # clean
    "**Overall Judgment:** **Answer {n}** is better",  # markdown ('*' dropped before matching)
    "overall judgment: answer {n} is the better one",  # lowercase
    "Overall Judgment\n- Answer {n} is slightly better",  # newline and dash
    "Therefore, Answer 1 is better. Overall Judgment: Answer {n} is better.",  # two judgments: the last counts
    "Overall Judgment: Answer 3 is better.",  # no such answer: agree unless 3 was rejected (never)
    "Overall Judgment: Answer ０ is better.",  # full-width zero: agree
    "Overall Judgment: Answer ２ is better.",  # full-width two
    "Overall Judgment: Answer 0{n} is better.",  # leading zero
    "Overall Judgment: Answer ٠{n} is better.",  # Arabic-Indic zero, then the number
    "Overall Judgment: Answer 12 is better.",  # 12 is neither
    "Overall Judgment: Answer " + "0" * 4200 + "{n} is better.",  # long, still within int()'s limit
    "Overall Judgment: Both answers are equally good.",  # a tie: doesntMatch
    "Overall Judgment: Answer {n} and Answer 2 are equal.",  # no 'is better': doesntMatch
    "",  # empty
    "Answer {n} is better.",  # no 'Overall Judgment'/'Therefore': doesntMatch
    "Overall Judgment: Anſwer {n} iſ better 😀",  # long s folds to s under IGNORECASE
    "OVERALL JUDGMENT: ANSWER {n} IS BETTER",
    "Overall Judgment: Answer\u00a0{n}\u2003is better",  # Unicode spaces match \s
    "Overall Judgment: Answer {n}is better",
    "Therefore\r\nAnswer {n} is better",  # '\r' stays, '.' and '\s' take it
    "Overall Judgment: Answer {n} is better\n\nTherefore Answer 1 is the better",
]


def vlrb_row(item: dict, text: str, drawn: int) -> dict:
    return {
        "id": item["id"],
        "query": item["query"],
        "response": item["response"],
        "ranking": item["human_ranking"],
        "meta": {"random_number": drawn, "filter_choice": text},
    }


def vlrb_rows(samples_per_item: int, seed: int) -> list[dict]:
    """An official output file over the real 1,250 items: each sample draws an order and one adversarial output."""
    items = [json.loads(line) for line in (SHIPPED / "vl-rewardbench/data.jsonl").read_text().splitlines()]
    rng = random.Random(seed)
    rows = []
    for _ in range(samples_per_item):
        for item in items:
            text = rng.choice(VLRB_OUTPUTS).replace("{n}", rng.choice("12"))
            rows.append(vlrb_row(item, text, rng.choice([0, 1])))
    return rows


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_vlrb_single_sample_file_equals_cal_py(tmp_path):
    rows = vlrb_rows(1, seed=0)
    preds = VLRB.read_official(write_jsonl(tmp_path / "out.jsonl", rows))
    assert len(preds) == 1250 and [p.key for p in preds] == [i.key for i in VLRB.load(Path("/nonexistent"), "default")]
    scores = VLRB.score(preds, "default")
    oracle = cal_every_sample(rows)
    assert_official_equals_oracle(scores, oracle)
    for k, figures in cal_all_k(rows).items():  # one sample per item: every k prints the same figures
        assert_official_equals_oracle(scores, figures)
    assert not any(key.startswith("official_k") for key in scores)  # nothing more to show with one sample


def test_vlrb_mixed_file_counts_what_cal_py_counts(tmp_path):
    """The rule difference in numbers: 'Answer 3', full-width digits and leading zeros count (agree unless the number is
    the rejected position), as cal.py counts them, rather than only 1 and 2 written plainly."""
    rows = vlrb_rows(1, seed=7)
    scores = VLRB.score(VLRB.read_official(write_jsonl(tmp_path / "out.jsonl", rows)), "default")
    oracle = cal_every_sample(rows)
    assert_official_equals_oracle(scores, oracle)

    def plain_digits_only(row: dict) -> dict:  # the previous reading: a number other than ASCII 1 / 2 was no match
        hit = re.search(CAL_PATTERN, row["meta"]["filter_choice"].replace("\n", "").replace("*", ""), re.IGNORECASE)
        keep = hit is not None and hit.group(1) in ("1", "2")
        return {**row, "meta": {**row["meta"], "filter_choice": row["meta"]["filter_choice"] if keep else ""}}

    before = cal_every_sample([plain_digits_only(r) for r in rows])
    assert before["dropped"] > oracle["dropped"] and before["overall"] < oracle["overall"]


def test_vlrb_ten_samples_reproduce_every_k_cal_py_prints(tmp_path):
    rows = vlrb_rows(10, seed=1)
    scores = VLRB.score(VLRB.read_official(write_jsonl(tmp_path / "out.jsonl", rows)), "default")
    assert_official_equals_oracle(scores, cal_every_sample(rows))  # all ten samples: cal.py with k >= 10
    for k, figures in cal_all_k(rows).items():
        assert_official_equals_oracle(scores, figures, prefix=f"official_k{k}")


def test_vlrb_wrapped_rows_nulls_and_uneven_samples(tmp_path):
    rows = vlrb_rows(3, seed=2)[:2000]
    rows = [None if i % 97 == 5 else r for i, r in enumerate(rows)]  # nulls take part in the shuffle, then are skipped
    wrapped = [{"0": r} for r in rows]
    preds = VLRB.read_official(write_jsonl(tmp_path / "out.jsonl", wrapped))
    scores = VLRB.score(preds, "default")
    assert_official_equals_oracle(scores, cal_every_sample(wrapped))
    for k, figures in cal_all_k(wrapped).items():
        if f"official_k{k}_overall" in scores:
            assert_official_equals_oracle(scores, figures, prefix=f"official_k{k}")
        else:  # k covers every item's samples: the same figures as official_*
            assert_official_equals_oracle(scores, figures)


def test_vlrb_run_predictions_equal_cal_py_on_the_same_samples():
    """Our runs (official preset, one order; or both orders with each order's raw text): the same samples written as
    cal.py's rows give the same official figures; the strict ones stay ours."""
    items = [json.loads(line) for line in (SHIPPED / "vl-rewardbench/data.jsonl").read_text().splitlines()][:400]
    from deltarubric.eval.benchmarks.vl_rewardbench import group_of, item_key
    from deltarubric.rubrics.parsing import parse_vlrb

    rng = random.Random(3)
    for n_orders in (1, 2):
        preds, rows = [], []
        for item in items:
            gold = "A" if item["human_ranking"] == [0, 1] else "B"
            orders = rng.sample(["AB", "BA"], n_orders)
            texts = [rng.choice(VLRB_OUTPUTS).replace("{n}", rng.choice("12")) for _ in orders]
            shown = [parse_vlrb(t).winner for t in texts]  # in the order shown; map back to the item's labels
            winners = [
                None if w is None else (w if o == "AB" else {"A": "B", "B": "A"}[w]) for w, o in zip(shown, orders)
            ]
            verdict = Verdict(
                winner=winners[0] if len(set(winners)) == 1 else None,
                orders=[
                    OrderResult(shown_order=o, winner=w, parse_ok=w is not None, label=parse_vlrb(t).label)
                    for o, w, t in zip(orders, winners, texts)
                ],
                raw={f"{o}/judge": t for o, t in zip(orders, texts)},
            )
            item_obj = EvalItem.model_construct(key=item_key(item), gold=gold, group=group_of(item["id"]), meta={})
            preds.append(Prediction.from_verdict(item_obj, verdict, official_format=True))
            rows += [vlrb_row(item, t, 0 if o == "AB" else 1) for o, t in zip(orders, texts)]
        assert all(len(p.labels) == n_orders for p in preds)
        assert_official_equals_oracle(VLRB.score(preds, "default"), cal_every_sample(rows))


def test_vlrb_no_crash_where_cal_py_would_divide_by_zero_or_overflow(tmp_path):
    items = [json.loads(line) for line in (SHIPPED / "vl-rewardbench/data.jsonl").read_text().splitlines()]
    hall = [i for i in items if i["id"].startswith("RLAIF")][:3]
    rows = [
        vlrb_row(hall[0], "Overall Judgment: Answer 1 is better.", 0),  # agree
        vlrb_row(hall[1], "Overall Judgment: Answer " + "7" * 10000 + " is better.", 0),  # int() would raise
        vlrb_row(hall[2], "no verdict", 1),
    ]
    scores = VLRB.score(VLRB.read_official(write_jsonl(tmp_path / "out.jsonl", rows)), "default")
    assert scores["official_hallucination"] == 100.0 and scores["official_overall"] == 100.0
    assert math.isnan(scores["official_general"]) and math.isnan(scores["official_macro"])  # empty groups: n/a
    assert scores["official_dropped"] == 1 and scores["official_doesnt_match"] == 1
    assert math.isnan(VLRB.score([], "default")["official_overall"])
    assert VLRB.read_official(write_jsonl(tmp_path / "empty.jsonl", [])) == []


def test_vlrb_unicode_digits_read_as_int_reads_them():
    import sys

    from deltarubric.rubrics.parsing import parse_vlrb, vlrb_answer

    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        if re.fullmatch(r"\d", ch):
            text = f"Overall Judgment: Answer {ch} is better"
            assert vlrb_answer(text) == str(int(ch)), hex(cp)
            assert parse_vlrb(text).winner == {1: "A", 2: "B"}.get(int(ch))


# ============================================================================================ Multimodal RewardBench
# Oracle: facebookresearch/multimodal_rewardbench @ b4b92cdac0df81b2a134bcb1b91411d67b55f80f,
# scripts/2_get_accuracy.py, read as: random.seed(123) once before reading; per line of the answers file, in order:
# the prediction is A if the output contains "[[A]]", else B if it contains "[[B]]", else one draw
# ('A' if random() < 0.5 else 'B'); correct iff it equals Label; counted under 'all' and under the category, where a
# Meta.Category equal to 'safety' becomes safety/bias when the lower-cased ID starts with 'pairs' (else
# safety/toxicity), one equal to 'reasoning' becomes reasoning/math when the lower-cased ID starts with 'math' (else
# reasoning/coding), and any other Category is kept as it is. Accuracy = correct / count per key.
def mmrb_oracle(path: Path) -> dict[str, float]:
    rng = random.Random(123)
    hits: dict[str, list[bool]] = defaultdict(list)
    for line in path.read_text().splitlines():
        ex = json.loads(line)
        out = ex["output"]
        pred = "A" if "[[A]]" in out else "B" if "[[B]]" in out else ("A" if rng.random() < 0.5 else "B")
        cat, lid = ex["Meta"]["Category"], ex["ID"].lower()
        if cat == "safety":
            cat = "safety/bias" if lid.startswith("pairs") else "safety/toxicity"
        elif cat == "reasoning":
            cat = "reasoning/math" if lid.startswith("math") else "reasoning/coding"
        hits["all"].append(pred == ex["Label"])
        hits[cat].append(pred == ex["Label"])
    return {k: 100 * sum(v) / len(v) for k, v in hits.items()}


MMRB_OUTPUTS = [
    "Reasoning... [[A]]",
    "[[B]]",
    "**[[A]]**",
    "[[a]]",
    "[[ B ]]",
    "[[B]] but maybe [[A]]",
    "[[A]] or [[B]]",
    "",
    "Assistant B is better.",
    "Verdict: [[B]] 😀",
    "[[Ｂ]]",
    "[[A]]\u200b",
    "tie",
]
MMRB_IDS = [
    ("pairs_1", "safety"),
    ("PAIRS_2", "safety"),
    ("tox_3", "safety"),
    ("math_4", "reasoning"),
    ("MATH_5", "reasoning"),
    ("code_6", "reasoning"),
    ("vqa_7", "vqa"),
    ("pairs_8", "Safety"),
    ("pairs_9", "safety_extra"),
    ("x_10", "general_correctness"),
    ("mathx_11", "reasoning "),
]


def test_mmrb_official_format_outputs_equal_the_script(tmp_path):
    rng = random.Random(11)
    rows = []
    for n in range(600):
        rid, cat = MMRB_IDS[n % len(MMRB_IDS)]
        rows.append(
            {
                "ID": f"{rid}_{n}",
                "Image": f"img/{n}.png",
                "Label": rng.choice("AB"),
                "output": rng.choice(MMRB_OUTPUTS),
                "Meta": {"Category": cat},
            }
        )
    path = write_jsonl(tmp_path / "answers.jsonl", rows)
    scores = MMRB.score(MMRB.read_official(path), "default")
    oracle = mmrb_oracle(path)
    assert close(scores["official_overall"], oracle.pop("all"))
    assert {
        k.removeprefix("official_"): v
        for k, v in scores.items()
        if k.startswith("official_") and k != "official_overall"
    }.keys() == oracle.keys()
    for cat, value in oracle.items():
        assert close(scores[f"official_{cat}"], value), cat
    # round trip: our export of these predictions is the same file for the script
    again = tmp_path / "again.jsonl"
    MMRB.write_official(MMRB.read_official(path), again)
    assert mmrb_oracle(again) == mmrb_oracle(path)


def test_mmrb_swap_run_export_and_score_are_one_definition(tmp_path):
    """After --swap: a split between orders is undecided both in official_* and in the export (no tag, so the script
    guesses from the same seeded stream); a decided item is its tag. The script on the export = our figures."""
    from deltarubric.rubrics.parsing import parse_mmrb

    rng = random.Random(5)
    preds = []
    for n in range(400):
        rid, cat = MMRB_IDS[n % len(MMRB_IDS)]
        a, b = rng.choice(["A", "B", None, "tie"]), rng.choice(["A", "B", None])
        # the aggregate breaks a split by p_a: its winner is decisive even when the orders disagree
        winner = a if a == b else rng.choice(["A", "B"])
        raw = {"AB/judge": rng.choice(MMRB_OUTPUTS), "BA/judge": "Winner: [[A]] ... [[B]]"}
        preds.append(
            Prediction(
                key=f"{rid}_{n}",
                gold=rng.choice("AB"),
                group=cat,
                winner=winner,
                samples=[("AB", a), ("BA", b)],
                labels=[parse_mmrb(t).label for t in raw.values()],
                parse_ok=None not in (a, b),
                meta={"Image": f"img/{n}.png", "Category": cat},
            )
        )
    from deltarubric.eval.benchmarks.multimodal_rewardbench import category

    preds = [p.model_copy(update={"group": category(p.key, p.meta["Category"])}) for p in preds]
    out = tmp_path / "export.jsonl"
    MMRB.write_official(preds, out)
    scores, oracle = MMRB.score(preds, "default"), mmrb_oracle(out)
    assert close(scores["official_overall"], oracle.pop("all"))
    for cat, value in oracle.items():
        assert close(scores[f"official_{cat}"], value), cat
    exported = [json.loads(line)["output"] for line in out.read_text().splitlines()]
    for p, text in zip(preds, exported):
        split = len({w for _, w in p.samples}) > 1 or p.samples[0][1] not in ("A", "B")
        assert ("[[A]]" in text or "[[B]]" in text) != split
    assert MMRB.score(MMRB.read_official(out), "default")["official_overall"] == scores["official_overall"]


def test_mmrb_categories_compare_for_equality_and_lower_case_ids():
    from deltarubric.eval.benchmarks.multimodal_rewardbench import category

    assert category("PAIRS_2", "safety") == "safety/bias" and category("Math_1", "reasoning") == "reasoning/math"
    assert category("pairs_1", "Safety") == "Safety" and category("pairs_1", "safety_extra") == "safety_extra"
    assert category("math_1", "reasoning ") == "reasoning "


@needs_external
def test_mmrb_published_example_equals_the_script():
    path = EXTERNAL / "multimodal-rewardbench/example_predictions.jsonl"
    scores, oracle = MMRB.score(MMRB.read_official(path), "default"), mmrb_oracle(path)
    assert close(scores["official_overall"], oracle.pop("all"))
    assert all(close(scores[f"official_{c}"], v) for c, v in oracle.items())


# =============================================================================================== MM-RLHF-RewardBench
# Oracle: yfzhang114/r1_reward @ 3693413abedd4a1efaa9484143acfaa5d78a8d2b, inference/MM-RLHF-Reward/get_acc.py (the
# same rules as yfzhang114/MM-RLHF @ 7c8af1d2cacc252e4310881d2af4f90eacf2a5f0,
# llava/eval/cal_performance_mmreweard_bench.py), read as: keywords mcq, long, short, safety, video in that order;
# rows grouped by id; a row is correct iff rewards[0] > rewards[1]; a category's row count takes each row under the
# first keyword found in (image or video); its correct count takes each correct row under the first keyword found in
# image or in video; an id all of whose rows are correct adds to overall ACC+ and to the first keyword (in keyword
# order) that any of its rows' image or video contains; a category's ACC+ divides by the ids any of whose rows'
# image + video (concatenated) contain the keyword; categories without rows stay unreported (printed 0.00).
KEYWORDS = ("mcq", "long", "short", "safety", "video")


def get_acc_oracle(path: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    ids: dict[str, list[dict]] = defaultdict(list)
    count, right, plus = Counter(), Counter(), Counter()
    for r in rows:
        ids[r.get("id", "")].append(r)
        first = [k for k in KEYWORDS if k in (r.get("image", "") or r.get("video", ""))]
        count[first[0] if first else None] += 1
    ok_rows = 0
    for rs in ids.values():
        all_ok = True
        for r in rs:
            ok = r["rewards"][0] > r["rewards"][1]
            where = [k for k in KEYWORDS if k in r.get("image", "") or k in r.get("video", "")]
            if where and ok:
                right[where[0]] += 1
            ok_rows += ok
            all_ok &= ok
        if all_ok:
            plus["all"] += 1
            hit = [k for k in KEYWORDS if any(k in r.get("image", "") or k in r.get("video", "") for r in rs)]
            if hit:
                plus[hit[0]] += 1
    out = {"accuracy": 100 * ok_rows / len(rows), "acc_plus": 100 * plus["all"] / len(ids)}
    for k in KEYWORDS:
        members = sum(any(k in r.get("image", "") + r.get("video", "") for r in rs) for rs in ids.values())
        out[f"accuracy_{k}"] = 100 * right[k] / count[k] if count[k] else float("nan")
        out[f"acc_plus_{k}"] = 100 * plus[k] / members if count[k] else float("nan")
    return out


def mmrlhf_rows(seed: int) -> list[dict]:
    rows = [
        json.loads(line) for line in (SHIPPED / "mm-rlhf-rewardbench/mm_reward_bench.jsonl").read_text().splitlines()
    ]
    rng = random.Random(seed)
    for r in rows:
        r["rewards"] = rng.choice([[1, 0], [0, 1], [0.5, 0.5], [2.5, -1.0], [0, 0], [-3, -2]])
    return rows


def test_mmrlhf_released_rows_equal_get_acc(tmp_path):
    for seed in range(5):
        rows = mmrlhf_rows(seed)
        path = write_jsonl(tmp_path / f"r{seed}.jsonl", rows)
        scores, oracle = MMRLHF.score(MMRLHF.read_official(path), "default"), get_acc_oracle(path)
        for name, value in oracle.items():
            assert close(scores[name], value), (seed, name)


def test_mmrlhf_an_id_spanning_two_categories_is_credited_as_get_acc_credits_it(tmp_path):
    rows = [
        {"id": "x", "image": "long/1.png", "rewards": [1, 0]},  # x spans long and mcq: all right
        {
            "id": "x",
            "image": "mcq/2.png",
            "rewards": [1, 0],
        },  # -> ACC+ credit to mcq (first keyword), in both denominators
        {"id": "y", "image": "short/long_3.png", "rewards": [1, 0]},  # two keywords in one path
        {"id": "z", "video": "video/4.mp4", "rewards": [0, 0]},  # a tie is wrong
        {"id": "w", "image": "other/5.png", "rewards": [1, 0]},  # no category: overall only
        {"id": "v", "image": "safety/6.png", "rewards": [float("nan"), 0]},  # NaN is not greater: wrong
    ]
    path = tmp_path / "edge.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    scores, oracle = MMRLHF.score(MMRLHF.read_official(path), "default"), get_acc_oracle(path)
    for name, value in oracle.items():
        assert close(scores[name], value), name
    # 'short/long_3.png' is a long row (long precedes short); x is credited to mcq but counts in long's denominator
    assert scores["acc_plus_mcq"] == 100.0 and scores["acc_plus_long"] == 50.0 and scores["accuracy_long"] == 100.0
    assert math.isnan(scores["accuracy_short"]) and math.isnan(scores["acc_plus_short"])  # no short row


def test_mmrlhf_run_predictions_equal_get_acc_on_their_verdicts(tmp_path):
    """A judge's verdicts as r1_reward writes them (chosen wins: [1, 0], else [0, 1]); the item metadata carries the
    media paths, and an old run without them falls back to its group."""
    items = MMRLHF.load(Path("/nonexistent"), "default")
    rng = random.Random(9)
    preds, rows = [], []
    raw_rows = [
        json.loads(line) for line in (SHIPPED / "mm-rlhf-rewardbench/mm_reward_bench.jsonl").read_text().splitlines()
    ]
    for item, row in zip(items, raw_rows):
        samples = [("AB", rng.choice(["A", "B", None, "tie"])), ("BA", rng.choice(["A", "B"]))][: rng.choice([1, 2])]
        preds.append(Prediction(key=item.key, gold="A", group=item.group, samples=samples, meta=item.meta))
        chosen_wins = len({w for _, w in samples}) == 1 and samples[0][1] == "A"
        rows.append({**row, "rewards": [1, 0] if chosen_wins else [0, 1]})
    path = write_jsonl(tmp_path / "verdicts.jsonl", rows)
    oracle = get_acc_oracle(path)
    for scores in (
        MMRLHF.score(preds, "default"),
        MMRLHF.score([p.model_copy(update={"meta": {"id": p.meta["id"]}}) for p in preds], "default"),
    ):
        for name, value in oracle.items():
            assert close(scores[name], value), name


@needs_external
def test_mmrlhf_published_rows_read_as_get_acc_reads_them(tmp_path):
    rows = [
        json.loads(line) for line in (EXTERNAL / "mm-rlhf-rewardbench/mm_reward_bench.jsonl").read_text().splitlines()
    ]
    path = write_jsonl(tmp_path / "all_right.jsonl", [{**r, "rewards": [1, 0]} for r in rows])
    preds = MMRLHF.read_official(path)
    assert [p.key for p in preds] == [i.key for i in MMRLHF.load(Path("/nonexistent"), "default")]
    scores = MMRLHF.score(preds, "default")
    assert scores["accuracy"] == 100.0 and scores["acc_plus"] == 100.0 == get_acc_oracle(path)["acc_plus"]


# ======================================================================================================== GenAI-Bench
# Oracle: TIGER-AI-Lab/GenAI-Bench @ f0b0334d414074c6b1c97e2c60ad8d8a592bda9f, inference.py parse_response, read as:
# the vote is the first match of a greedy '[[' ... ']]' (any characters but a newline between) found with the `regex`
# module, None without a match; correct iff the vote string is exactly one of the strings allowed for the human vote
# (left: [[A>>B]] / [[A>B]]; right: [[B>>A]] / [[B>A]]; tie: [[A=B]] / [[A=B=Good]]; both bad: [[A=B]] / [[A=B=Bad]]);
# show_results.py: accuracy = mean(correct) over every row.
ALLOWED = {
    "leftvote": ("[[A>>B]]", "[[A>B]]"),
    "rightvote": ("[[B>>A]]", "[[B>A]]"),
    "tievote": ("[[A=B]]", "[[A=B=Good]]"),
    "bothbad_vote": ("[[A=B]]", "[[A=B=Bad]]"),
}


def genai_oracle_vote(response: str) -> str | None:
    try:
        import regex as engine  # what the official script imports
    except ImportError:  # pragma: no cover
        engine = re
    hit = engine.search(r"\[\[.*\]\]", response)
    return hit.group() if hit else None


GENAI_OUTPUTS = [
    "Model A is clearly better.\n[[A>B]]",
    "[[B>A]]",
    "**Final verdict: [[A=B=Good]]**",
    "[[a>b]]",
    "[[A>B]] or [[B>A]]",
    "[[A>B]]\n[[B>A]]",
    "1. Model A is better: [[A>B]]\n2. Model B is better: [[B>A]]",
    "[[A>B]] [[A>B]]",
    "[[A=B]]",
    "[[A>>B]]",
    "[[B>>A]]",
    "",
    "no verdict",
    "[[ A>B ]]",
    "[[A=B=Bad]] 😀",
    "[[A>B]]\u2028[[B>A]]",
    "[[A>B]]\r[[B>A]]",
    "text [[\n[[B>A]]",
    "[[Ａ>B]]",
    "Verdict: [[A=B=Bad]].",
    "[[A=B=good]]",
    "[[B>A]]]",
]


def test_genai_official_and_no_ties_read_two_labels_as_the_official_parser(tmp_path):
    from deltarubric.rubrics.parsing import parse_genai_vote

    rng = random.Random(4)
    rows = [
        {"idx": n, "response": rng.choice(GENAI_OUTPUTS), "human_vote": rng.choice(list(ALLOWED))} for n in range(800)
    ]
    path = write_jsonl(tmp_path / "pairwise.jsonl", rows)
    scores = GENAI.score(GENAI.read_official(path), "image_generation")
    votes = [genai_oracle_vote(r["response"]) for r in rows]
    assert close(
        scores["official_4way"], 100 * sum(v in ALLOWED[r["human_vote"]] for v, r in zip(votes, rows)) / len(rows)
    )
    # no_ties (ours): the same vote strings, left/right rows only, so two labels on one line are wrong here too
    side = {"[[A>>B]]": "A", "[[A>B]]": "A", "[[B>>A]]": "B", "[[B>A]]": "B"}
    decisive = [
        (side.get(v or ""), r["human_vote"])
        for v, r in zip(votes, rows)
        if r["human_vote"] in ("leftvote", "rightvote")
    ]
    expected = 100 * sum(s == {"leftvote": "A", "rightvote": "B"}[h] for s, h in decisive) / len(decisive)
    assert close(scores["no_ties"], expected)
    # the judge's parser (what a non-official run's winners come from) reads the same strings
    tie = {"[[A=B]]": "tie", "[[A=B=Good]]": "tie", "[[A=B=Bad]]": "tie"}
    for text in GENAI_OUTPUTS:
        v = genai_oracle_vote(text)
        assert parse_genai_vote(text).winner == (side.get(v) or tie.get(v) if v else None), text


def test_genai_swapped_preset_run_reads_two_labels_the_same_way():
    """A run of the preset that is not the protocol (official_format False) scores no_ties from the parsed winners:
    a two-label line is no verdict there as well."""
    from deltarubric.rubrics.parsing import parse_genai_vote

    preds = [
        Prediction(
            key=str(i), gold="leftvote", winner=parse_genai_vote(t).winner, samples=[("AB", parse_genai_vote(t).winner)]
        )
        for i, t in enumerate(["[[A>B]] or [[B>A]]", "[[A>B]]", "[[A>B]] [[A>B]]"])
    ]
    assert close(GENAI.score(preds, "image_generation")["no_ties"], 100 / 3)


@needs_external
def test_genai_published_outputs_equal_the_oracle():
    for path in sorted((EXTERNAL / "genai-bench/official_results").glob("*/*/pairwise.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert [genai_oracle_vote(r["response"]) for r in rows] == [r["model_vote"] for r in rows]
        oracle = 100 * sum(genai_oracle_vote(r["response"]) in ALLOWED[r["human_vote"]] for r in rows) / len(rows)
        assert close(GENAI.score(GENAI.read_official(path), path.parts[-3])["official_4way"], oracle), path


def test_genai_preset_keeps_the_official_answer_constraints():
    from deltarubric.rubrics.prompts import load_method, render

    method = load_method("genai_bench_official")
    for task, context in (("image_generation", []), ("image_editing", ["<img>"]), ("video_generation", [])):
        text = render(method.stages[0].user, dict(task_type=task, question="q", context=context, a="<a>", b="<b>"))
        assert "only one of the following choices" in text and "final verdict" in text
        assert text.index("Explain your evaluation") < text.index("final verdict")  # explanation first, then verdict
        assert text.endswith(
            "1. Model A is better: [[A>B]]\n2. Model B is better: [[B>A]]\n"
            "3. Tie, relatively the same acceptable quality: [[A=B=Good]]\n4. Both are bad: [[A=B=Bad]]"
        )
