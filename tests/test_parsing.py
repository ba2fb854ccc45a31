"""rubrics/parsing.py: reading what the judge model writes. Literal cases first, then properties on any text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deltarubric.rubrics.parsing import (
    GENAI_VOTES,
    MAX_CHECKLIST_ITEMS,
    PARSERS,
    find_winner,
    parse_checklist,
    parse_genai_vote,
    parse_mmrb,
    parse_msrl,
    parse_verdict,
    parse_vlrb,
    split_thinking,
)


def assert_pos(text: str, winner: str | None, pos: int | None) -> None:
    """winner_pos indexes the verdict letter in the original text (case-insensitively: 'winner: [[b]]')."""
    if winner is None:
        assert pos is None
    else:
        assert 0 <= pos < len(text)
        assert text[pos].upper() == winner


# ============================================================================================ split_thinking


SPLITS = [
    # no thinking at all: everything is the reply
    ("Winner: [[A]]", "", "Winner: [[A]]", 0),
    # a full <think> block first
    ("<think>hmm</think>\nWinner: [[A]]", "hmm", "\nWinner: [[A]]", 18),
    # leading whitespace before <think> is allowed, and the tags are case-insensitive
    ("\n  <THINK>hmm</Think>rest", "hmm", "rest", 21),
    # only the closing tag: the Qwen3 Thinking template put <think> in the prompt
    ("I weigh both.</think>\n\nWinner: [[B]]", "I weigh both.", "\n\nWinner: [[B]]", 21),
    # a closing tag at the very start: empty thinking
    ("</think>rest", "", "rest", 8),
    # unterminated: the model ran out of tokens while thinking; all of it is thinking, no reply
    ("<think>still going [[A]]", "still going [[A]]", "", 24),
    # a <think> that is not first, with its closing tag later: not a leading block, left alone
    ("Preface <think>a</think> rest", "", "Preface <think>a</think> rest", 0),
    # only the first </think> closes the leading block
    ("<think>a</think>b</think>c", "a", "b</think>c", 16),
]


@pytest.mark.parametrize("text, thinking, rest, offset", SPLITS)
def test_split_thinking(text, thinking, rest, offset):
    assert split_thinking(text) == (thinking, rest, offset)
    assert text[offset:] == rest  # the offset always locates `rest` in the original text


# 'İ' (U+0130) lower-cases to two characters: offsets must come from the original text, not its lower-case copy.
@pytest.mark.parametrize(
    "text",
    [
        "<think>İstanbul</think>Winner: [[A]]",  # full block
        "İstanbul</think>Winner: [[A]]",  # closing tag only
    ],
)
def test_split_thinking_with_dotted_capital_i(text):
    assert split_thinking(text)[:2] == ("İstanbul", "Winner: [[A]]")


def test_verdict_after_turkish_thinking_is_kept():
    text = "<think>İİİİİİİİİ İyi</think>Winner: [[A]]"
    assert parse_verdict(text).winner == "A"


# ========================================================================================= find_winner / parse_verdict


DELTA = """\
Analysis:
1. The image shows two cats. Response A says two cats. Response B says three. Favors: A
2. The sofa is red. Both say red. Favors: Neither
3. The lamp is on. Only Response B mentions it. Favors: B
Justification: A gets the count right, which matters most.
Winner: [[A]]"""

WINNERS = [
    # the DeltaRubric verifier format
    pytest.param(DELTA, "A", id="deltarubric"),
    # markdown bold around the header: "**Winner:** [[B]]" (up to 6 non-word characters between)
    pytest.param("Some analysis.\n**Winner:** [[B]]", "B", id="bold-header"),
    pytest.param("**Winner**: **[[B]]**", "B", id="bold-both"),
    # lower case: _WINNER_RE is IGNORECASE and the letter is upper-cased, so this is meant to be read
    pytest.param("winner: [[b]]", "B", id="lowercase"),
    pytest.param("WINNER: [[ a ]]", "A", id="uppercase-spaced"),
    # the verdict on its own line after the header
    pytest.param("Winner:\n[[A]]", "A", id="next-line"),
    # several Winner lines: the model changed its mind, the last one counts
    pytest.param("Winner: [[A]]\nWait, I miscounted.\nWinner: [[B]]", "B", id="last-winner-line"),
    # a lone [[B]] without a Winner line
    pytest.param("Overall I pick [[B]].", "B", id="lone-tag"),
    # the same tag twice is still unambiguous
    pytest.param("[[A]] ... so [[A]]", "A", id="repeated-tag"),
    # both tags without a Winner line: ambiguous
    pytest.param("[[A]] has the count, [[B]] the colour.", None, id="both-tags"),
    # both tags, but a Winner line settles it
    pytest.param("[[A]] has the count, [[B]] the colour.\nWinner: [[A]]", "A", id="both-tags+winner"),
    # words between 'Winner' and the tag: not a Winner line, but the lone tag still counts
    pytest.param("The winner is clearly [[B]]", "B", id="winner-is"),
    # no verdict at all
    pytest.param("Both responses are fine.", None, id="no-verdict"),
    # a bare letter is not a verdict: the double brackets are required
    pytest.param("Winner: A", None, id="no-brackets"),
    pytest.param("Winner: [A]", None, id="single-brackets"),
    # only A and B exist
    pytest.param("Winner: [[C]]", None, id="letter-c"),
    # a lone lower-case tag is NOT read (_BRACKET_RE is case-sensitive, unlike the Winner line)
    pytest.param("I pick [[b]].", None, id="lone-lowercase-tag"),
    # the format line echoed back is not a vote
    pytest.param("Winner: [[A]] or [[B]]", None, id="template-echo"),
]


@pytest.mark.parametrize("text, winner", WINNERS)
def test_find_winner_and_parse_verdict(text, winner):
    w, pos = find_winner(text)
    assert w == winner
    assert_pos(text, w, pos)
    p = parse_verdict(text)
    assert (p.winner, p.winner_pos, p.ok) == (w, pos, winner is not None)


def test_last_winner_line_position():
    text = "Winner: [[A]]\nWinner: [[B]]"
    assert find_winner(text) == ("B", text.rindex("B"))


def test_deltarubric_findings_and_rationale():
    p = parse_verdict(DELTA)
    assert p.ok and p.winner == "A" and DELTA[p.winner_pos] == "A" and p.winner_pos == len(DELTA) - 3
    assert p.findings == [
        ("The image shows two cats. Response A says two cats. Response B says three", "A"),
        ("The sofa is red. Both say red", "Neither"),
        ("The lamp is on. Only Response B mentions it", "B"),
    ]
    assert p.rationale == "A gets the count right, which matters most."
    assert p.thinking == ""


def test_items_run_together_on_one_line():
    text = (
        "Analysis: 1. Count is two. Response A says two. Favors: A. 2. Colour is red. Both agree. Favors: Neither. "
        "3. Lamp on. favours: b\nJustification: A counts right [[A]].\nWinner: [[A]]"
    )
    p = parse_verdict(text)
    # "favours: b": British spelling and lower case are read too
    assert p.findings == [
        ("Count is two. Response A says two", "A"),
        ("Colour is red. Both agree", "Neither"),
        ("Lamp on", "B"),
    ]
    assert p.winner == "A" and text[p.winner_pos] == "A"
    assert "[[" not in p.rationale  # verdict tags are removed from the rationale


def test_markdown_verdict():
    text = (
        "**Analysis:**\n1. Two cats. **Favors:** B\n2. Red sofa. **Favors: Neither**\n"
        "**Justification:** B is right.\n**Winner:** [[B]]"
    )
    p = parse_verdict(text)
    assert p.winner == "B" and text[p.winner_pos] == "B"
    assert [label for _, label in p.findings] == ["B", "Neither"]  # bold labels are read
    assert p.findings[0] == ("Two cats", "B")


def test_markdown_finding_text_has_no_leftover_asterisks():
    text = "Analysis:\n1. Red sofa. **Favors: Neither**\nWinner: [[A]]"
    assert parse_verdict(text).findings == [("Red sofa", "Neither")]


def test_markdown_rationale_has_no_leftover_asterisks():
    text = "**Justification:** B is right.\n**Winner:** [[B]]"
    assert parse_verdict(text).rationale == "B is right."


def test_finding_without_favors_and_rationale_fallback():
    text = "Analysis:\n1. Could not tell.\n2. Red. Favors: A\nWinner: [[A]]"
    p = parse_verdict(text)
    assert p.findings == [("Could not tell", None), ("Red", "A")]
    assert p.rationale.startswith("1. Could not tell.")  # no Justification: the analysis stands in


def test_number_at_end_of_sentence_is_not_an_item():
    text = "Analysis:\n1. The image shows 3 cats. Response A says 4. Response B says 3. Favors: B\nWinner: [[B]]"
    assert parse_verdict(text).findings == [("The image shows 3 cats. Response A says 4. Response B says 3", "B")]


# ---------------------------------------------------------------------------------- thinking + verdict


THINKING_VERDICTS = [
    # a full <think> block first: a tag inside the thinking is ignored, the reply's Winner line counts
    pytest.param("<think>Maybe [[B]]? No.</think>\nWinner: [[A]]", "A", "Maybe [[B]]? No.", id="think-block"),
    # only the closing tag (the opening one was in the prompt)
    pytest.param("Hmm, [[B]] is tempting.</think>\n\nWinner: [[A]]", "A", "Hmm, [[B]] is tempting.", id="closing-only"),
    # only the closing tag, and the reply is a lone tag
    pytest.param("Thinking about A and B.</think>[[B]]", "B", "Thinking about A and B.", id="closing-only-lone"),
    # unterminated <think>: all thinking, so no verdict even though it contains one
    pytest.param("<think>I lean [[A]].\nWinner: [[A]]", None, "I lean [[A]].\nWinner: [[A]]", id="unterminated"),
    # whitespace before the block and upper-case tags
    pytest.param("\n\n<THINK>x</THINK>\nWinner: [[B]]", "B", "x", id="leading-ws"),
    # a Winner line inside the thinking does not count when the reply has its own tag
    pytest.param("<think>Winner: [[A]]?</think>I choose [[B]]", "B", "Winner: [[A]]?", id="winner-in-thinking"),
]


@pytest.mark.parametrize("text, winner, thinking", THINKING_VERDICTS)
def test_thinking_then_verdict(text, winner, thinking):
    p = parse_verdict(text)
    assert (p.winner, p.thinking) == (winner, thinking)
    assert_pos(text, p.winner, p.winner_pos)
    if winner is not None:
        assert text[p.winner_pos] == winner  # in the ORIGINAL text, past the thinking


def test_thinking_with_full_deltarubric_reply():
    text = "<think>" + "Let me check each item. [[B]] maybe. " * 20 + "</think>\n" + DELTA
    p = parse_verdict(text)
    assert p.winner == "A" and p.winner_pos == len(text) - 3 and text[p.winner_pos] == "A"
    assert len(p.findings) == 3


# ============================================================================================ parse_checklist


CHECKLISTS = [
    # the planner's format
    pytest.param(
        "Generated Checklist:\n1. Is the cat black?\n2. Are there two cats?",
        ["Is the cat black?", "Are there two cats?"],
        id="format",
    ),
    # chatter before the header is ignored
    pytest.param("Sure, here it is.\nGenerated Checklist:\n1. Is the cat black?", ["Is the cat black?"], id="preamble"),
    # items run together on the header's line
    pytest.param(
        "Generated Checklist: 1. Is the cat black? 2. Are there two cats? 3. Is the sofa red?",
        ["Is the cat black?", "Are there two cats?", "Is the sofa red?"],
        id="one-line",
    ),
    # a plain 'Checklist:' header
    pytest.param(
        "Checklist:\n1) Is the sign in English?\n2) Is it raining?",
        ["Is the sign in English?", "Is it raining?"],
        id="checklist-paren",
    ),
    # a bold header with numbered items
    pytest.param("**Generated Checklist:**\n1. Is the cat black?", ["Is the cat black?"], id="bold-header-numbered"),
    # no header: numbered lines anywhere in the reply
    pytest.param(
        "1. Is the cat black?\n2. Are there two cats?", ["Is the cat black?", "Are there two cats?"], id="no-header"
    ),
    # an item wrapped over two lines is one item, whitespace collapsed
    pytest.param(
        "Generated Checklist:\n1. Is the cat\n   black?\n2. Is it day?",
        ["Is the cat black?", "Is it day?"],
        id="wrapped",
    ),
    # bullet fallback: -, * and • lines when nothing is numbered
    pytest.param(
        "Generated Checklist:\n- Is X red?\n* Is Y round?\n• Is Z big?",
        ["Is X red?", "Is Y round?", "Is Z big?"],
        id="bullets",
    ),
    # at most four items kept, in order
    pytest.param(
        "Generated Checklist:\n" + "\n".join(f"{i}. Question {i}?" for i in range(1, 8)),
        [f"Question {i}?" for i in range(1, 5)],
        id="max-4",
    ),
    # two-digit numbers are item markers too
    pytest.param("10. Is it ten?\n11. Is it eleven?", ["Is it ten?", "Is it eleven?"], id="two-digit"),
    # leaking items are dropped, a neutral fact-contrastive question is kept
    pytest.param(
        "Generated Checklist:\n"
        "1. Response A is better at counting the cats.\n"  # names the better response
        "2. Is the shirt red, not blue?\n"  # neutral: kept
        "3. Check [[A]].\n"  # a verdict tag
        "4. Winner: B\n"  # names a winner
        "5. Favors: B\n"  # the verifier's label
        "6. I prefer the second image.\n"  # a preference
        "7. Image B was more accurate about the colour.\n"  # 'was more accurate'
        "8. Answer A is wrong about the count?\n",  # 'is wrong' before the question mark
        ["Is the shirt red, not blue?"],
        id="leaks",
    ),
    # leaks are dropped before the cap of four: four good items survive three leaking ones
    pytest.param(
        "1. Response A is correct.\n2. Is it red?\n3. [[B]]\n4. Is it round?\n5. Winner?\n6. Is it big?\n"
        "7. Is it wet?\n8. Is it old?",
        ["Is it red?", "Is it round?", "Is it big?", "Is it wet?"],
        id="leaks-before-cap",
    ),
    # mentioning a response is fine as long as it does not say which is right
    pytest.param(
        "1. Do Response A and Response B agree on the count?",
        ["Do Response A and Response B agree on the count?"],
        id="neutral-mention",
    ),
    # nothing usable
    pytest.param("I cannot produce a checklist.", [], id="nothing"),
    pytest.param("", [], id="empty"),
]


@pytest.mark.parametrize("text, items", CHECKLISTS)
def test_parse_checklist(text, items):
    p = parse_checklist(text)
    assert p.checklist == items
    assert p.winner is None and not p.ok


def test_checklist_after_thinking():
    # the thinking's own numbered list, leaking or not, is not the checklist
    text = "<think>1. Response A is better.\n2. Is it red?</think>\nGenerated Checklist:\n1. Is the cat black?"
    p = parse_checklist(text)
    assert p.checklist == ["Is the cat black?"]
    assert p.thinking == "1. Response A is better.\n2. Is it red?"


def test_checklist_unterminated_thinking_is_empty():
    assert parse_checklist("<think>Generated Checklist:\n1. Is it red?").checklist == []


def test_checklist_stops_at_next_section():
    text = "Generated Checklist:\n1. Is the cat black?\nAnalysis:\n1. It is black. Favors: A"
    assert parse_checklist(text).checklist == ["Is the cat black?"]


def test_max_checklist_items_constant():
    assert MAX_CHECKLIST_ITEMS == 4


def test_bold_header_with_bullets():
    text = "**Generated Checklist:**\n- Is X red?\n- Is Y round?"
    assert parse_checklist(text).checklist == ["Is X red?", "Is Y round?"]


# ============================================================================================ parse_msrl


MSRL = [
    # the full format
    pytest.param(
        "<type>image_understanding</type><caption>Two cats on a sofa.</caption>"
        "<think>A counts right.</think><answer>A</answer>",
        "A",
        "image_understanding",
        "A counts right.",
        "",
        id="full",
    ),
    # tags on separate lines, case-insensitive tags, padded lower-case answer
    pytest.param(
        "<TYPE>Image Understanding</TYPE>\n<Caption>x</Caption>\n<Think>B is right.</Think>\n<Answer> b </Answer>",
        "B",
        "image_understanding",
        "B is right.",
        "",
        id="case-insensitive",
    ),
    # type normalisation: hyphens and spaces become underscores, lower case, collapsed whitespace
    pytest.param(
        "<type>image-generation</type><think>t</think><answer>B</answer>", "B", "image_generation", "t", "", id="hyphen"
    ),
    pytest.param(
        "<type>  Video \n Understanding </type><answer>A</answer>", "A", "video_understanding", "", "", id="spaces"
    ),
    # an empty type is no type
    pytest.param("<type> </type><answer>A</answer>", "A", None, "", "", id="empty-type"),
    # missing answer: no winner, but the rest is still read
    pytest.param("<type>text</type><think>unsure</think>", None, "text", "unsure", "", id="no-answer"),
    # an answer that is not a single A or B is no answer
    pytest.param("<type>text</type><answer>A or B</answer>", None, "text", "", "", id="two-letters"),
    pytest.param("<answer>[[A]]</answer>", None, None, "", "", id="brackets-inside"),
    # the last answer tag counts
    pytest.param(
        "<type>text</type><think>maybe <answer>B</answer></think><answer>A</answer>",
        "A",
        "text",
        "maybe <answer>B</answer>",
        "",
        id="last-answer",
    ),
    # a leading Thinking block (full tags) before the MSRL tags
    pytest.param(
        "<think>long reasoning <answer>B</answer></think>\n<type>text</type><think>short</think><answer>A</answer>",
        "A",
        "text",
        "short",
        "long reasoning <answer>B</answer>",
        id="leading-thinking",
    ),
    # a leading Thinking block with only its closing tag
    pytest.param(
        "long reasoning</think>\n<type>image_editing</type><think>short</think><answer>B</answer>",
        "B",
        "image_editing",
        "short",
        "long reasoning",
        id="leading-closing-only",
    ),
    # the model skipped <type>: its first <think> is read as the leading block, and stands in as the rationale
    pytest.param("<think>lead</think><answer>B</answer>", "B", None, "lead", "lead", id="think-then-answer"),
    # unterminated leading thinking: no answer even though one is inside
    pytest.param(
        "<think>I say <answer>A</answer>",
        None,
        None,
        "I say <answer>A</answer>",
        "I say <answer>A</answer>",
        id="unterminated",
    ),
]


@pytest.mark.parametrize("text, winner, task_type, rationale, thinking", MSRL)
def test_parse_msrl(text, winner, task_type, rationale, thinking):
    p = parse_msrl(text)
    assert (p.winner, p.task_type, p.rationale, p.thinking) == (winner, task_type, rationale, thinking)
    assert p.ok == (winner is not None)
    assert_pos(text, p.winner, p.winner_pos)


def test_msrl_answer_position_in_original_text():
    text = "reasoning</think><type>text</type><answer> b </answer>"
    p = parse_msrl(text)
    assert p.winner == "B" and text[p.winner_pos] == "b" and p.winner_pos == text.index(" b ") + 1


# ============================================================================================ properties


def test_parsers_table():
    assert {k: PARSERS[k].read for k in ("checklist", "verdict", "msrl")} == {
        "checklist": parse_checklist,
        "verdict": parse_verdict,
        "msrl": parse_msrl,
    }
    assert set(PARSERS) == {"checklist", "verdict", "msrl", "vlrb", "genai_vote", "mmrb"}
    assert {k for k, p in PARSERS.items() if p.produces == "checklist"} == {"checklist"}
    assert PARSERS["verdict"]("Winner: [[B]]") == parse_verdict("Winner: [[B]]")  # a parser is called as a function


FRAGMENTS = [
    "[[",
    "]]",
    "[[A]]",
    "[[B]]",
    "[[a]]",
    "[[ b ]]",
    "A",
    "B",
    "a",
    "b",
    "C",
    "Neither",
    "Winner:",
    "winner",
    "**Winner:**",
    "WINNER",
    "<think>",
    "</think>",
    "<THINK>",
    "</Think>",
    "<answer>",
    "</answer>",
    "<ANSWER>",
    "<type>",
    "</type>",
    "<caption>",
    "</caption>",
    "Favors:",
    "favours",
    "Analysis:",
    "Justification:",
    "Generated Checklist:",
    "Checklist:",
    "1.",
    "2. ",
    "12.",
    "3)",
    "99.",
    "- ",
    "* ",
    "•",
    "**",
    "\n",
    " ",
    "\t",
    ":",
    "：",
    "?",
    "Response A is better",
    "prefer",
    "İ",
    "ß",
    "é",
    "中文",
    "😀",
    "\u200b",
    "\r\n",
]

confusing_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=40).map("".join)

PROPERTY = settings(max_examples=300, deadline=None, database=None)


def check_parsed(name: str, text: str) -> None:
    p = PARSERS[name](text)  # never raises
    assert p.winner in ((None, "A", "B", "tie") if name == "genai_vote" else (None, "A", "B"))
    assert p.ok == (p.winner is not None)
    assert len(p.checklist) <= MAX_CHECKLIST_ITEMS
    assert all(item.strip() for item in p.checklist)
    assert all(label in (None, "A", "B", "Neither") for _, label in p.findings)
    assert p.task_type is None or p.task_type.strip()
    if name == "vlrb" or p.winner == "tie":  # 'Answer 1'/'Answer 2' and ties have no A/B letter to locate
        assert p.winner_pos is None
    else:
        assert_pos(text, p.winner, p.winner_pos)
    # the label is what the winner was read from, exactly as written
    if name == "checklist":
        assert p.label is None
    elif name == "vlrb":
        assert p.winner == {"1": "A", "2": "B"}.get(p.label or "") and (p.label is None or p.label.isdigit())
    elif name == "genai_vote":
        assert p.winner == GENAI_VOTES.get(p.label or "") and (p.label is None or p.label in text)
    elif name == "mmrb":
        assert p.label == (f"[[{p.winner}]]" if p.winner else None)
    else:
        assert p.label == (text[p.winner_pos] if p.winner else None)


@pytest.mark.parametrize("name", sorted(PARSERS))
@PROPERTY
@given(text=st.text())
def test_parsers_on_any_text(name, text):
    check_parsed(name, text)


@pytest.mark.parametrize("name", sorted(PARSERS))
@PROPERTY
@given(text=confusing_text)
def test_parsers_on_confusing_text(name, text):
    check_parsed(name, text)


@PROPERTY
@given(text=st.one_of(st.text(), confusing_text))
def test_split_thinking_offset_locates_the_rest(text):
    thinking, rest, offset = split_thinking(text)
    assert 0 <= offset <= len(text)
    assert text[offset:] == rest
    assert thinking in text


@PROPERTY
@given(text=confusing_text)
def test_find_winner_position(text):
    w, pos = find_winner(text)
    assert w in (None, "A", "B")
    assert_pos(text, w, pos)


@PROPERTY
@given(prefix=confusing_text, letter=st.sampled_from("AB"))
def test_a_final_winner_line_always_wins(prefix, letter):
    """Whatever precedes it, a reply ending in a Winner line is read as that line (unless it is all thinking)."""
    text = prefix + "\nWinner: [[" + letter + "]]"
    p = parse_verdict(text)
    _, rest, _ = split_thinking(text)
    if rest.endswith("Winner: [[" + letter + "]]"):
        assert p.winner == letter and p.winner_pos == len(text) - 3


# ============================================================================================ official presets
@pytest.mark.parametrize(
    "text, winner",
    [
        ("Accuracy...\nOverall Judgment: Answer 2 is better.", "B"),
        ("**Overall Judgment:** Answer 1 is slightly better", "A"),  # '*' removed before matching
        ("Overall Judgment\n- Answer 1 is the better\n one", "A"),  # newlines dropped; '(the) better' is accepted
        ("Therefore, Answer 1 is better. Overall Judgment: Answer 2 is better.", "B"),  # greedy: last after first
        ("Answer 2 is better.", None),  # needs 'Overall Judgment' or 'Therefore' first
        ("Overall Judgment: Answer 3 is better.", None),  # only 1 and 2 map to a side here
    ],
)
def test_vlrb_official_rule(text, winner):
    assert parse_vlrb(text).winner == winner


@pytest.mark.parametrize(
    "text, winner",
    [
        ("Model B wins. [[B>A]]", "B"),
        ("[[A>>B]]", "A"),
        ("[[A=B=Bad]]", "tie"),
        ("1. Model A is better: [[A>B]] 2. Model B is better: [[B>A]]", None),  # a menu echo spans both: wrong
        ("[[a>b]]", None),  # exact strings only
        ("no verdict", None),
    ],
)
def test_genai_bench_official_rule(text, winner):
    assert parse_genai_vote(text).winner == winner


@pytest.mark.parametrize(
    "text, winner",
    [("A is better [[A]]", "A"), ("[[B]] then [[A]]", "A"), ("[[B]]", "B"), ("A", None)],  # [[A]] is checked first
)
def test_mmrb_official_rule(text, winner):
    assert parse_mmrb(text).winner == winner


@pytest.mark.parametrize(
    "parse, text, label",
    [
        (parse_verdict, "Winner: [[b]]", "b"),
        (parse_msrl, "<answer> A </answer>", "A"),
        (parse_vlrb, "Overall Judgment: Answer 03 is better.", "3"),  # no side, but the official metric counts it
        (parse_vlrb, "Overall Judgment: Answer \uff12 is better.", "2"),
        (parse_genai_vote, "Final: [[A=B=Bad]].", "[[A=B=Bad]]"),
        (parse_genai_vote, "[[A>B]] or [[B>A]]", "[[A>B]] or [[B>A]]"),  # one string, no verdict: wrong officially
        (parse_mmrb, "[[B]] then [[A]]", "[[A]]"),
        (parse_verdict, "no verdict", None),
    ],
)
def test_label_is_the_vote_as_read(parse, text, label):
    assert parse(text).label == label
