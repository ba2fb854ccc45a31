"""Scorers: against the benchmarks' published per-sample outputs, the data itself, and hand-computed cases."""

from __future__ import annotations

import json
import math
import os
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from deltarubric.eval.core import Prediction
from deltarubric.eval.registry import get_benchmark
from deltarubric.rubrics.parsing import genai_vote, parse_mmrb

EXTERNAL = Path(os.environ.get("DELTARUBRIC_EXTERNAL", Path(__file__).resolve().parents[2] / "shared" / "external"))
# Outside CI a clone without ../shared skips these; in CI (shared/ beside the clone) they must run, never skip.
needs_external = pytest.mark.skipif(
    not EXTERNAL.is_dir() and not os.environ.get("CI"), reason=f"published benchmark outputs not at {EXTERNAL}"
)
GENAI = get_benchmark("genai-bench")


def leaderboard() -> dict[str, dict[str, float]]:
    """genaibench_results.txt as {model: {column: value}}."""
    table = (EXTERNAL / "genai-bench/official_results/genaibench_results.txt").read_text()
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines() if line.startswith("|")
    ]
    header = rows[0]
    return {r[0]: {h: float(v) for h, v in zip(header[2:], r[2:])} for r in rows[2:]}


@needs_external
def test_genai_bench_reproduces_every_leaderboard_cell_we_have_outputs_for():
    board = leaderboard()
    columns = {
        "image_generation": "Image Generation",
        "image_edition": "Image Editing",
        "video_generation": "Video Generation",
    }
    models = sorted(p.name for p in (EXTERNAL / "genai-bench/official_results/image_generation").iterdir())
    assert models == ["gemini-1.5-pro", "gpt4o", "idefics2", "llava", "random"]
    for model in models:
        cells = {}
        for task, column in columns.items():
            preds = GENAI.read_official(EXTERNAL / f"genai-bench/official_results/{task}/{model}/pairwise.jsonl")
            cells[column] = round(GENAI.score(preds, task)["official_4way"], 2)
            assert cells[column] == board[model][column], (model, task)
        assert round(sum(cells.values()) / 3, 2) == board[model]["Average"], model


@needs_external
def test_genai_bench_parser_agrees_with_the_published_parsed_votes():
    for path in sorted((EXTERNAL / "genai-bench/official_results").glob("*/*/pairwise.jsonl")):
        for row in map(json.loads, path.read_text().splitlines()):
            from deltarubric.eval.benchmarks.genai_bench import CORRECT_VOTES

            assert genai_vote(row["response"]) == row["model_vote"]
            assert (genai_vote(row["response"]) in CORRECT_VOTES[row["human_vote"]]) == row["correct"]


@needs_external
def test_genai_bench_no_ties_variant_matches_the_documented_calibration():
    # benchmarks.md §2.5: non-tie items, tie/unparsable verdicts wrong, gpt4o on test_v1
    expected = {"image_generation": 55.44, "image_edition": 72.17, "video_generation": 68.86}
    for task, value in expected.items():
        preds = GENAI.read_official(EXTERNAL / f"genai-bench/official_results/{task}/gpt4o/pairwise.jsonl")
        assert round(GENAI.score(preds, task)["no_ties"], 2) == value


def test_genai_bench_hand_computed():
    rows = [
        ("leftvote", "x [[A>B]]"),  # correct, decisive
        ("rightvote", "[[A>B]]"),  # wrong
        ("tievote", "[[A=B]]"),  # correct: [[A=B]] fits both ties
        ("bothbad_vote", "[[A=B=Good]]"),  # wrong
        ("rightvote", "no verdict"),  # wrong
    ]
    preds = [
        Prediction(key=str(i), gold=g, raw=r, labels=[genai_vote(r)], official_format=True)
        for i, (g, r) in enumerate(rows)
    ]
    s = GENAI.score(preds, "image_generation")
    assert s["official_4way"] == pytest.approx(40.0)  # 2 of 5
    assert s["no_ties"] == pytest.approx(100 / 3)  # left/right rows: 1 of 3
    ours = [
        p.model_copy(update={"official_format": False, "winner": w})
        for p, w in zip(preds, ["A", "B", "tie", "A", None])
    ]
    s = GENAI.score(ours, "image_generation")
    assert math.isnan(s["official_4way"])  # our judges' text is not in the four-way format
    assert s["no_ties"] == pytest.approx(200 / 3)  # A on leftvote, B on rightvote, None wrong


VLRB = get_benchmark("vl-rewardbench")


def test_vl_rewardbench_groups_match_the_data():
    items = VLRB.load(Path("/nonexistent"), "default")  # metadata from the shipped copy
    assert len(items) == 1250 and len({i.key for i in items}) == 1250
    assert Counter(i.group for i in items) == {"hallucination": 749, "general": 183, "reasoning": 318}
    assert Counter(i.gold for i in items) == {"A": 1245, "B": 5}
    # the official id rule gives the same group as the image folder for every row
    from deltarubric.eval.benchmarks.vl_rewardbench import _SUBSET_GROUP

    folder_group = {"reasoning_tasks": "reasoning", **_SUBSET_GROUP}
    for item in items:
        folder = Path(item.request.images[0]).parts[-2]
        assert folder_group[folder] == item.group, item.key


