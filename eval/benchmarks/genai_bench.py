"""GenAI-Bench (TIGER-Lab): human votes on pairs of generated images, edits and videos.

Official metric (leaderboard, split test_v1; `inference.py:parse_response` and `show_results.py` @ f0b0334, exactly):
the judge must output only one of four verdicts, `[[A>B]]`, `[[B>A]]`, `[[A=B=Good]]`, `[[A=B=Bad]]`; the verdict
string is the greedy `[[...]]` match (`rubrics.parsing.genai_vote`: from the first '[[' to the last ']]' of its line,
so two labels on one line are one string that is no verdict) and must be exactly one the human vote allows; no match
is wrong; accuracy over all rows, ties included. Left image = A always, no swap.
"No ties" (ours) is the variant most papers quote: only left/right-vote rows, a decisive A/B verdict must match. It
reads the same verdict strings (official-format text) or the parsed winners (other runs), so a two-label line is
wrong there too. UnifiedReward's "w/o ties" differs: see docs/eval.md.
"""

from __future__ import annotations

from pathlib import Path

from eval.core import EvalItem, Prediction, decided, judge_stats, pct
from eval.io import media_path, read_records
from eval.registry import Benchmark, Scores, register
from rm.types import JudgeRequest
from rubrics.parsing import genai_vote

TASKS = ("image_generation", "image_edition", "video_generation")
_TASK_TYPE = {"image_generation": "image_generation", "image_edition": "image_editing", "video_generation": "video_generation"}
# Which verdict strings count as correct for each human vote (official table; [[A=B]] fits both kinds of tie).
CORRECT_VOTES = {
    "leftvote": {"[[A>>B]]", "[[A>B]]"},
    "rightvote": {"[[B>>A]]", "[[B>A]]"},
    "tievote": {"[[A=B]]", "[[A=B=Good]]"},
    "bothbad_vote": {"[[A=B]]", "[[A=B=Bad]]"},
}
_DECISIVE = {"[[A>>B]]": "A", "[[A>B]]": "A", "[[B>>A]]": "B", "[[B>A]]": "B"}
_TIES = {"[[A=B]]", "[[A=B=Good]]", "[[A=B=Bad]]"}
_GOLD_SIDE = {"leftvote": "A", "rightvote": "B"}


def official_vote(text: str | None) -> str | None:
    return genai_vote(text or "")


def score(preds: list[Prediction], task: str) -> Scores:
    """official_4way: % correct over all rows (needs official-format raw text). no_ties: % of left/right rows won."""
    official = all(p.official_format for p in preds) and bool(preds)
    decisions = [_DECISIVE.get(official_vote(p.raw) or "") if official else decided(p) for p in preds]
    pairs = [(d, _GOLD_SIDE[p.gold]) for d, p in zip(decisions, preds) if p.gold in _GOLD_SIDE]
    return {
        "official_4way": pct(sum(official_vote(p.raw) in CORRECT_VOTES[p.gold] for p in preds), len(preds))
        if official
        else float("nan"),
        "no_ties": pct(sum(d == g for d, g in pairs), len(pairs)),
        **judge_stats(preds),
    }


def read_official(path: Path) -> list[Prediction]:
    """The official per-sample file (results/<task>/<model>/pairwise.jsonl): idx, response, human_vote."""
    preds = []
    for row in read_records(path):
        vote = official_vote(row["response"]) or ""
        winner = _DECISIVE.get(vote) or ("tie" if vote in _TIES else None)
        preds.append(
            Prediction(key=str(row["idx"]), gold=row["human_vote"], raw=row["response"], official_format=True,
                       winner=winner, samples=[("AB", winner)], parse_ok=winner is not None)  # fmt: skip
        )
    return preds


def load(data_dir: Path, task: str) -> list[EvalItem]:
    """`<data_dir>/<task>.jsonl`: id, vote_type, the prompt fields, and media paths relative to data_dir
    (left_image/right_image[/source_image], or left_video/right_video). See docs/eval.md for the export recipe."""
    if task not in TASKS:
        raise ValueError(f"GenAI-Bench task must be one of {', '.join(TASKS)}; got {task!r}")
    items = []
    for row in read_records(data_dir / f"{task}.jsonl"):
        kind = "video" if task == "video_generation" else "image"
        a, b = ({kind: media_path(data_dir, row[f"{side}_{kind}"])} for side in ("left", "right"))
        key = str(row.get("id", row.get("idx")))
        editing = task == "image_edition"
        request = JudgeRequest(
            id=key,
            task_type=_TASK_TYPE[task],
            question=row["instruct_prompt"] if editing else row["prompt"],
            images=[media_path(data_dir, row["source_image"])] if editing else [],
            a=a,
            b=b,
        )
        meta = {k: row[k] for k in ("source_prompt", "target_prompt") if k in row}
        items.append(EvalItem(key=key, request=request, gold=row["vote_type"], group=row["vote_type"], meta=meta))
    return items


BENCHMARK = register(
    Benchmark(
        name="genai-bench",
        description="GenAI-Bench (TIGER-Lab): pairs of generated images, edits and videos with human votes.",
        tasks=TASKS,
        load=load,
        score=score,
        read_official=read_official,
        official_judge="genai_bench_official",
        official_order="given",
        headline=("official_4way", "no_ties"),
        data_revision="TIGER-Lab/GenAI-Bench test_v1 (leaderboard); official_results @ f0b0334",
    )
)
