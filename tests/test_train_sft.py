"""SFT examples (gold traces, verdict-only targets, captions) rendered with the judge's own prompts, and the
labelled-pair file format they come from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deltarubric.rm.pairs import LabelledPair, PairFileError, read_pairs, write_pairs
from deltarubric.rubrics.parsing import parse_checklist, parse_verdict
from deltarubric.train.render import order_for
from deltarubric.train.sft import sft_examples
from tests.conftest import make_image


@pytest.fixture
def pairs(tmp_path: Path) -> list[LabelledPair]:
    rows = []
    for i in range(6):
        make_image(tmp_path / f"i{i}.png", seed=i)
        rows.append(
            {
                "id": f"p{i}",
                "question": "What colour is the square?",
                "images": [f"i{i}.png"],
                "a": "It is red.",
                "b": "It is blue.",
                "label": "AB"[i % 2],
                "caption": f"scene {i}",
                "checklist": ["Is the square red?", "Is the square blue?"],
                "rationale": f"Response {'AB'[i % 2]} names the right colour.",
            }
        )
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return read_pairs(tmp_path / "pairs.jsonl")


def _text(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


def test_deltarubric_traces_give_one_example_per_role_in_the_shown_order(pairs: list[LabelledPair]) -> None:
    examples = sft_examples(pairs, "deltarubric", "traces")
    assert len(examples) == 2 * len(pairs)
    for pair, planner, verifier in zip(pairs, examples[::2], examples[1::2]):
        order = order_for(0, pair.request.id, 0, 0)
        winner = pair.label if order == "AB" else {"A": "B", "B": "A"}[pair.label]
        target = _text(planner["completion"][0])
        assert parse_checklist(target).checklist == pair.checklist  # the planner learns the cleaned-checklist form
        assert target.startswith("Generated Checklist:")
        parsed = parse_verdict(_text(verifier["completion"][0]))
        assert parsed.winner == winner and {f for _, f in parsed.findings} == {winner}
        assert f"Response {winner} names the right colour." in parsed.rationale  # rationale re-labelled for the order
        # The verifier example continues the planner's conversation with the checklist as the assistant's turn.
        assert verifier["prompt"][: len(planner["prompt"])] == planner["prompt"]
        assert _text(verifier["prompt"][len(planner["prompt"])]) == target
        assert len(planner["images"]) == len(verifier["images"]) == 1
        shown_first = pair.request.a.text if order == "AB" else pair.request.b.text
        prompt_text = "".join(_text(m) for m in planner["prompt"])
        assert prompt_text.index(shown_first) < prompt_text.index(
            pair.request.b.text if order == "AB" else pair.request.a.text
        )


def test_verdict_only_and_caption_targets(pairs: list[LabelledPair]) -> None:
    verdicts = sft_examples(pairs, "direct", "verdicts")
    assert all(_text(e["completion"][0]) in ("Winner: [[A]]", "Winner: [[B]]") for e in verdicts)
    captions = sft_examples(pairs, "direct", "captions")
    assert [_text(e["completion"][0]) for e in captions] == [f"scene {i}" for i in range(6)]
    assert all(len(e["images"]) == 1 and len(e["prompt"]) == 1 for e in captions)
    with pytest.raises(ValueError, match="use --judge direct"):
        sft_examples(pairs, "deltarubric", "verdicts")


def test_captions_in_context_ask_at_the_end_of_each_judge_turn(pairs: list[LabelledPair]) -> None:
    """Every pair becomes one caption example framed by one turn of the layout judges: direct's, DeltaRubric's
    planner or its verifier (after the gold checklist); the caption question ends the prompt, the image sits where the
    judge puts it, and the target is the caption."""
    many = [
        p.model_copy(update={"request": p.request.model_copy(update={"id": f"{p.request.id}-{k}"})})
        for p in pairs
        for k in range(5)
    ]
    examples = sft_examples(many, "direct", "captions_in_context", layouts=["direct", "deltarubric"])
    assert len(examples) == len(many)
    planner = sft_examples(pairs[:1], "deltarubric", "traces")[0]["prompt"]
    direct = sft_examples(pairs[:1], "direct", "traces")[0]["prompt"]
    kinds = set()
    for pair, e in zip(many, examples):
        assert _text(e["completion"][0]) == pair.caption and len(e["images"]) == 1
        last = e["prompt"][-1]
        assert last["role"] == "user" and _text(last).endswith("Describe the image in detail.")
        assert [p["type"] for p in e["prompt"][1]["content"]][0] == "image"  # the image where the judge shows it
        system = _text(e["prompt"][0])
        if len(e["prompt"]) == 4:
            kinds.add("verifier")
            assert system == _text(planner[0]) and "1. Is the square red?" in _text(e["prompt"][2])
        else:
            kinds.add("planner" if system == _text(planner[0]) and "checklist" in _text(last).lower() else "direct")
            assert system in (_text(planner[0]), _text(direct[0]))
    assert kinds == {"direct", "planner", "verifier"}
    # Stable: the same seed frames each pair the same way.
    assert sft_examples(many, "direct", "captions_in_context", layouts=["direct", "deltarubric"]) == examples
    alone = sft_examples(pairs, "direct", "captions_in_context")  # default layout: the trained judge's own
    assert all(len(e["prompt"]) == 2 and "Winner: [[A]] or [[B]]" in _text(e["prompt"][-1]) for e in alone)


def test_trace_caption_opens_the_analysis_with_the_scene(pairs: list[LabelledPair]) -> None:
    for judge in ("direct", "deltarubric"):
        plain = sft_examples(pairs, judge, "traces")
        with_scene = sft_examples(pairs, judge, "traces", trace_caption=True)
        verdicts = [e for e in with_scene if _text(e["completion"][0]).startswith("Analysis:")]
        assert len(verdicts) == len(pairs)
        for pair, e in zip(pairs, verdicts):
            text = _text(e["completion"][0])
            assert text.startswith(f"Analysis:\nThe image shows: {pair.caption}\n1. ")
            assert (
                parse_verdict(text).winner
                == parse_verdict(text.replace(f"The image shows: {pair.caption}\n", "")).winner
            )
            assert parse_verdict(text).ok and len(parse_verdict(text).findings) == 2
        assert not any("The image shows" in _text(e["completion"][0]) for e in plain)
    # A caption laid out as a numbered list is written on one line: the verdict's items stay the checklist's.
    listed = [p.model_copy(update={"caption": "1. A red square\n2. A blue square"}) for p in pairs]
    for e in sft_examples(listed, "direct", "traces", trace_caption=True):
        text = _text(e["completion"][0])
        assert "The image shows: 1. A red square 2. A blue square\n1. Is the square red?" in text
        assert [f for f, _ in parse_verdict(text).findings][0].startswith("Is the square red?")
        assert len(parse_verdict(text).findings) == 2
    # The line names what the task's claims are checked against: two generated images "show".
    generated = pairs[0].model_copy(
        update={"request": pairs[0].request.model_copy(update={"task_type": "image_generation"})}
    )
    text = _text(sft_examples([generated], "direct", "traces", trace_caption=True)[0]["completion"][0])
    assert text.startswith(f"Analysis:\nThe images show: {pairs[0].caption}\n")


def test_captions_in_context_refuse_pairs_without_an_image_to_describe(pairs: list[LabelledPair]) -> None:
    text_only = pairs[0].model_copy(
        update={"request": pairs[0].request.model_copy(update={"images": [], "task_type": "text"})}
    )
    with pytest.raises(ValueError, match="p0.*captions_in_context needs an image.*no image"):
        sft_examples([text_only], "direct", "captions_in_context")
    with pytest.raises(ValueError, match="no caption"):
        sft_examples([pairs[0].model_copy(update={"caption": None})], "direct", "captions_in_context")


def test_unknown_caption_layout_fails_when_the_arguments_are_read(tmp_path: Path) -> None:
    """A misspelt judge in --caption_layouts is named before any example is rendered or any model loaded."""
    from deltarubric.train.config import JudgeSFTConfig

    with pytest.raises(ValueError, match="unknown judge 'deltarubrik'; available: .*deltarubric"):
        JudgeSFTConfig(output_dir=str(tmp_path), use_cpu=True, caption_layouts=["direct", "deltarubrik"])
    assert JudgeSFTConfig(output_dir=str(tmp_path), use_cpu=True, caption_layouts=["direct"]).caption_layouts == [
        "direct"
    ]


def test_pair_file_round_trip_and_errors(tmp_path: Path, pairs: list[LabelledPair]) -> None:
    write_pairs(pairs, tmp_path / "copy.jsonl")
    again = read_pairs(tmp_path / "copy.jsonl")
    assert [p.model_dump() for p in again] == [p.model_dump() for p in pairs]
    assert Path(pairs[0].request.images[0]).is_absolute()  # relative paths resolve against the file's folder
    good = (tmp_path / "pairs.jsonl").read_text().splitlines()[0]
    for bad, message in [
        ('{"question": "q", "a": "x", "b": "y", "task_type": "text", "label": "C"}', 'label must be "A" or "B"'),
        ('{"question": "q", "a": "x", "b": "y", "task_type": "text", "label": "A", "colour": 1}', "colour"),
        ("[1, 2]", "JSON object"),
        ("{not json", "Expecting property name"),
        (good, "duplicate id"),
    ]:
        (tmp_path / "bad.jsonl").write_text(good + "\n" + bad + "\n")
        with pytest.raises(PairFileError, match=f"bad.jsonl:2: .*{message}"):
            read_pairs(tmp_path / "bad.jsonl")
    # Lines without an id get one from their line number, so files need no ids.
    (tmp_path / "noid.jsonl").write_text(
        '{"question": "q", "a": "x", "b": "y", "task_type": "text", "label": "A"}\n' * 2
    )
    assert [p.request.id for p in read_pairs(tmp_path / "noid.jsonl")] == ["noid-1", "noid-2"]


def test_gold_findings_follow_their_items_relabelled_for_the_order(tmp_path: Path, pairs: list[LabelledPair]) -> None:
    """With `findings`, each item is followed by what the image shows and who agrees, in the labels the model saw."""
    with_findings = [
        p.model_copy(
            update={
                "findings": [f"In the image, the square is red. That is what Response A says. Favors: {p.label}"] * 2
            }
        )
        for p in pairs
    ]
    for judge in ("direct", "deltarubric"):
        examples = sft_examples(with_findings, judge, "traces")[
            (judge == "deltarubric") :: 1 + (judge == "deltarubric")
        ]
        assert len(examples) == len(pairs)
        for pair, example in zip(pairs, examples):
            order = order_for(0, pair.request.id, 0, 0)
            winner = pair.label if order == "AB" else {"A": "B", "B": "A"}[pair.label]
            target = _text(example["completion"][0])
            agree = "A" if order == "AB" else "B"  # the finding says A agrees, in the caller's labels
            assert (
                f"1. Is the square red? In the image, the square is red. That is what Response {agree} says." in target
            )
            parsed = parse_verdict(target)
            assert parsed.winner == winner and [f for _, f in parsed.findings] == [winner, winner]
    row = {**with_findings[0].to_json(), "findings": ["only one"]}
    (tmp_path / "bad.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(PairFileError, match=r"bad.jsonl:1: .*findings: one per checklist item \(2\), got 1"):
        read_pairs(tmp_path / "bad.jsonl", check_media=False)
