"""Cross-modal knowledge distillation (MSRL stage 2b): chains sampled on captions become targets for real images.

The caption-trained model judges each pair's caption view k times (the production `Judge`, msrl prompts, sampling).
A chain is kept when it names the gold candidate in the msrl format (<think> and <answer>, the authors' format
filter, and nothing else: no repeated or cut-off tags; the target's <type> is written from the pair, so a chain's own
<type> does not matter); optionally
(`swap`) the pair must also be judged right by the majority of its chains in the other A/B order; of the chains left,
the most confident (p of the letter it wrote) is the pair's target. The SFT example then shows the **real** image in
the same A/B order the chain was sampled in, so the chain's "Response A" is the example's Response A, exactly.

The authors' README: majority-vote pseudo-label -> format filter -> highest-confidence chain. We have gold labels, so
the gold label replaces the majority vote (methods.md §2.5).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from deltarubric.rm.aggregate import Order, flip_order
from deltarubric.rm.backends import Backend
from deltarubric.rm.config import JudgeConfig
from deltarubric.rm.judge import Judge
from deltarubric.rm.pairs import LabelledPair
from deltarubric.rubrics.parsing import parse_msrl
from deltarubric.rubrics.prompts import load_method
from deltarubric.train.render import order_for, shown, shown_text


@dataclass(frozen=True)
class Chain:
    """One sampled judgment of a caption view, `order` relative to the real pair, `p_shown_a` from its logprobs."""

    pair_id: str
    order: Order
    text: str
    p_shown_a: float | None = None

    @property
    def confidence(self) -> float:
        """P of the letter the chain wrote (-1 when unknown, so any chain with logprobs ranks above it)."""
        winner = parse_msrl(self.text).winner
        if self.p_shown_a is None or winner not in ("A", "B"):
            return -1.0
        return self.p_shown_a if winner == "A" else 1.0 - self.p_shown_a

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_FREE = r"(?:(?!</?(?:type|caption|think|answer)).)*"  # text holding no msrl tag, whole or cut off ("<answ")
_WELL_FORMED = re.compile(
    rf"\s*(?:<type>{_FREE}</type>\s*)?(?:<caption>{_FREE}</caption>\s*)?"
    rf"<think>{_FREE}</think>\s*<answer>\s*[AB]\s*</answer>\s*",
    re.IGNORECASE | re.DOTALL,
)


def chain_problem(text: str, gold_shown: str) -> str | None:
    """Why a chain cannot be a CMKD target (None: it can): it must name the gold candidate in the msrl format, once:
    tags in order, none repeated or cut off (the parser reads the last <think> and <answer> of a rambling chain, which
    would teach the rambling)."""
    parsed = parse_msrl(text)
    if parsed.winner is None:
        return "no <answer>A|B</answer>"
    if parsed.winner != gold_shown:
        return "wrong label"
    if not parsed.rationale:
        return "no <think>"
    if not _WELL_FORMED.fullmatch(text):
        return "malformed (tags out of order, repeated or cut off)"
    return None


def select_chains(
    chains: list[Chain], pairs: dict[str, LabelledPair], sft_order: dict[str, Order], *, swap: bool = False
) -> tuple[dict[str, Chain], Counter[str]]:
    """Per pair, the chain to distil (or none), and per reason how many pairs were dropped.

    Only chains sampled in the pair's SFT order are candidates (their labels are the example's labels); the chains of
    the other order, sampled with `swap`, only vote on consistency.
    """
    by_pair: dict[str, list[Chain]] = defaultdict(list)
    for c in chains:
        by_pair[c.pair_id].append(c)
    kept: dict[str, Chain] = {}
    dropped: Counter[str] = Counter()
    for pid, group in by_pair.items():
        label, order = pairs[pid].label, sft_order[pid]
        ok = [c for c in group if c.order == order and chain_problem(c.text, shown(label, order)) is None]
        if not ok:
            dropped["no chain names the gold label in format"] += 1
            continue
        if swap:
            other = [c for c in group if c.order != order]
            right = sum(parse_msrl(c.text).winner == shown(label, c.order) for c in other)
            if 2 * right <= len(other) or not other:
                dropped["not consistent under A/B swap"] += 1
                continue
        kept[pid] = max(ok, key=lambda c: c.confidence)  # the first of equals: sampling order
    return kept, dropped


def sample_chains(
    backend: Backend,
    views: list[LabelledPair],
    sft_order: dict[str, Order],
    *,
    samples: int,
    temperature: float,
    max_tokens: int,
    seed: int,
    swap: bool,
) -> list[Chain]:
    """`samples` msrl judgments of every caption view in its SFT order (and, with `swap`, in the other order).

    The Judge shows a request in the given order, so a view whose SFT order is BA is handed over with A and B
    exchanged: its first candidate is then the real pair's B, as the SFT example will show it.
    """
    stage = load_method("msrl").stages[-1].name
    requests = [
        v.request
        if sft_order[v.request.id] == "AB"
        else v.request.model_copy(update={"a": v.request.b, "b": v.request.a})
        for v in views
    ]
    chains: list[Chain] = []
    for k in range(samples):
        config = JudgeConfig(
            model="<cmkd>",
            judge="msrl",
            swap=swap,
            presentation="given",
            sampling={"temperature": temperature, "max_tokens": max_tokens, "seed": seed + k, "top_logprobs": 5},
        )
        for verdict in Judge(config, backend=backend).judge_batch(requests):
            base = sft_order[verdict.id]
            for result in verdict.orders:
                text = verdict.raw.get(f"{result.shown_order}/{stage}")
                if text is None:
                    continue
                # result.p_a is P(the handed-over A): the shown A in the AB job, the shown B in the BA job.
                p_shown_a = (
                    None if result.p_a is None else result.p_a if result.shown_order == "AB" else 1.0 - result.p_a
                )
                chains.append(
                    Chain(verdict.id, base if result.shown_order == "AB" else flip_order(base), text, p_shown_a)
                )
    return chains


def sft_orders(pairs: list[LabelledPair], order_seed: int) -> dict[str, Order]:
    """The A/B order `deltarubric.train.sft.sft_examples` shows each pair in (step 0, chain 0)."""
    return {p.request.id: order_for(order_seed, p.request.id, 0, 0) for p in pairs}


def distilled_pair(real: LabelledPair, chain: Chain, *, caption: bool) -> LabelledPair:
    """The real pair whose msrl target is the chain's reasoning (and the gold caption when `caption`); the target's
    <type> and <answer> are the pair's (`sft_examples` renders them).

    `sft_examples` writes a rationale given in the caller's labels into the shown order with `shown_text`; the chain
    is already in the shown order, so it is handed over relabelled once: the two relabellings cancel exactly.
    """
    think = parse_msrl(chain.text).rationale
    rationale = shown_text(think, chain.order)
    return LabelledPair(
        request=real.request, label=real.label, caption=real.caption if caption else None, rationale=rationale
    )
