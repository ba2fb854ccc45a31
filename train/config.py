"""Training configuration: TRL's `GRPOConfig` / `SFTConfig` plus what training a judge adds.

As in TRL, every field is a command-line flag (`--num_checklists 4`, also `--num-checklists`) and can live in a
YAML file passed with `--config`; the field's help text is the flag's help.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig, SFTConfig

from deltarubric.rubrics.prompts import check_method


@dataclass
class JudgeArguments:
    """What to train and on which data: shared by `train grpo` and `train sft`."""

    model: str = field(default="", metadata={"help": "HF model id or local checkpoint to start from."})
    data: str = field(default="", metadata={"help": "Labelled-pair JSONL to train on (see docs/training.md)."})
    eval_data: str | None = field(
        default=None, metadata={"help": "Held-out labelled-pair JSONL, judged every --eval_steps."}
    )
    max_pixels: int | None = field(default=None, metadata={"help": "Per image; larger images are downscaled."})
    eval_limit: int | None = field(default=None, metadata={"help": "Judge only the first N held-out pairs."})
    eval_max_tokens: int = field(default=512, metadata={"help": "Max new tokens per stage during validation."})
    freeze_vision: bool = field(
        default=False, metadata={"help": "Freeze the vision tower and merger (text-only stages)."}
    )
    use_peft: bool = field(default=False, metadata={"help": "Train a LoRA adapter (peft) instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "LoRA target modules (peft syntax)."})


@dataclass
class JudgeGRPOConfig(GRPOConfig):
    """GRPO for judges. For `deltarubric`, each pair gets `num_checklists` planner rollouts and, per checklist,
    `num_verifications` verifier rollouts: `num_generations` is set to N·(1+K) for you."""

    judge: str = field(
        default="deltarubric", metadata={"help": "Judge to train: deltarubric (planner + verifier) | direct | msrl."}
    )
    num_checklists: int = field(
        default=2, metadata={"help": "N: planner rollouts (checklists) per pair (deltarubric)."}
    )
    num_verifications: int = field(default=3, metadata={"help": "K: verifier rollouts per checklist (deltarubric)."})
    verifier_baseline: str = field(
        default="checklist",
        metadata={
            "help": "Verifier advantages are normalised across the K runs of one checklist ('checklist') or "
            "across all N·K runs of the pair ('pair')."
        },
    )
    rubric_delta: bool = field(
        default=False,
        metadata={
            "help": "Also run one checklist-free verification per pair and log the planner's gain over it "
            "(planner/no_rubric_gap)."
        },
    )
    order_seed: int = field(default=0, metadata={"help": "Seeds the A/B order shown in each rollout chain."})
    # GRPO's own loss (as MSRL's scripts train with), where TRL's default is dapo: a judge's completions are short and
    # of similar length, and the published judge recipes use it.
    loss_type: str = field(
        default="grpo", metadata={"help": "TRL's loss: grpo (default here), dapo, dr_grpo, bnpo, ..."}
    )

    def __post_init__(self) -> None:
        if self.verifier_baseline not in ("checklist", "pair"):
            raise ValueError("verifier_baseline must be 'checklist' or 'pair'")
        if self.judge == "deltarubric":
            # A role whose baseline group holds one rollout always gets advantage 0: it would never learn.
            if self.num_checklists < 2:
                raise ValueError("num_checklists must be >= 2: the planner's advantage compares checklists of one pair")
            if self.num_verifications < 2 and self.verifier_baseline == "checklist":
                raise ValueError("num_verifications must be >= 2 with verifier_baseline 'checklist' (or use 'pair')")
            if self.scale_rewards == "batch" or self.multi_objective_aggregation != "sum_then_normalize":
                raise ValueError(
                    "deltarubric computes advantages per role and group: use scale_rewards 'group' or "
                    "'none' and multi_objective_aggregation 'sum_then_normalize'"
                )
            self.num_generations = self.num_checklists * (1 + self.num_verifications)
        super().__post_init__()


@dataclass
class JudgeSFTConfig(SFTConfig):
    """Supervised warm start on gold traces (or on verdict-only targets, the SFT baseline)."""

    judge: str = field(default="deltarubric", metadata={"help": "Judge whose output format the targets take."})
    # TRL's default (1024) cuts long multimodal examples (one large image is ~1000 tokens) from the end: the target.
    max_length: int | None = field(default=None, metadata={"help": "Cut examples longer than this (None: never)."})
    targets: str = field(
        default="traces",
        metadata={
            "help": "'traces': the full gold output (checklist, analysis, justification, verdict); "
            "'verdicts': only the verdict line (the label-only SFT baseline); "
            "'captions': describe the image (a captioning stage before judging); "
            "'captions_in_context': describe the image when asked at the end of a judge's prompt, the image among "
            "the pair's text (teaches a base to read images wherever judges put them)."
        },
    )
    caption_layouts: list[str] = field(
        default_factory=list,
        metadata={"help": "Judges whose prompts frame 'captions_in_context' examples (default: --judge)."},
    )
    trace_caption: bool = field(
        default=False,
        metadata={
            "help": "Gold traces (direct and deltarubric judges) open their analysis with the pair's caption "
            "('The image shows: ...', on one line), so the model says what it sees before it checks claims."
        },
    )
    order_seed: int = field(default=0, metadata={"help": "Seeds the A/B order of each example."})

    def __post_init__(self) -> None:
        # Fail while the arguments are read, not after every example has been rendered.
        for name in self.caption_layouts:
            check_method(name)
        super().__post_init__()


# -- MSRL's staged transfer (`deltarubric train msrl`, train/msrl.py) -----------------------------------------------
@dataclass
class MSRLGRPOConfig(JudgeGRPOConfig):
    """A GRPO stage of MSRL (text, caption, multimodal). Defaults: the authors' committed scripts
    (docs/training.md, MSRL section): 8 generations, temperature 1.0, lr 1e-6, beta 0, clip 0.2/0.28, no std scaling."""

    judge: str = field(default="msrl", metadata={"help": "MSRL stages train the msrl judge's output format."})
    num_generations: int | None = field(default=8, metadata={"help": "Rollouts per pair."})
    learning_rate: float = field(default=1e-6, metadata={"help": "The authors' GRPO learning rate."})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient (the authors: none)."})
    epsilon: float = field(default=0.2, metadata={"help": "Lower clip."})
    epsilon_high: float | None = field(default=0.28, metadata={"help": "Upper clip (clip-higher)."})
    scale_rewards: str = field(default="none", metadata={"help": "The authors divide by no std: 'none'."})
    task_reward: str = field(
        default="authors",
        metadata={
            "help": "Task-type reward (caption and multimodal stages): 'authors' returns 0.2 on a match and is "
            "weighted 0.2 again (0.04 effective, as the committed plugin); 'plain' returns 1.0 (0.2 "
            "effective, as the paper's table reads)."
        },
    )
    replay_data: str | None = field(
        default=None, metadata={"help": "Caption stage: stage-1 text pairs replayed beside the caption pairs."}
    )
    replay_ratio: float = field(
        default=5.0, metadata={"help": "Caption stage: new (caption) pairs per replayed text pair (the authors: 5)."}
    )

    def __post_init__(self) -> None:
        if self.task_reward not in ("authors", "plain"):
            raise ValueError("task_reward must be 'authors' (0.2 x weight 0.2) or 'plain' (1.0 x weight 0.2)")
        if self.replay_ratio <= 0:
            raise ValueError("replay_ratio (new : old) must be positive")
        super().__post_init__()


@dataclass
class MSRLSFTConfig(JudgeSFTConfig):
    """An SFT stage of MSRL: text SFT (1a) and cross-modal knowledge distillation (2b, CMKD)."""

    judge: str = field(default="msrl", metadata={"help": "MSRL stages train the msrl judge's output format."})
    cmkd_samples: int = field(default=8, metadata={"help": "CMKD: chains sampled per caption pair (k)."})
    cmkd_temperature: float = field(default=1.0, metadata={"help": "CMKD: sampling temperature."})
    cmkd_max_tokens: int = field(default=1024, metadata={"help": "CMKD: max new tokens per chain."})
    cmkd_batch_size: int = field(default=16, metadata={"help": "CMKD: conversations per generation batch."})
    cmkd_swap: bool = field(
        default=False,
        metadata={
            "help": "CMKD: keep a pair only if the majority of its chains in the swapped A/B order also name "
            "the gold candidate (consistent under swap)."
        },
    )
    cmkd_caption: bool = field(
        default=True, metadata={"help": "CMKD: the target writes the pair's caption in <caption> before <think>."}
    )
    cmkd_min_kept: int = field(
        default=1,
        metadata={"help": "CMKD: fail when fewer pairs keep a chain; 0 lets an empty CMKD pass its start model on."},
    )

    def __post_init__(self) -> None:
        if self.cmkd_samples < 1:
            raise ValueError("cmkd_samples must be >= 1")
        super().__post_init__()
