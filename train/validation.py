"""Held-out validation through the real `Judge`: the production prompts and parsers, on the model being trained.

Every `eval_steps` optimizer steps (and before the first), each process judges its share of the held-out pairs
greedily in a seeded random A/B order; the figures are gathered, added to the trainer's metrics (TRL's trainers log
them with the next logged step, so they reach TensorBoard/W&B and `trainer_state.json`) and appended to
`<output_dir>/validation.jsonl` with their exact step.

Under DeepSpeed ZeRO-3 or FSDP the weights are sharded and generation would need every rank in lockstep; validation
is skipped there with a warning (judge saved checkpoints with `deltarubric eval run pairs` instead).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from deltarubric.rm.backends.hf import TransformersBackend
from deltarubric.rm.config import JudgeConfig
from deltarubric.rm.judge import Judge
from deltarubric.rm.pairs import LabelledPair
from deltarubric.rubrics.parsing import parse_checklist

log = logging.getLogger(__name__)


def judge_pairs(
    model: Any,
    processor: Any,
    judge: str,
    pairs: list[LabelledPair],
    *,
    max_tokens: int = 512,
    seed: int = 0,
    batch_size: int = 16,
    max_pixels: int | None = None,
) -> list[dict[str, Any]]:
    """One row per pair: the verdict's winner, whether it is right, and planner statistics (DeltaRubric)."""
    was_training, side = model.training, processor.tokenizer.padding_side
    model.eval()
    try:
        backend = TransformersBackend.from_model(model, processor, batch_size=batch_size)
        config = JudgeConfig(
            model="<training>",
            judge=judge,
            presentation="random",
            max_pixels=max_pixels,
            sampling={"temperature": 0.0, "max_tokens": max_tokens, "seed": seed, "top_logprobs": 0},
        )
        verdicts = Judge(config, backend=backend).judge_batch([p.request for p in pairs])
    finally:
        processor.tokenizer.padding_side = side
        model.train(was_training)
    rows = []
    for pair, v in zip(pairs, verdicts):
        planner = next((t for k, t in v.raw.items() if k.endswith("/planner")), None)
        rows.append(
            {
                "id": pair.request.id,
                "label": pair.label,
                "winner": v.winner,
                "correct": v.winner == pair.label,
                "parse_ok": v.parse_ok,
                "error": v.error,
                "checklist_len": len(v.checklist) if planner is not None else None,
                "leaked": parse_checklist(planner).leaked > 0 if planner is not None else None,
            }
        )
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Accuracy (strict: unparsable is wrong), parse failures and planner figures, in percent / mean items."""
    n = max(len(rows), 1)
    out = {
        "accuracy": 100.0 * sum(r["correct"] for r in rows) / n,
        "parse_failure_rate": 100.0 * sum(not r["parse_ok"] for r in rows) / n,
        "error_rate": 100.0 * sum(r["error"] is not None for r in rows) / n,
        "n": float(len(rows)),
    }
    planned = [r for r in rows if r["checklist_len"] is not None]
    if planned:
        out["checklist_len"] = sum(r["checklist_len"] for r in planned) / len(planned)
        out["leak_rate"] = 100.0 * sum(bool(r["leaked"]) for r in planned) / len(planned)
    return out


class JudgeValidation(TrainerCallback):
    """Judge held-out pairs every `every` steps and log `val/<metric>`; attach with `attach(trainer)`."""

    def __init__(
        self,
        pairs: list[LabelledPair],
        judge: str,
        *,
        every: int = 5,
        max_tokens: int = 512,
        max_pixels: int | None = None,
    ) -> None:
        self.pairs, self.judge, self.every = pairs, judge, every
        self.max_tokens, self.max_pixels = max_tokens, max_pixels
        self.trainer: Any = None
        self.history: list[dict[str, float]] = []

    def attach(self, trainer: Any) -> JudgeValidation:
        """Add to `trainer` (a TRL trainer: its `_metrics` carry the figures into the logs)."""
        acc = trainer.accelerator
        if (
            getattr(acc.state, "deepspeed_plugin", None) is not None
            and acc.state.deepspeed_plugin.zero_stage == 3
            or (getattr(acc.state, "fsdp_plugin", None) is not None)
        ):
            log.warning(
                "held-out validation is skipped under ZeRO-3/FSDP (sharded weights); evaluate saved checkpoints"
            )
            return self
        self.trainer = trainer
        trainer.add_callback(self)
        return self

    def run(self, step: int) -> dict[str, float]:
        from accelerate.utils import gather_object

        t = self.trainer
        acc = t.accelerator
        mine = self.pairs[acc.process_index :: acc.num_processes]
        rows = judge_pairs(
            acc.unwrap_model(t.model),
            t.processing_class,
            self.judge,
            mine,
            max_tokens=self.max_tokens,
            max_pixels=self.max_pixels,
        )
        rows = gather_object(rows) if acc.num_processes > 1 else rows
        figures = summarize(rows)
        self.history.append({"step": float(step), **figures})
        if acc.is_main_process:
            path = Path(t.args.output_dir) / "validation.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(json.dumps({"step": step, **figures}) + "\n")
        return figures

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 0:
            self.run(0)  # the starting point of every curve
        elif self.trainer.accelerator.is_main_process:
            # Resumed: rows past the checkpoint came from the interrupted run and are about to be measured again.
            path = Path(args.output_dir) / "validation.jsonl"
            if path.exists():
                keep = [
                    x for x in path.read_text().splitlines() if x.strip() and json.loads(x)["step"] <= state.global_step
                ]
                path.write_text("".join(x + "\n" for x in keep))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.every and state.global_step % self.every == 0:
            figures = self.run(state.global_step)
            # Into the trainer's own metrics rather than a log call of ours: a log call from a callback would swallow
            # the trainer's loss line for this step.
            for k, v in figures.items():
                if k != "n":
                    self.trainer._metrics["train"][f"val/{k}"].append(v)
