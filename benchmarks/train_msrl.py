"""MSRL's transfer claim on the CPU testbed: with the same labelled image pairs, does learning to judge from text and
captions first (MSRL stages 1 -> 2 -> 3) beat RL on the images alone?

    python benchmarks/train_msrl.py --seed 0 --out runs/msrl-testbed

Every method starts from the same base (a random hidden-128 testbed model after the two caption stages, the second
inside msrl prompts: it can describe a scene but not judge) and uses the same --image-pairs labelled image pairs
(labels and captions only, no rationale):

- image_only: MSRL's stage 1a format warm start on text (the same checkpoint MSRL uses), then stage 3 (GRPO on the
  image pairs) only;
- msrl_no_cmkd: stages 1a, 1b (text GRPO), 2a (caption GRPO on the image pairs' captions + replayed text), 3;
- msrl: all stages, with 2b (CMKD: the caption model's chains that reach the gold label, trained on the real images).

Stage 3 is the same for all three (steps, pairs per step, settings: recipes/testbed_msrl.yaml), so the image pairs
and the image RL are equal; what differs is what came before. Text pairs are other scenes of the training share of
the scene space told as prose (`deltarubric train views`), so no held-out scene is ever described to the model.
Held-out accuracy (the real Judge, msrl prompts, strict) is measured on the held-out images after every stage, and on
the held-out pairs' caption view (does the stage-2a skill hold on captions?). Prints the table, writes OUT/summary.json
and OUT/curve.png (held-out accuracy during stage 3, per method). Rerunning the same command resumes: `train msrl`
skips done stages, and the shared stages are run once (image_only and msrl_no_cmkd link msrl's).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_synthetic import accuracy, build_base, train, wait  # the same base, phase runner and held-out measure

METHODS = {
    "image_only": ("text_sft", "multimodal"),
    "msrl_no_cmkd": ("text_sft", "text_grpo", "caption", "multimodal"),
    "msrl": ("text_sft", "text_grpo", "caption", "cmkd", "multimodal"),
}


def label_only(src: Path, out: Path, n: int) -> Path:
    """The first `n` image pairs with their labels and captions only: no gold rationale reaches any method."""
    from deltarubric.rm.pairs import TARGET_FIELDS

    rows = []
    for line in src.read_text().splitlines()[:n]:
        row = json.loads(line)
        for k in set(TARGET_FIELDS) - {"caption"}:
            row.pop(k, None)
        rows.append(json.dumps(row))
    out.write_text("\n".join(rows) + "\n")
    return out


def link_done(src: Path, dst: Path, stages: tuple[str, ...]) -> None:
    """Share msrl's finished stages with another run folder (`train msrl` starts from the nearest done stage)."""
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "msrl.yaml").write_text((src / "msrl.yaml").read_text())
    for s in stages:
        if not (dst / s).exists():
            (dst / s).symlink_to(src / s)


