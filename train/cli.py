"""`deltarubric train grpo|sft|msrl|views|make-synthetic`: train a judge on labelled pairs.

`grpo` and `sft` take TRL's own flags (every field of `JudgeGRPOConfig` / `JudgeSFTConfig` and `JudgeArguments`,
with `--config recipe.yaml` for a file of them), so everything TRL documents works here. `--out` is short for
`--output_dir`. Run them under `accelerate launch` for many GPUs.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Train a judge: GRPO (DeltaRubric multi-role or one-step), SFT warm starts, MSRL's stages, a synthetic testbed.",
    no_args_is_help=True,
)
_PASS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
log = logging.getLogger(__name__)


def _require_train_extra() -> None:
    try:
        import trl  # noqa: F401
    except ImportError as e:
        raise ImportError('training needs the train extra: pip install -e ".[train]" (TRL, accelerate, peft)') from e


def _argv(args: list[str]) -> list[str]:
    """`--out DIR` and `--out=DIR` are short for `--output_dir`."""
    return ["--output_dir" if a == "--out" else "--output_dir=" + a[6:] if a.startswith("--out=") else a for a in args]


def parse_train_args(config_cls: type, args: list[str]) -> tuple[Any, Any]:
    """(JudgeArguments, config) from flags and an optional --config YAML, TRL-style."""
    _require_train_extra()
    from trl import TrlParser

    from deltarubric.train.config import JudgeArguments

    parser = TrlParser((JudgeArguments, config_cls))
    judge_args, config = parser.parse_args_and_config(_argv(args))
    if not judge_args.model or not judge_args.data:
        raise typer.BadParameter("give --model (checkpoint or HF id) and --data (labelled-pair JSONL)")
    if not config.output_dir or config.output_dir == "trainer_output":
        raise typer.BadParameter("give --out DIR: where checkpoints and the final model go")
    from deltarubric.rubrics.prompts import load_method

    load_method(config.judge)  # an unknown judge fails here, before a model is loaded
    sharded = (
        os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
        or os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
    )
    if judge_args.use_peft and sharded:
        raise typer.BadParameter(
            "--use_peft with ZeRO-3/FSDP is not supported: the adapter could not be merged into "
            "sharded weights here; use ZeRO-2 or full fine-tuning"
        )
    return judge_args, config


def load_model(judge_args: Any, config: Any) -> tuple[Any, Any]:
    """The model (in the precision training asks for) and processor, with the vision tower frozen when asked."""
    import torch
    from transformers import AutoModelForImageTextToText

    from deltarubric.rm.hf_compat import load_processor

    dtype = torch.bfloat16 if config.bf16 else torch.float16 if config.fp16 else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(judge_args.model, dtype=dtype)
    if judge_args.freeze_vision:
        for p in model.model.visual.parameters():
            p.requires_grad = False
    return model, load_processor(judge_args.model)


def peft_config(judge_args: Any) -> Any:
    if not judge_args.use_peft:
        return None
    from peft import LoraConfig

    # A frozen vision tower gets no adapter either (all-linear would otherwise reach its layers).
    return LoraConfig(
        r=judge_args.lora_r,
        lora_alpha=judge_args.lora_alpha,
        target_modules=judge_args.lora_target_modules,
        exclude_modules=r".*visual.*" if judge_args.freeze_vision else None,
        task_type="CAUSAL_LM",
    )


def finish(trainer: Any, processor: Any, out: str) -> None:
    """Save a checkpoint that `deltarubric judge -m OUT` and `vllm serve OUT` load like any Qwen3-VL checkpoint."""
    trainer.save_model(out)  # on every rank: DeepSpeed/FSDP gather inside; only the main process writes
    trainer.save_state()  # trainer_state.json: the logged metrics, per step
    if trainer.accelerator.is_main_process:
        model = trainer.accelerator.unwrap_model(trainer.model)
        if hasattr(model, "merge_and_unload"):  # LoRA: ship merged weights, so every loader reads them
            model.merge_and_unload().save_pretrained(out)
            # Left beside merged weights, the adapter files would make from_pretrained apply LoRA a second time.
            for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
                (Path(out) / name).unlink(missing_ok=True)
        processor.save_pretrained(out)


def _resume(config: Any) -> str | None:
    """Resume from the newest complete checkpoint in the output folder (a rerun continues a crash). A checkpoint is
    complete once its trainer_state.json is written, the last file the Trainer saves."""
    if config.resume_from_checkpoint:
        return config.resume_from_checkpoint
    done = [
        p
        for p in Path(config.output_dir).glob("checkpoint-*")
        if p.name[11:].isdigit() and (p / "trainer_state.json").exists()
    ]
    return str(max(done, key=lambda p: int(p.name[11:]))) if done else None


def run(
    trainer: Any, processor: Any, config: Any, judge_args: Any, val: list[Any] | None, *, default_eval_steps: int
) -> None:
    """Validate on held-out pairs while training (when given), train or resume, save, print where it went."""
    from deltarubric.train.validation import JudgeValidation

    if val:
        JudgeValidation(
            val,
            config.judge,
            every=config.eval_steps or default_eval_steps,
            max_tokens=judge_args.eval_max_tokens,
            max_pixels=judge_args.max_pixels,
        ).attach(trainer)
    trainer.train(resume_from_checkpoint=_resume(config))
    finish(trainer, processor, config.output_dir)
    if trainer.accelerator.is_main_process:
        print(json.dumps({"output_dir": config.output_dir, "steps": trainer.state.global_step}))


@app.command(context_settings=_PASS, add_help_option=False)
def grpo(ctx: typer.Context) -> None:
    """GRPO on labelled pairs. deltarubric: planner + verifier rollouts, decoupled advantages; direct/msrl: one step.

    Example: deltarubric train grpo --judge deltarubric --model Qwen/Qwen3-VL-8B-Instruct --data train.jsonl
    --eval_data val.jsonl --out ckpt/dr-8b   (all flags: deltarubric train grpo --help)
    """
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is TRL-experimental; pinned and tested
    _require_train_extra()
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
    _require_train_extra()
    from deltarubric.rm.pairs import read_pairs
    from deltarubric.train.config import JudgeSFTConfig
    from deltarubric.train.sft import make_sft_trainer, sft_examples

    judge_args, config = parse_train_args(JudgeSFTConfig, list(ctx.args))
    pairs = read_pairs(judge_args.data)
    val = read_pairs(judge_args.eval_data)[: judge_args.eval_limit] if judge_args.eval_data else None
    if val and config.targets == "captions":
        raise typer.BadParameter("--eval_data judges pairs; a captions stage has no verdicts to validate")
    rows = sft_examples(
        pairs, config.judge, config.targets, order_seed=config.order_seed, max_pixels=judge_args.max_pixels
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
    _require_train_extra()
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
