"""Parsers for what the judge model writes. None of them raises on any text: what cannot be read is `None`.

Labels here are the ones the model saw ("A" = shown first); mapping back to the caller's labels happens in rm/.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

MAX_CHECKLIST_ITEMS = 4

# A 'Winner: [[A]] or [[B]]' line is the template echoed back, not a vote: the lookahead skips it.
_WINNER_RE = re.compile(r"winner\W{0,6}\[\[\s*([AB])\s*\]\](?!\s*(?:or|/|,)\s*\[\[)", re.IGNORECASE)
_BRACKET_RE = re.compile(r"\[\[\s*([AB])\s*\]\]")
_ANSWER_RE = re.compile(r"<answer>\s*([AB])\s*</answer>", re.IGNORECASE)
_TAG_RE = {t: re.compile(rf"<{t}>(.*?)</{t}>", re.IGNORECASE | re.DOTALL) for t in ("type", "caption", "think")}
_ITEM_RE = re.compile(r"(?:^|(?<=\s))(\d{1,2})[.)]\s+")
_LINE_ITEM_RE = re.compile(r"^[ \t*#>]*(\d{1,2})[.)]\s+", re.MULTILINE)
_BULLET_RE = re.compile(r"^\s*[-*•]\s+(.+)$", re.MULTILINE)
_THINK_OPEN_RE = re.compile(r"\s*<think>", re.IGNORECASE)
_THINK_CLOSE_RE = re.compile(r"</think>", re.IGNORECASE)
# The label needs its colon, so prose such as "favors a warm tone" is not read as a vote.
_FAVORS_RE = re.compile(r"\**favou?rs\**\s*[:：]\s*\**\s*(A|B|Neither)\b\**", re.IGNORECASE)
_SECTION_RE = re.compile(
    r"^\W*(generated checklist|checklist|analysis|justification|winner)\W*:[*_]*", re.IGNORECASE | re.MULTILINE
)
# A checklist item that tells the verifier the answer: verdict tags, "winner", "X is better", preferences.
_LEAK_RE = re.compile(
    r"\[\[|\bwinner\b|\bfavou?rs\s*:|\bprefer(?:s|red)?\s+(?:response|image|video|candidate|answer)\b|"
    r"\b[AB]\s+(?:is|was)\s+preferred\b|\b(?:i|we)\s+prefer\b|"
    r"\b(?:response|image|video|candidate|answer)\s+[AB]\b[^?]*?\b(?:is|was)\s+"
    r"(?:better|worse|superior|inferior|correct|incorrect|right|wrong|more accurate|less accurate)\b",
    re.IGNORECASE,
)


@dataclass
class Parsed:
    """One reply, read. `winner_pos` is the character offset of the verdict letter, used to find its logprobs.

    `label` is the vote exactly as the parser read it, before it became a winner: the letter as written ('A', 'b')
    for our judges, the answer number for VL-RewardBench ('1', '3'), the verdict string for GenAI-Bench
    ('[[A=B=Bad]]', or a two-label line that is no verdict), the tag for Multimodal RewardBench ('[[A]]'). It can be
    set where `winner` is None (an answer number other than 1 or 2): official scorers read it, not the raw text."""

    winner: str | None = None
    winner_pos: int | None = None
    label: str | None = None
    rationale: str = ""
    findings: list[tuple[str, str | None]] = field(default_factory=list)  # (text, "A"|"B"|"Neither"|None)
    checklist: list[str] = field(default_factory=list)
    task_type: str | None = None
    thinking: str = ""
    leaked: int = 0  # checklist items dropped because they gave the verdict away

    @property
    def ok(self) -> bool:
        return self.winner is not None


def split_thinking(text: str) -> tuple[str, str, int]:
    """(thinking, rest, offset of rest in text) for Thinking models that open with a <think> block.

    Qwen3 Thinking templates put `<think>` in the prompt, so a reply may hold only the closing tag.
    An unterminated block means the model ran out of tokens while thinking: all of it is thinking.
    Tags are found with case-insensitive regexes on the text itself, so offsets stay exact for any Unicode.
    """
    opening = _THINK_OPEN_RE.match(text)
    close = _THINK_CLOSE_RE.search(text, opening.end() if opening else 0)
    if opening:
        if close is None:
            return text[opening.end() :], "", len(text)
        return text[opening.end() : close.start()], text[close.end() :], close.end()
    if close and not re.search("<think>", text[: close.start()], re.IGNORECASE):
        return text[: close.start()], text[close.end() :], close.end()
    return "", text, 0


def _sections(text: str) -> dict[str, str]:
    """Text under each 'Name:' header (lower-cased name), up to the next header."""
    heads = list(_SECTION_RE.finditer(text))
    out: dict[str, str] = {}
    for h, nxt in zip(heads, heads[1:] + [None]):
        out[h.group(1).lower()] = text[h.end() : nxt.start() if nxt else len(text)].strip()
    return out


def _counting(marks: Iterable[re.Match[str]]) -> list[re.Match[str]]:
    """The markers that count up by one from the first (1, 2, 3 ...); other numbers are text."""
    kept: list[re.Match[str]] = []
    for m in marks:
        if not kept or int(m.group(1)) == int(kept[0].group(1)) + len(kept):
            kept.append(m)
    return kept


def _numbered(text: str) -> list[str]:
    """Items of a '1. ... 2. ...' list.

    A list laid out one item per line is split at line starts only, so numbers inside an item ("says 4. It") stay
    in it; a list run together on one line is split at markers that count up by one. Without numbers, bullet lines
    are the items.
    """
    marks = _counting(_LINE_ITEM_RE.finditer(text))
    if len(marks) < 2:
        marks = _counting(_ITEM_RE.finditer(text))
    if not marks:
        return [" ".join(i.split()) for i in _BULLET_RE.findall(text) if i.strip()]
    items = [text[m.end() : n.start() if n else len(text)] for m, n in zip(marks, marks[1:] + [None])]
    return [" ".join(i.split()) for i in items if i.strip()]


def find_winner(text: str) -> tuple[str | None, int | None]:
    """The verdict from 'Winner: [[X]]' (last one), else a lone [[X]] tag; both letters without a Winner line is
    ambiguous."""
    hits = list(_WINNER_RE.finditer(text))
    if not hits:
        hits = list(_BRACKET_RE.finditer(text))
        if len({h.group(1) for h in hits}) != 1:
            return None, None
    last = hits[-1]
    return last.group(1).upper(), last.start(1)


def parse_checklist(text: str) -> Parsed:
    """The planner's checklist: numbered questions, leaking items dropped, at most four kept."""
    thinking, body, _ = split_thinking(text)
    sections = _sections(body)
    block = sections.get("generated checklist", sections.get("checklist", body))
    numbered = _numbered(block)
    items = [i for i in numbered if not _LEAK_RE.search(i)]
    return Parsed(checklist=items[:MAX_CHECKLIST_ITEMS], thinking=thinking, leaked=len(numbered) - len(items))