@needs_external
def test_shipped_vl_rewardbench_copy_is_the_documented_release():
    import hashlib

    shipped = Path(__file__).resolve().parents[1] / "data/vl-rewardbench/data.jsonl"
    assert shipped.read_bytes() == (EXTERNAL / "vl-rewardbench/data.jsonl").read_bytes()
    assert hashlib.sha256(shipped.read_bytes()).hexdigest().startswith("8e6d7614494d5866")


def vlrb_pred(group: str, gold: str, *samples: tuple[str, str | None]) -> Prediction:
    winners = {w for _, w in samples}
    winner = winners.pop() if len(winners) == 1 else ("tie" if None not in winners else None)
    return Prediction(
        key=str(random.random()),
        gold=gold,
        group=group,
        winner=winner,
        samples=list(samples),
        parse_ok=None not in {w for _, w in samples},
    )


def test_vl_rewardbench_hand_computed():
    preds = [
        vlrb_pred("general", "A", ("AB", "A"), ("BA", "A")),  # right in both orders
        vlrb_pred("general", "A", ("AB", "A"), ("BA", "B")),  # split: strict wrong (tie), official dropped
        vlrb_pred("hallucination", "B", ("AB", "B"), ("BA", "B")),  # right
        vlrb_pred("hallucination", "A", ("AB", None), ("BA", None)),  # unparsable: strict wrong, official dropped
        vlrb_pred("reasoning", "A", ("AB", "B"), ("BA", "B")),  # wrong
    ]
    s = VLRB.score(preds, "default")
    assert s["strict_overall"] == pytest.approx(40.0)  # 2 / 5
    assert (s["strict_general"], s["strict_hallucination"], s["strict_reasoning"]) == (50.0, 50.0, 0.0)
    assert s["strict_macro"] == pytest.approx(100 / 3)
    assert s["official_overall"] == pytest.approx(200 / 3)  # kept: items 1, 3, 5 -> 2 agree of 3
    assert (s["official_general"], s["official_hallucination"], s["official_reasoning"]) == (100.0, 100.0, 0.0)
    assert s["swap_consistency"] == pytest.approx(75.0)  # 3 of the 4 items parsed in both orders agree
    # first shown = A in AB, B in BA. Picks of the first shown: item 1 AB, item 2 AB and BA, items 3 and 5 BA -> 5 / 8
    assert s["first_position_rate"] == pytest.approx(62.5)
    assert s["parse_failure_rate"] == pytest.approx(20.0)


MMRB = get_benchmark("multimodal-rewardbench")


def test_multimodal_rewardbench_official_fallback_is_one_seeded_stream():
    golds = ["A", "B", "B", "A", "A", "B"]
    outputs = ["[[A]]", "nothing", "[[B]] and [[A]]", "???", "[[B]]", "..."]
    preds = [
        Prediction(key=f"vqa_{i}", gold=g, raw=o, labels=[parse_mmrb(o).label], official_format=True, group="vqa")
        for i, (g, o) in enumerate(zip(golds, outputs))
    ]
    rng = random.Random(123)
    guesses = iter("A" if rng.random() < 0.5 else "B" for _ in range(3))  # drawn for rows 1, 3, 5 in order
    choices = ["A", next(guesses), "A", next(guesses), "B", next(guesses)]  # '[[A]]' is checked first
    expected = [c == g for c, g in zip(choices, golds)]
    s = MMRB.score(preds, "default")
    assert s["official_overall"] == pytest.approx(100 * sum(expected) / 6)
    assert s["strict_overall"] == pytest.approx(100 * 1 / 6)  # only row 0 is right without guessing
    assert s["both_tags_rate"] == pytest.approx(100 / 6)


def test_multimodal_rewardbench_categories_and_schema_round_trip(tmp_path):
    from deltarubric.eval.benchmarks.multimodal_rewardbench import category, write_official

    assert category("pairs_12", "safety") == "safety/bias" and category("x_1", "safety") == "safety/toxicity"
    assert category("math_3", "reasoning") == "reasoning/math" and category("code_3", "reasoning") == "reasoning/coding"
    preds = [
        Prediction(
            key="pairs_1", gold="A", group="safety/bias", winner="A", meta={"Image": "i.png", "Category": "safety"}
        ),
        Prediction(
            key="vqa_2", gold="B", group="vqa", winner=None, raw="unsure", meta={"Image": "j.png", "Category": "vqa"}
        ),
    ]
    path = tmp_path / "preds.jsonl"
    write_official(preds, path)
    again = MMRB.read_official(path)
    assert [(p.key, p.gold, p.winner, p.group) for p in again] == [
        ("pairs_1", "A", "A", "safety/bias"),
        ("vqa_2", "B", None, "vqa"),
    ]


