"""Judge throughput: one batched call vs the same pairs judged one by one, measured in the same run.

    python benchmarks/judge_throughput.py                       # tiny random checkpoint, built in a temp dir
    python benchmarks/judge_throughput.py -m /path/to/ckpt --pairs 32 --judge deltarubric --device cuda

Prints pairs/s for both and their ratio. Greedy decoding with a fixed token budget, so both do the same work.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from deltarubric.rm import Judge, JudgeConfig, JudgeRequest


def placeholder(path: Path, i: int) -> Path:
    img = Image.new("RGB", (160 + 16 * (i % 4), 120), (40 * i % 255, 120, 200))
    ImageDraw.Draw(img).ellipse([20, 20, 80, 80], fill=(250, 160, 40))
    img.save(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", help="checkpoint; default: build the tiny random one")
    ap.add_argument("--judge", default="deltarubric")
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp())
    if args.model is None:
        from deltarubric.rm.tiny import make_tiny_model

        args.model = str(make_tiny_model(tmp / "tiny"))
    config = JudgeConfig(
        model=args.model,
        judge=args.judge,
        compute={"device": args.device, "batch_size": args.batch_size},
        sampling={"max_tokens": args.max_tokens},
    )
    judge = Judge(config)
    requests = [
        JudgeRequest(
            id=str(i),
            question=f"How many shapes? ({i})",
            images=[str(placeholder(tmp / f"{i}.png", i))],
            a="One orange circle.",
            b="Two orange circles and a square.",
        )
        for i in range(args.pairs)
    ]
    judge.judge_batch(requests[:2])  # warm-up

    t0 = time.perf_counter()
    for r in requests:
        judge.judge(r)
    single = time.perf_counter() - t0
    t0 = time.perf_counter()
    judge.judge_batch(requests)
    batched = time.perf_counter() - t0

    print(f"machine: {platform.processor() or platform.machine()}, device={judge.backend.device}, model={args.model}")
    print(f"judge={args.judge} pairs={args.pairs} max_tokens={args.max_tokens} batch_size={args.batch_size}")
    print(f"one by one: {args.pairs / single:8.2f} pairs/s")
    print(f"batched:    {args.pairs / batched:8.2f} pairs/s")
    print(f"ratio batched / one-by-one: {single / batched:.2f}x")


if __name__ == "__main__":
    main()