def parse_verdict(text: str) -> Parsed:
    """Direct judge and Checklist Verifier: 'Analysis:' (items ending 'Favors: X'), 'Justification:',
    'Winner: [[X]]'."""
    thinking, body, offset = split_thinking(text)
    winner, pos = find_winner(body)
    sections = _sections(body)
    findings = []
    for item in _numbered(sections.get("analysis", "")):
        favors = _FAVORS_RE.findall(item)
        label = favors[-1].capitalize() if favors else None
        findings.append((_FAVORS_RE.sub("", item).strip(" .;"), "Neither" if label == "Neither" else label))
    rationale = sections.get("justification") or sections.get("analysis", "")
    return Parsed(
        winner=winner,
        winner_pos=None if pos is None else pos + offset,
        label=None if pos is None else body[pos],
        rationale=_BRACKET_RE.sub("", rationale).strip(),
        findings=findings,
        thinking=thinking,
    )


def parse_msrl(text: str) -> Parsed:
    """MSRL: <type>, optional <caption>, <think>, <answer>A|B</answer> (last answer tag wins, case-insensitive)."""
    lead_thinking, body, offset = split_thinking(text)
    answers = list(_ANSWER_RE.finditer(body))
    tags = {t: r.findall(body) for t, r in _TAG_RE.items()}
    task = " ".join(tags["type"][-1].split()).lower().replace(" ", "_").replace("-", "_") if tags["type"] else None
    return Parsed(
        winner=answers[-1].group(1).upper() if answers else None,
        winner_pos=answers[-1].start(1) + offset if answers else None,
        label=answers[-1].group(1) if answers else None,
        rationale=(tags["think"][-1] if tags["think"] else lead_thinking).strip(),
        task_type=task or None,
        thinking=lead_thinking,
    )


