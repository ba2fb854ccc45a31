"""The base of the local `evaluate` metric modules in eval/metrics/: each benchmark's own scorer behind evaluate's API.

Hub metrics cannot be fetched offline, but a local module loads anywhere:

    import evaluate
    metric = evaluate.load("eval/metrics/vl_rewardbench")        # a folder holding vl_rewardbench.py
    metric.compute(predictions=["A", "B", ""], references=["A", "A", "B"], groups=["general", "reasoning", "general"])

`predictions` are the judge's decisions ("A", "B", "tie", or "" when unparsable); `references` the gold labels
("A"/"B", or GenAI-Bench's vote types). Optional: `groups` (the benchmark's categories), `ids` (MM-RLHF's pair
groups, for ACC+), `raw_outputs` (the judge's text in the benchmark's official format, for the official parsers),
`task` (GenAI-Bench). The result is the same dict `deltarubric eval score --json` prints.
"""

from __future__ import annotations

from typing import Any

import datasets
import evaluate

from deltarubric.eval.core import Prediction, json_scores, vote_label
from deltarubric.eval.registry import get_benchmark


class BenchmarkMetric(evaluate.Metric):
    benchmark: str = ""

    def _info(self) -> evaluate.MetricInfo:
        b = get_benchmark(self.benchmark)
        return evaluate.MetricInfo(
            description=b.description,
            citation="",
            inputs_description=__doc__,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(
        self,
        predictions: list[str],
        references: list[str],
        groups: list[str] | None = None,
        ids: list[str] | None = None,
        raw_outputs: list[str] | None = None,
        task: str | None = None,
    ) -> dict[str, Any]:
        b = get_benchmark(self.benchmark)
        n = len(predictions)
        preds = [
            Prediction(
                key=str(i),
                gold=references[i],
                group=groups[i] if groups else "",
                winner=predictions[i] or None,
                samples=[("AB", predictions[i] or None)],
                labels=[vote_label(b.official_judge, raw_outputs[i])] if raw_outputs else [],
                raw=raw_outputs[i] if raw_outputs else None,
                official_format=raw_outputs is not None,
                parse_ok=bool(predictions[i]),
                meta={"id": ids[i] if ids else str(i)},
            )
            for i in range(n)
        ]
        return json_scores(b.score(preds, task or b.tasks[0]))
