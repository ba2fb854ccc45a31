"""The CPU testbed recipe end to end: does RL make a judge better on held-out images, and does DeltaRubric beat the
no-rubric judge trained the same way?

    python benchmarks/train_synthetic.py --seed 0 --out runs/testbed-0

Phases, each a `deltarubric train ...` command as a user runs it (recipes/testbed_*.yaml):
1. data: `make-synthetic` (train/val on disjoint scenes) and a blind copy of val (every image grey).
2. base: a random-weight hidden-128 x 4-layer Qwen3-VL, then a caption stage (SFT: image -> scene description), then
   the same captions asked at the end of the judges' own prompts (both judges' layouts), so the base reads the image
   wherever a judge prompt puts it.
3. warm start: a small, equal SFT on gold traces (the first --warm-pairs training pairs) for each judge: the same
   steps and examples per step (a DeltaRubric pair gives two examples, planner and verifier).
4. RL: GRPO with labels only on the other training pairs, `direct` and `deltarubric` side by side (one process each)
   at equal pairs seen and about equal generated tokens (8 rollout rows per pair each).
5. baseline: SFT on verdict-only targets ("Winner: [[X]]") over the same pairs, from the direct warm start.
6. blind check: the RL judges on the grey copy of val (near 50% = the text alone gives the answer away nowhere).

Prints held-out accuracy after each phase and writes OUT/summary.json and OUT/curve.png (accuracy vs RL step).
Rerunning the same command resumes: finished phases (a final checkpoint in their folder) are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_DISABLED": "true",
}


def train(kind: str, recipe: str, *flags: str, log: Path) -> subprocess.Popen[bytes] | None:
    """Start one phase; a phase whose final checkpoint exists is done (rerunning the script resumes it)."""
    out = Path(flags[flags.index("--out") + 1])
    if (out / "model.safetensors").exists():
        return None
    cmd = [sys.executable, "-m", "deltarubric.cli", "train", kind, "--config", str(RECIPES / recipe), *flags]
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, env=ENV, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)


def wait(*procs: subprocess.Popen[bytes] | None) -> None:
    for p in procs:
        if p is not None and p.wait() != 0:
            raise SystemExit(f"{' '.join(map(str, p.args))} failed (exit {p.returncode}); see its log")


def accuracy(checkpoint: Path, judge: str, pairs_file: Path, limit: int | None) -> dict[str, float]:
    """Held-out figures through the real Judge (greedy, seeded random A/B order)."""
    import torch
    from transformers import AutoModelForImageTextToText

    from deltarubric.rm.hf_compat import load_processor
    from deltarubric.rm.pairs import read_pairs
    from deltarubric.train.validation import judge_pairs, summarize

    torch.set_num_threads(1)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint)
    rows = judge_pairs(
        model, load_processor(str(checkpoint)), judge, read_pairs(pairs_file)[:limit], max_tokens=160, batch_size=32
    )
    return summarize(rows)


def build_base(
    out: Path, train_file: Path, seed: int, caption_steps: int, context_steps: int, layouts: list[str]
) -> Path:
    """OUT/base-reading: a random-weight testbed model taught to see. Stage 0 captions scenes (image, then "describe
    it"); stage 0b asks the same inside the `layouts` judges' prompts. Stage 0 alone reads images in its one layout
    only: with a judge prompt's text around the image its captions fall to chance (docs/training.md, "The testbed")."""
    from deltarubric.train.testbed import make_testbed_model

    base0 = out / "base-init"
    if not (base0 / "model.safetensors").exists():
        make_testbed_model(base0, train_file, seed)
    stages = [
        ("testbed_caption.yaml", base0, out / "base-caption", caption_steps, []),
        ("testbed_caption_context.yaml", out / "base-caption", out / "base-reading", context_steps, layouts),
    ]
    for recipe, src, dst, steps, extra in stages:
        flags = ["--model", str(src), "--data", str(train_file), "--out", str(dst), "--max_steps", str(steps)]
        if extra:
            flags += ["--caption_layouts", *extra]
        wait(train("sft", recipe, *flags, "--seed", str(seed), log=out / "logs" / f"{dst.name}.log"))
    return out / "base-reading"  # not "base": run folders from before the second stage hold a caption-only one


def split_warm(train_file: Path, warm_pairs: int, out: Path) -> tuple[Path, Path]:
    """The first `warm_pairs` pairs keep their gold traces; the rest keep only labels (RL and the SFT baseline)."""
    from deltarubric.rm.pairs import TARGET_FIELDS

    lines = train_file.read_text().splitlines()
    warm, rest = out / "warm.jsonl", out / "labels.jsonl"
    warm.write_text("\n".join(lines[:warm_pairs]) + "\n")
    stripped = []
    for line in lines[warm_pairs:]:
        row = json.loads(line)
        for k in TARGET_FIELDS:
            row.pop(k, None)
        stripped.append(json.dumps(row))
    rest.write_text("\n".join(stripped) + "\n")
    return warm, rest


def curve(out: Path, runs: dict[str, Path]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, folder in runs.items():
        rows = [json.loads(x) for x in (folder / "validation.jsonl").read_text().splitlines()]
        ax.plot(
            [r["step"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=f"{name}: held-out accuracy"
        )
        state = (
            json.loads((folder / "trainer_state.json").read_text())
            if (folder / "trainer_state.json").exists()
            else None
        )
        if state:
            hist = [h for h in state["log_history"] if "rewards/verdict_correct/mean" in h]
            ax.plot(
                [h["step"] for h in hist],
                [100 * h["rewards/verdict_correct/mean"] for h in hist],
                alpha=0.4,
                label=f"{name}: {'verifier' if name == 'deltarubric' else 'judge'} train reward",
            )
            probe = [h for h in hist if "rewards/checklist_probe/mean" in h]
            if probe:
                ax.plot(
                    [h["step"] for h in probe],
                    [100 * h["rewards/checklist_probe/mean"] for h in probe],
                    alpha=0.4,
                    label="deltarubric: planner probe accuracy",
                )
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("RL step")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=2000, help="pairs in all (80%% train, 20%% held out)")
    ap.add_argument("--warm-pairs", type=int, default=1000)
    ap.add_argument("--caption-steps", type=int, default=500)
    ap.add_argument("--context-steps", type=int, default=300, help="caption steps inside judge prompts")
    ap.add_argument("--warm-steps", type=int, default=300)
    ap.add_argument("--rl-steps", type=int, default=120)
    ap.add_argument("--eval-limit", type=int, default=None, help="held-out pairs judged per evaluation (default: all)")
    args = ap.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    seed = str(args.seed)

    from deltarubric.rm.pairs import read_pairs
    from deltarubric.train.synthetic import blind_copy, make_synthetic

    paths = make_synthetic(out / "data", args.n, args.seed)
    val = paths["val"]
    blind = blind_copy(val, out / "data" / "val_blind.jsonl")
    warm, labels = split_warm(paths["train"], args.warm_pairs, out / "data")
    rl_pairs = len(read_pairs(labels))
    print(
        f"data: {len(read_pairs(paths['train']))} train ({args.warm_pairs} with traces),"
        f" {len(read_pairs(val))} held out",
        flush=True,
    )

    base = build_base(out, paths["train"], args.seed, args.caption_steps, args.context_steps, ["direct", "deltarubric"])
    print(f"base (caption stages): {time.time() - t0:.0f}s", flush=True)

    judges = ("direct", "deltarubric")
    procs = [
        train(
            "sft",
            "testbed_warm.yaml",
            "--judge",
            j,
            "--model",
            str(base),
            "--data",
            str(warm),
            "--out",
            str(out / f"warm-{j}"),
            "--max_steps",
            str(args.warm_steps),
            "--seed",
            seed,
            log=out / "logs" / f"warm-{j}.log",
        )
        for j in judges
    ]
    wait(*procs)
    summary: dict = {"seed": args.seed, "methods": {j: {} for j in judges}}
    for j in judges:
        summary["methods"][j]["warm_start"] = accuracy(out / f"warm-{j}", j, val, args.eval_limit)["accuracy"]
    print(
        f"warm start: {time.time() - t0:.0f}s {json.dumps({j: summary['methods'][j]['warm_start'] for j in judges})}",
        flush=True,
    )

    eval_flags = ["--eval_data", str(val), "--eval_limit", str(args.eval_limit or 200)]
    procs = [
        train(
            "grpo",
            f"testbed_grpo_{j}.yaml",
            "--model",
            str(out / f"warm-{j}"),
            "--data",
            str(labels),
            "--out",
            str(out / f"rl-{j}"),
            "--max_steps",
            str(args.rl_steps),
            "--seed",
            seed,
            *eval_flags,
            log=out / "logs" / f"rl-{j}.log",
        )
        for j in judges
    ]
    # The label-only SFT baseline sees as many pairs as RL: rl_steps x 2 pairs per step.
    sft_steps = max(1, args.rl_steps * 2 // 8)
    wait(*procs)
    print(f"RL: {time.time() - t0:.0f}s", flush=True)
    wait(
        train(
            "sft",
            "testbed_verdicts.yaml",
            "--model",
            str(out / "warm-direct"),
            "--data",
            str(labels),
            "--out",
            str(out / "sft-verdicts"),
            "--max_steps",
            str(sft_steps),
            "--seed",
            seed,
            log=out / "logs" / "sft-verdicts.log",
        )
    )

    for j in judges:
        summary["methods"][j]["rl"] = accuracy(out / f"rl-{j}", j, val, args.eval_limit)["accuracy"]
        summary["methods"][j]["rl_blind"] = accuracy(out / f"rl-{j}", j, blind, args.eval_limit)["accuracy"]
        tokens = json.loads((out / f"rl-{j}" / "trainer_state.json").read_text())["log_history"]
        summary["methods"][j]["rl_tokens_seen"] = max((h.get("num_tokens", 0) for h in tokens), default=0)
    summary["methods"]["sft_verdicts"] = {
        "warm_start": summary["methods"]["direct"]["warm_start"],
        "sft": accuracy(out / "sft-verdicts", "direct", val, args.eval_limit)["accuracy"],
    }
    summary["blind_accuracy"] = max(summary["methods"][j]["rl_blind"] for j in judges)
    summary["held_out_pairs"] = args.eval_limit or len(read_pairs(val))
    summary["rl_pairs_seen"] = args.rl_steps * 2
    summary["rl_label_pairs"] = rl_pairs
    summary["seconds"] = round(time.time() - t0)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    curve(out, {j: out / f"rl-{j}" for j in judges})

    print(f"\nheld-out accuracy (%), n={summary['held_out_pairs']}, seed {args.seed}, {summary['seconds']}s")
    print(f"{'method':<14}{'warm start':>12}{'after':>10}{'gain':>8}")
    for j in judges:
        m = summary["methods"][j]
        print(
            f"{j:<14}{m['warm_start']:>12.1f}{m['rl']:>10.1f}{m['rl'] - m['warm_start']:>+8.1f}"
            f"   (RL; blind {m['rl_blind']:.1f})"
        )
    m = summary["methods"]["sft_verdicts"]
    print(
        f"{'sft_verdicts':<14}{m['warm_start']:>12.1f}{m['sft']:>10.1f}{m['sft'] - m['warm_start']:>+8.1f}"
        "   (SFT on labels)"
    )


if __name__ == "__main__":
    main()
