"""Does a testbed checkpoint read the image wherever a judge prompt puts it? Cells its caption gets right, per layout.

    python benchmarks/testbed_reading.py runs/testbed/base-reading runs/testbed/data/val.jsonl --n 48

Layouts: "plain" (image, then the caption question: the caption stage's own layout) and the caption question asked at
the end of each judge turn (direct, DeltaRubric's planner and verifier): the `captions_in_context` examples of the
held-out pairs, decoded greedily and compared cell by cell with their gold captions.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

CELL = re.compile(r"(top left|top right|bottom left|bottom right): ([a-z ]+?)\.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("pairs", type=Path, help="held-out testbed pairs (with captions)")
    ap.add_argument("--n", type=int, default=48)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForImageTextToText

    from deltarubric.rm.hf_compat import load_processor
    from deltarubric.rm.pairs import read_pairs
    from deltarubric.train.sft import sft_examples

    torch.set_num_threads(1)
    model = AutoModelForImageTextToText.from_pretrained(args.checkpoint).eval()
    processor = load_processor(str(args.checkpoint))
    processor.tokenizer.padding_side = "left"
    pairs = read_pairs(args.pairs)[: args.n]
    examples = sft_examples(pairs, "direct", "captions") + sft_examples(
        pairs, "direct", "captions_in_context", layouts=["direct", "deltarubric"]
    )
    right: dict[str, list[int]] = {}
    for i in range(0, len(examples), 16):
        batch = examples[i : i + 16]
        texts = [processor.apply_chat_template(e["prompt"], add_generation_prompt=True, tokenize=False) for e in batch]
        enc = processor(text=texts, images=[e["images"] for e in batch], return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=40, do_sample=False)
        for e, text in zip(
            batch, processor.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        ):
            layout = {1: "plain", 2: "judge turn 1", 4: "verifier turn"}[len(e["prompt"])]
            gold, got = dict(CELL.findall(e["completion"][0]["content"])), dict(CELL.findall(text))
            tally = right.setdefault(layout, [0, 0])
            tally[0] += sum(got.get(k) == v for k, v in gold.items())
            tally[1] += len(gold)
    for layout, (ok, total) in right.items():
        print(f"{layout:<14} {ok}/{total} cells right ({100 * ok / total:.0f}%)")


if __name__ == "__main__":
    main()