def curve(out: Path, runs: dict[str, Path]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, folder in runs.items():
        path = folder / "multimodal" / "validation.jsonl"
        if path.exists():
            rows = [json.loads(x) for x in path.read_text().splitlines()]
            ax.plot(
                [r["step"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=f"{name}: held-out images"
            )
        state = folder / "multimodal" / "trainer_state.json"
        if state.exists():
            hist = [h for h in json.loads(state.read_text())["log_history"] if "rewards/verdict_correct/mean" in h]
            ax.plot(
                [h["step"] for h in hist],
                [100 * h["rewards/verdict_correct/mean"] for h in hist],
                alpha=0.35,
                label=f"{name}: train reward (accuracy)",
            )
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("stage-3 (image GRPO) step")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=2000, help="image pairs generated (80%% train, 20%% held out)")
    ap.add_argument("--text-n", type=int, default=2000, help="text pairs generated (other scenes; the training share)")
    ap.add_argument("--image-pairs", type=int, default=400, help="labelled image pairs every method may use")
    ap.add_argument("--caption-steps", type=int, default=500, help="the base's caption stage")
    ap.add_argument("--context-steps", type=int, default=300, help="the base's caption steps inside judge prompts")
    ap.add_argument("--sft-steps", type=int, default=300, help="stage 1a (text SFT)")
    ap.add_argument("--text-rl-steps", type=int, default=100, help="stage 1b")
    ap.add_argument("--caption-rl-steps", type=int, default=100, help="stage 2a")
    ap.add_argument("--cmkd-steps", type=int, default=100, help="stage 2b (SFT on distilled chains)")
    ap.add_argument("--rl-steps", type=int, default=120, help="stage 3, the same for every method (2 pairs per step)")
    ap.add_argument("--eval-limit", type=int, default=None, help="held-out pairs judged per evaluation (default: all)")
    ap.add_argument("--eval-steps", type=int, default=25, help="held-out validation every N stage-3 steps")
    args = ap.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    seed = str(args.seed)

    from deltarubric.rm.pairs import read_pairs, write_pairs
    from deltarubric.train.msrl import model_of, record_of
    from deltarubric.train.synthetic import make_synthetic
    from deltarubric.train.views import views, write_views

    paths = make_synthetic(out / "data", args.n, args.seed)
    val = paths["val"]
    images = label_only(paths["train"], out / "data" / "image_pairs.jsonl", args.image_pairs)
    val_caption = write_pairs(views(read_pairs(val), "caption")[0], out / "data" / "val_caption.jsonl")
    # Other scenes, the same training share of the scene space (splits partition scenes by hash, not by seed).
    text_src = make_synthetic(out / "text", args.text_n, args.seed + 1)["train"]
    text = Path(write_views(text_src, out / "text", kinds=("text",))["text"]["path"])
    n_images, n_text = len(read_pairs(images)), len(read_pairs(text))
    print(f"data: {n_images} labelled image pairs, {n_text} text pairs, {len(read_pairs(val))} held out", flush=True)

    base = build_base(out, paths["train"], args.seed, args.caption_steps, args.context_steps, ["msrl"])
    print(f"base (caption stages): {time.time() - t0:.0f}s", flush=True)

    runs = {m: out / m for m in METHODS}
    data_flags = [
        "--seed",
        seed,
        "--text_sft.data",
        str(text),
        "--text_grpo.data",
        str(text),
        "--caption.data",
        str(images),
        "--caption.replay_data",
        str(text),
        "--cmkd.data",
        str(images),
        "--multimodal.data",
        str(images),
        "--multimodal.eval_data",
        str(val),
        "--multimodal.eval_limit",
        str(args.eval_limit or 400),
        "--multimodal.eval_steps",
        str(args.eval_steps),
        "--text_sft.max_steps",
        str(args.sft_steps),
        "--text_grpo.max_steps",
        str(args.text_rl_steps),
        "--caption.max_steps",
        str(args.caption_rl_steps),
        "--cmkd.max_steps",
        str(args.cmkd_steps),
        "--multimodal.max_steps",
        str(args.rl_steps),
        "--cmkd.cmkd_min_kept",
        "0",  # a CMKD that keeps nothing is reported (kept pairs), not fatal
    ]

    def msrl(method: str, stages: str) -> object:
        return train(
            "msrl",
            "testbed_msrl.yaml",
            "--model",
            str(base),
            "--out",
            str(runs[method]),
            "--stages",
            stages,
            *data_flags,
            log=out / "logs" / f"{method}-{stages.replace(',', '-')}.log",
        )

    wait(msrl("msrl", "text_sft"))
    link_done(runs["msrl"], runs["image_only"], ("text_sft",))
    wait(msrl("msrl", "text_grpo,caption"), msrl("image_only", "multimodal"))  # two processes: the two cores
    print(f"stages 1-2a and image-only RL: {time.time() - t0:.0f}s", flush=True)
    link_done(runs["msrl"], runs["msrl_no_cmkd"], ("text_sft", "text_grpo", "caption"))
    wait(msrl("msrl", "cmkd,multimodal"), msrl("msrl_no_cmkd", "multimodal"))
    print(f"all stages: {time.time() - t0:.0f}s", flush=True)

    summary: dict = {
        "seed": args.seed,
        "image_pairs": n_images,
        "text_pairs": n_text,
        "held_out_pairs": args.eval_limit or len(read_pairs(val)),
        "stage3_pairs_seen": args.rl_steps * 2,
        "base": {"image": accuracy(base, "msrl", val, args.eval_limit)["accuracy"]},
        "methods": {},
    }
    measured: dict[Path, dict[str, float]] = {}
    for method, stages in METHODS.items():
        rows = {}
        for stage in stages:
            # The stage's model (an empty CMKD passes its start model on); shared stages are measured once.
            ckpt = Path(model_of(runs[method], record_of(runs[method], stage) or {"model": stage})).resolve()
            if ckpt not in measured:
                measured[ckpt] = {
                    "image": accuracy(ckpt, "msrl", val, args.eval_limit)["accuracy"],
                    "caption_view": accuracy(ckpt, "msrl", val_caption, args.eval_limit)["accuracy"],
                }
            rows[stage] = measured[ckpt]
        record = json.loads((runs[method] / "multimodal" / "msrl_stage.json").read_text())
        summary["methods"][method] = {
            "stages": rows,
            "final": rows["multimodal"]["image"],
            "stage3_seconds": record["seconds"],
        }
    cmkd = json.loads((runs["msrl"] / "cmkd" / "msrl_stage.json").read_text())
    summary["cmkd"] = {
        **{k: cmkd["counts"][k] for k in ("kept_pairs", "caption_views", "chains_in_sft_order")},
        "steps": cmkd["steps"],
    }
    summary["seconds"] = round(time.time() - t0)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    curve(out, runs)

    n = summary["held_out_pairs"]
    print(
        f"\nheld-out accuracy (%) on real images [on their caption view], n={n}, seed {args.seed}, "
        f"{n_images} image pairs, {summary['seconds']}s; base (caption stage) {summary['base']['image']:.1f}"
    )
    names = ("text_sft", "text_grpo", "caption", "cmkd", "multimodal")
    print(f"{'method':<14}" + "".join(f"{s:>18}" for s in names))
    for method, m in summary["methods"].items():
        cells = [
            f"{m['stages'][s]['image']:>7.1f} [{m['stages'][s]['caption_view']:>5.1f}]" if s in m["stages"] else "-"
            for s in names
        ]
        print(f"{method:<14}" + "".join(f"{c:>18}" for c in cells))
    print(f"CMKD kept a chain for {summary['cmkd']['kept_pairs']} of {summary['cmkd']['caption_views']} image pairs")


if __name__ == "__main__":
    main()
