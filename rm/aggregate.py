"""From raw per-order outputs to one verdict: the verdict token's probability, un-swapping, and swap aggregation."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Literal, overload

from deltarubric.rm.backends.base import TokenLogprob
from deltarubric.rm.types import OrderResult

Order = Literal["AB", "BA"]
_OTHER = {"A": "B", "B": "A"}


@overload
def flip_winner(label: str) -> str: ...
@overload
def flip_winner(label: None) -> None: ...
def flip_winner(label: str | None) -> str | None:
    """The same winner seen from the other presentation order: 'A' <-> 'B'; anything else ('tie', 'Neither', None)
    is kept. The labels shown in the 'BA' order and the caller's labels differ by exactly this, both ways."""
    return _OTHER.get(label, label) if label is not None else None


def flip_order(order: Order) -> Order:
    """The other presentation order: 'AB' <-> 'BA' (what the A/B-swapped pair shows in place of this one)."""
    return "BA" if order == "AB" else "AB"


def presentation_orders(item_id: str, seed: int, swap: bool, presentation: str) -> list[Order]:
    """Which orders to show: both with swap, else as `presentation` says ('given': A first; 'random': drawn from
    (seed, id) with a stable hash, so reruns agree)."""
    if swap:
        return ["AB", "BA"]
    if presentation == "random":
        return ["BA" if hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[0] & 1 else "AB"]
    return ["AB"]


def verdict_probability(tokens: Sequence[TokenLogprob], letter_pos: int) -> float | None:
    """P(shown A) at the verdict token, renormalised over the A and B variants of that token.

    `letter_pos` is the verdict letter's offset in the concatenated token strings. The variant is the same token
    with the letter swapped ('A' vs 'B', ' A' vs ' B', '[[A' vs '[[B'). A variant missing from the top
    alternatives counts as probability 0, so p is then 1 or 0: the top list bounds its real value tightly.
    """
    start = 0
    for tok in tokens:
        end = start + len(tok.token)
        if start <= letter_pos < end:
            rel = letter_pos - start
            letter = tok.token[rel]
            if letter.upper() not in "AB":
                return None
            case = str.lower if letter.islower() else str.upper  # '[[a]]' is compared with '[[b]]'
            variant = {x: tok.token[:rel] + case(x) + tok.token[rel + 1 :] for x in "AB"}
            known = {**tok.top, tok.token: tok.logprob}
            probs = {x: math.exp(known[v]) if v in known else 0.0 for x, v in variant.items()}
            total = probs["A"] + probs["B"]
            return probs["A"] / total if total > 0 else None
        start = end
    return None


def unswap(order: Order, winner: str | None, p_shown_a: float | None) -> tuple[str | None, float | None]:
    """Map a verdict on the shown order back to the caller's labels."""
    if order == "AB":
        return winner, p_shown_a
    return flip_winner(winner), None if p_shown_a is None else 1.0 - p_shown_a


def aggregate(results: Sequence[OrderResult]) -> tuple[str | None, float | None, bool | None, bool]:
    """(winner, p_a, consistent, parse_ok) over the orders judged, in the caller's labels.

    Policy, written once: if any order is unparsable the verdict is unparsable (winner None). Otherwise orders that
    agree give that winner; orders that disagree give 'tie' unless the mean p_a leans one way, which breaks it.
    p_a is the mean over orders when every order has one.
    """
    parse_ok = bool(results) and all(r.parse_ok for r in results)
    probs = [r.p_a for r in results]
    p_a = sum(probs) / len(probs) if results and all(p is not None for p in probs) else None  # type: ignore[misc]
    if not parse_ok:
        return None, p_a, None, False
    winners = {r.winner for r in results}
    consistent = len(winners) == 1 if len(results) > 1 else None
    if len(winners) == 1:
        return results[0].winner, p_a, consistent, True
    if p_a is not None and p_a != 0.5:
        return ("A" if p_a > 0.5 else "B"), p_a, consistent, True
    return "tie", p_a, consistent, True
