"""What every training command does around its trainer: parse TRL-style arguments, load the model, build the LoRA
config, train or resume, and save a checkpoint that the judge, the server and `vllm serve` load.

The `deltarubric train ...` commands (cli/train.py) and MSRL's stages (train/msrl.py) call these; none of them needs
the command line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

TRAIN_EXTRA = (
    'training needs the train extra (TRL, accelerate, peft): pip install "deltarubric[train]" '
    '(in a checkout: pip install -e ".[train]")'
)


def require_train_extra() -> None:
    try:
        import trl  # noqa: F401
    except ImportError as e:
        raise ImportError(TRAIN_EXTRA) from e


def _argv(args: list[str]) -> list[str]:
    """`--out DIR` and `--out=DIR` are short for `--output_dir`."""
    return ["--output_dir" if a == "--out" else "--output_dir=" + a[6:] if a.startswith("--out=") else a for a in args]


def parse_train_args(config_cls: type, args: list[str]) -> tuple[Any, Any]:
    """(JudgeArguments, config) from flags and an optional --config YAML, TRL-style. A missing or contradictory
    setting raises ValueError naming the flag."""
    require_train_extra()
    from trl import TrlParser

    from deltarubric.train.config import JudgeArguments

    parser = TrlParser((JudgeArguments, config_cls))
    judge_args, config = parser.parse_args_and_config(_argv(args))
    if not judge_args.model or not judge_args.data:
        raise ValueError("give --model (checkpoint or HF id) and --data (labelled-pair JSONL)")
    if not config.output_dir or config.output_dir == "trainer_output":
        raise ValueError("give --out DIR: where checkpoints and the final model go")
    from deltarubric.rubrics.prompts import load_method

    load_method(config.judge)  # an unknown judge fails here, before a model is loaded
    sharded = (
        os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
        or os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
    )
    if judge_args.use_peft and sharded:
        raise ValueError(
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


def resume_checkpoint(config: Any) -> str | None:
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
    trainer.train(resume_from_checkpoint=resume_checkpoint(config))
    finish(trainer, processor, config.output_dir)
    if trainer.accelerator.is_main_process:
        print(json.dumps({"output_dir": config.output_dir, "steps": trainer.state.global_step}))
