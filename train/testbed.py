"""The CPU testbed's model: a small Qwen3-VL-architecture checkpoint whose tokenizer knows the task and the prompts.

Training from scratch on 2 CPU cores is only feasible when sequences are short, so the BPE tokenizer is trained on the
synthetic task's text and on every judge prompt rendered for a sample pair: prompt words become one token each.
"""

from __future__ import annotations

from pathlib import Path

from deltarubric.rm.pairs import read_pairs
from deltarubric.rm.tiny import make_tiny_model
from deltarubric.rubrics.prompts import available_methods, load_method
from deltarubric.rubrics.targets import render_target
from deltarubric.train.render import first_turn, next_turn, prepare_pair
from deltarubric.train.synthetic import scene_corpus

HIDDEN, LAYERS = 128, 4  # 1.2M parameters: learns the testbed in minutes (docs/training.md)


def _prompt_lines(pair_file: Path) -> list[str]:
    """Every method's rendered turns for a few pairs, so the tokenizer learns their words."""
    lines: list[str] = []
    for pair in read_pairs(pair_file)[:20]:
        for name in ("direct", "deltarubric", "msrl"):
            if name not in available_methods():
                continue
            method = load_method(name)
            prepared = prepare_pair(method, pair)
            conv = first_turn(method, prepared, "AB")
            if len(method.stages) > 1:
                conv = next_turn(method, prepared, "AB", conv, "", pair.checklist)
            lines += [p.text for m in conv for p in m.content if hasattr(p, "text")]
        lines.append(
            render_target(
                "verdict",
                checklist=pair.checklist,
                findings=pair.findings,
                winner=pair.label,
                rationale=pair.rationale or "",
            )
        )
        lines.append(render_target("caption_question", media_word="image"))
    return lines * 20  # weight: prompts are most of every sequence


def make_testbed_model(out: Path, pair_file: Path, seed: int = 0) -> Path:
    """A random-weight testbed checkpoint (hidden 128, 4 layers) with a task-and-prompt tokenizer."""
    corpus = scene_corpus(2000, seed) + _prompt_lines(pair_file)
    return make_tiny_model(
        out, seed, hidden_size=HIDDEN, num_layers=LAYERS, corpus=corpus, vocab_size=2048, initializer_range=0.02
    )