_VLRB_RE = re.compile(
    r"(?:Overall Judgment|Therefore)\s*.*\s*-*\s*Answer\s*(\d+)\s*is\s*(?:the\s*)?(?:slightly\s*)?better", re.IGNORECASE
)
_GENAI_VOTE_RE = re.compile(r"\[\[.*\]\]")
# GenAI-Bench's verdict strings (its official parser compares them exactly) and the side each one gives. The four the
# official prompt offers are among them; '[[A>>B]]', '[[B>>A]]' and '[[A=B]]' are the older labels it still accepts.
GENAI_VOTES = {
    "[[A>>B]]": "A",
    "[[A>B]]": "A",
    "[[B>>A]]": "B",
    "[[B>A]]": "B",
    "[[A=B]]": "tie",
    "[[A=B=Good]]": "tie",
    "[[A=B=Bad]]": "tie",
}


def vlrb_answer(text: str) -> str | None:
    """The number VL-RewardBench's official rule reads (`cal.py`): drop newlines and '*', then the last
    'Answer N is (the) (slightly) better' after the first 'Overall Judgment' or 'Therefore' (case-insensitive).

    N is any run of Unicode decimal digits, read by value as `int()` reads it: 'Answer ２' and 'Answer 02' are 2.
    Returned as ASCII digits without leading zeros ('0' for zero), so a number of any length compares exactly
    (cal.py's `int()` refuses more than 4,300 digits; such a number is here simply not 1 or 2). None: no match."""
    m = _VLRB_RE.search(text.replace("\n", "").replace("*", ""))
    if m is None:
        return None
    digits = m.group(1)
    if not digits.isascii():
        digits = "".join(str(unicodedata.decimal(ch)) for ch in digits)
    return digits.lstrip("0") or "0"


def parse_vlrb(text: str) -> Parsed:
    """VL-RewardBench's official rule (`vlrb_answer`): Answer 1 -> A, 2 -> B (by value: '01', '１' too); any other
    number has no side here (the official metric still counts it: see eval/benchmarks/vl_rewardbench.py)."""
    number = vlrb_answer(text)
    winner = {"1": "A", "2": "B"}.get(number or "")
    return Parsed(winner=winner, winner_pos=None, label=number, rationale=text.strip() if winner else "")


def genai_vote(text: str) -> str | None:
    """GenAI-Bench's verdict string, exactly as the official parser reads it (`inference.py:parse_response`: a greedy
    '[[.*]]' search with the `regex` module, which matches as `re` does here): from the first '[[' with a ']]' after
    it on its line to the last ']]' of that line, no normalisation. Two labels on one line ('[[A>B]] or [[B>A]]')
    are one string that is no verdict, so the item is wrong, as officially."""
    m = _GENAI_VOTE_RE.search(text)
    return m.group(0) if m else None


def parse_genai_vote(text: str) -> Parsed:
    """GenAI-Bench's official rule (`genai_vote`), compared as an exact string. Both kinds of tie ('Good', 'Bad')
    are 'tie' as a winner; `label` keeps the exact string, which is what the official metric scores."""
    m = _GENAI_VOTE_RE.search(text)
    winner = GENAI_VOTES.get(m.group(0)) if m else None
    decisive = winner in ("A", "B")
    return Parsed(
        winner=winner,
        winner_pos=m.start() + 2 if m and decisive else None,
        label=m.group(0) if m else None,
        rationale=text[: m.start()].strip() if m else "",
    )


def parse_mmrb(text: str) -> Parsed:
    """Multimodal RewardBench's official rule: '[[A]]' anywhere -> A, else '[[B]]' -> B. (Its random guess for
    unparsable outputs belongs to the scorer, which draws from one seeded stream.)"""
    for letter in "AB":
        tag = f"[[{letter}]]"
        if tag in text:
            at = text.index(tag)
            return Parsed(winner=letter, winner_pos=at + 2, label=tag, rationale=text[:at].strip())
    return Parsed()


Product = Literal["checklist", "verdict"]  # what a stage's reply is read for


@dataclass(frozen=True)
class Parser:
    """A parser by name, with what it reads out of a reply; a prompt file's stage must declare the same product."""

    read: Callable[[str], Parsed]
    produces: Product

    def __call__(self, text: str) -> Parsed:
        return self.read(text)


PARSERS: dict[str, Parser] = {
    "checklist": Parser(parse_checklist, "checklist"),
    "verdict": Parser(parse_verdict, "verdict"),
    "msrl": Parser(parse_msrl, "verdict"),
    "vlrb": Parser(parse_vlrb, "verdict"),
    "genai_vote": Parser(parse_genai_vote, "verdict"),
    "mmrb": Parser(parse_mmrb, "verdict"),
}
