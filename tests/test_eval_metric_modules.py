"""The local `evaluate` metric modules load offline and give exactly the scorers' numbers."""

from __future__ import annotations

import math
from pathlib import Path

import evaluate
import pytest

from deltarubric.eval.core import Prediction, json_scores
from deltarubric.eval.registry import get_benchmark

METRICS = Path(__file__).resolve().parents[1] / "eval" / "metrics"


def load(name: str):
    return evaluate.load(str(METRICS / name))


def test_vl_rewardbench_module_matches_the_scorer():
    predictions, references = ["A", "B", "", "A", "tie"], ["A", "A", "B", "A", "B"]
    groups = ["general", "general", "hallucination", "reasoning", "reasoning"]
    result = load("vl_rewardbench").compute(predictions=predictions, references=references, groups=groups)
    assert result["strict_overall"] == pytest.approx(40.0) and result["strict_reasoning"] == pytest.approx(50.0)
    assert result["official_overall"] == pytest.approx(200 / 3)  # the unparsable and the tie are dropped
    direct = get_benchmark("vl-rewardbench").score(
        [
            Prediction(key=str(i), gold=r, group=g, winner=p or None, samples=[("AB", p or None)], parse_ok=bool(p))
            for i, (p, r, g) in enumerate(zip(predictions, references, groups))
        ],
        "default",
    )
    assert result == json_scores(direct)


def test_genai_bench_module_official_from_raw_outputs():
    raw = ["[[A>B]]", "[[A>B]]", "[[A=B]]", "none"]
    result = load("genai_bench").compute(
        predictions=["A", "A", "tie", ""],
        references=["leftvote", "rightvote", "tievote", "bothbad_vote"],
        raw_outputs=raw,
        task="image_generation",
    )
    assert result["official_4way"] == pytest.approx(50.0) and result["no_ties"] == pytest.approx(50.0)
    without_raw = load("genai_bench").compute(predictions=["A"], references=["leftvote"])
    assert without_raw["official_4way"] is None and without_raw["no_ties"] == 100.0


def test_mm_rlhf_module_acc_plus_uses_ids():
    result = load("mm_rlhf_rewardbench").compute(
        predictions=["A", "B", "A"], references=["A", "A", "A"], ids=["x", "x", "y"], groups=["mcq", "mcq", "long"]
    )
    assert result["accuracy"] == pytest.approx(200 / 3) and result["acc_plus"] == pytest.approx(50.0)


def test_multimodal_rewardbench_module_loads():
    result = load("multimodal_rewardbench").compute(
        predictions=["A", "B"], references=["A", "A"], groups=["vqa", "vqa"]
    )
    assert result["strict_overall"] == pytest.approx(50.0) and not math.isnan(result["official_overall"])
