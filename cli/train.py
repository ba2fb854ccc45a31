"""`deltarubric train grpo|sft|msrl|views|make-synthetic`: train a judge on labelled pairs.

`grpo` and `sft` take TRL's own flags (every field of `JudgeGRPOConfig` / `JudgeSFTConfig` and `JudgeArguments`,
with `--config recipe.yaml` for a file of them), so everything TRL documents works here. `--out` is short for
`--output_dir`. Run them under `accelerate launch` for many GPUs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from deltarubric.cli.errors import CLIError
from deltarubric.train.launch import load_model, parse_train_args, peft_config, require_train_extra, run

app = typer.Typer(
    help="Train a judge: GRPO (DeltaRubric multi-role or one-step), SFT warm starts, MSRL's stages, "
    "a synthetic testbed.",
    no_args_is_help=True,
)
_PASS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command(context_settings=_PASS, add_help_option=False)
def grpo(ctx: typer.Context) -> None:
    """GRPO on labelled pairs. deltarubric: planner + verifier rollouts, decoupled advantages; direct/msrl: one step.

    Example: deltarubric train grpo --judge deltarubric --model Qwen/Qwen3-VL-8B-Instruct --data train.jsonl
    --eval_data val.jsonl --out ckpt/dr-8b   (all flags: deltarubric train grpo --help)
    """
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is TRL-experimental; pinned and tested
    require_train_extra()
    from deltarubric.rm.pairs import read_pairs
    from deltarubric.train.config import JudgeGRPOConfig
    from deltarubric.train.grpo import JudgeGRPOTrainer

    judge_args, config = parse_train_args(JudgeGRPOConfig, list(ctx.args))
    pairs = read_pairs(judge_args.data)
    val = read_pairs(judge_args.eval_data)[: judge_args.eval_limit] if judge_args.eval_data else None
    model, processor = load_model(judge_args, config)
    trainer = JudgeGRPOTrainer(
        model,
        config,
        pairs,
        processing_class=processor,
        max_pixels=judge_args.max_pixels,
        peft_config=peft_config(judge_args),
    )
    run(trainer, processor, config, judge_args, val, default_eval_steps=5)


@app.command(context_settings=_PASS, add_help_option=False)
def sft(ctx: typer.Context) -> None:
    """Supervised warm start: --targets traces (gold checklists and verdicts), verdicts (label only) or captions.

    Example: deltarubric train sft --judge deltarubric --model Qwen/Qwen3-VL-8B-Instruct --data traces.jsonl
    --out ckpt/warm   (all flags: deltarubric train sft --help)
    """
    require_train_extra()
    from deltarubric.rm.pairs import read_pairs
    from deltarubric.train.config import JudgeSFTConfig
    from deltarubric.train.sft import make_sft_trainer, sft_examples

    judge_args, config = parse_train_args(JudgeSFTConfig, list(ctx.args))
    pairs = read_pairs(judge_args.data)
    val = read_pairs(judge_args.eval_data)[: judge_args.eval_limit] if judge_args.eval_data else None
    if val and config.targets.startswith("captions"):
        raise CLIError("--eval_data judges pairs; a captions stage has no verdicts to validate")
    rows = sft_examples(
        pairs,
        config.judge,
        config.targets,
        order_seed=config.order_seed,
        max_pixels=judge_args.max_pixels,
        layouts=config.caption_layouts,
        trace_caption=config.trace_caption,
    )
    model, processor = load_model(judge_args, config)
    trainer = make_sft_trainer(model, config, rows, processing_class=processor, peft_config=peft_config(judge_args))
    run(trainer, processor, config, judge_args, val, default_eval_steps=50)


@app.command(context_settings=_PASS, add_help_option=False)
def msrl(ctx: typer.Context) -> None:
    """MSRL's staged transfer: text SFT, text GRPO, caption GRPO, CMKD SFT, multimodal GRPO (docs/training.md).

    Example: deltarubric train msrl --config recipes/msrl_qwen3vl_8b.yaml --out ckpt/msrl-8b; later
    deltarubric train msrl --resume ckpt/msrl-8b --stages caption,cmkd. --KEY VALUE sets a field for every stage,
    --STAGE.KEY VALUE for one (all: deltarubric train msrl --help)
    """
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    require_train_extra()
    from deltarubric.train.msrl import main

    main(list(ctx.args))


@app.command()
def views(
    src: Annotated[Path, typer.Argument(help="Labelled-pair JSONL whose pairs carry a `caption`.")],
    out: Annotated[Path, typer.Option(help="Folder to write caption.jsonl and text.jsonl into.")],
) -> None:
    """Write MSRL's other views of image pairs: the caption view (image replaced by its caption, stage 2a) and the
    text view (the scene told as prose, a text preference pair: stage 1 on the testbed)."""
    from deltarubric.train.views import write_views

    print(json.dumps(write_views(src, out)))


@app.command("make-synthetic")
def make_synthetic_cmd(
    out: Annotated[
        Path, typer.Argument(help="Folder to write images/, train.jsonl, val.jsonl and manifest.json into.")
    ],
    n: Annotated[int, typer.Option(help="Number of pairs over all splits.")] = 2000,
    seed: Annotated[int, typer.Option(help="Generator seed; the same seed writes the same bytes.")] = 0,
    val_fraction: Annotated[float, typer.Option(help="Share of pairs held out (on scenes never trained on).")] = 0.2,
) -> None:
    """Write the synthetic visual-preference testbed: 64x64 grid scenes, labelled pairs with one planted error,
    captions and gold traces. Smoke-tests a set-up and proves learning without real weights (docs/training.md)."""
    from deltarubric.train.synthetic import make_synthetic

    paths = make_synthetic(out, n, seed, splits={"train": 1 - val_fraction, "val": val_fraction})
    print(json.dumps({k: str(v) for k, v in paths.items()}))