@needs_external
def test_multimodal_rewardbench_reads_the_official_example_file():
    preds = MMRB.read_official(EXTERNAL / "multimodal-rewardbench/example_predictions.jsonl")
    assert len(preds) == 2 and all(p.official_format for p in preds)
    s = MMRB.score(preds, "default")
    truth = [p.winner == p.gold for p in preds]  # both outputs carry a tag, so no guessing
    assert s["official_overall"] == pytest.approx(100 * sum(truth) / 2)


MMRLHF = get_benchmark("mm-rlhf-rewardbench")


def test_mm_rlhf_loader_and_metric():
    items = MMRLHF.load(Path("/nonexistent"), "default")
    assert len(items) == 170 and len({i.meta["id"] for i in items}) == 46
    assert Counter(i.group for i in items) == {"mcq": 42, "long": 37, "short": 34, "safety": 32, "video": 25}
    assert sum(i.request.task_type == "video_understanding" for i in items) == 25
    # ACC+ by hand: id x has 2 pairs (1 right), id y has 1 pair (right); a tie is wrong (strict >)
    preds = [
        Prediction(key="1", gold="A", group="mcq", winner="A", meta={"id": "x"}),
        Prediction(key="2", gold="A", group="mcq", winner="tie", meta={"id": "x"}),
        Prediction(key="3", gold="A", group="long", winner="A", meta={"id": "y"}),
    ]
    s = MMRLHF.score(preds, "default")
    assert s["accuracy"] == pytest.approx(200 / 3) and s["acc_plus"] == pytest.approx(50.0)
    assert s["accuracy_mcq"] == pytest.approx(50.0) and s["acc_plus_long"] == pytest.approx(100.0)


def test_unknown_benchmark_lists_the_registered_ones():
    with pytest.raises(
        ValueError,
        match=re.escape("available: genai-bench, mm-rlhf-rewardbench, multimodal-rewardbench, pairs, vl-rewardbench"),
    ):
        get_benchmark("rewardbench")


def test_a_split_between_orders_is_wrong_under_strict_even_when_p_a_broke_the_tie():
    # the aggregate picked A by mean p_a, but the orders disagreed: strict metrics count that as no decision
    split = Prediction(
        key="s", gold="A", group="general", winner="A", samples=[("AB", "A"), ("BA", "B")], parse_ok=True
    )
    assert VLRB.score([split], "default")["strict_overall"] == 0.0
    assert MMRLHF.score([split.model_copy(update={"meta": {"id": "x"}})], "default")["accuracy"] == 0.0
    agreed = split.model_copy(update={"samples": [("AB", "A"), ("BA", "A")]})
    assert VLRB.score([agreed], "default")["strict_overall"] == 100.0


def test_scorers_read_the_vote_label_the_verdict_kept():
    """A run's official votes are the labels its verdicts recorded; the raw text is not read again."""
    from deltarubric.eval.core import EvalItem
    from deltarubric.rm.types import OrderResult, Verdict

    def pred(label: str, gold: str, group: str = "general", judge: str = "vlrb_official") -> Prediction:
        verdict = Verdict(
            judge=judge,
            orders=[OrderResult(shown_order="AB", winner=None, parse_ok=False, label=label)],
            raw={"AB/judge": "(text that holds no vote)"},
        )
        item = EvalItem.model_construct(key=label, gold=gold, group=group, meta={})
        return Prediction.from_verdict(item, verdict, official_format=True)

    # VL-RewardBench: 'Answer 3' is agree for cal.py (only the rejected position is reject)
    scores = VLRB.score([pred("3", "A"), pred("2", "A")], "default")
    assert scores["official_overall"] == 50.0 and scores["strict_overall"] == 0.0
    # GenAI-Bench: the exact verdict string, both kinds of tie told apart
    votes = [pred("[[A=B=Bad]]", "bothbad_vote", judge="genai_bench_official"), pred("[[A=B=Good]]", "bothbad_vote")]
    assert GENAI.score(votes, "image_generation")["official_4way"] == 50.0


def test_a_verdict_recorded_without_labels_is_read_from_its_raw_text():
    """results.jsonl lines written before orders kept their label: the label is read once from the raw text."""
    from deltarubric.eval.core import EvalItem
    from deltarubric.rm.types import Verdict

    old = Verdict.model_validate(
        {
            "judge": "vlrb_official",
            "orders": [{"order": "BA", "winner": None, "parse_ok": False}],
            "raw": {"BA/judge": "Overall Judgment: Answer 3 is better."},
        }
    )
    item = EvalItem.model_construct(key="k", gold="A", group="general", meta={})
    assert Prediction.from_verdict(item, old, official_format=True).labels == ["3"]
