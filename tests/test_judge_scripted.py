"""Judge orchestration on hand-written model outputs: stages, checklist flow, swap bookkeeping, p_a, errors."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from deltarubric.rm.backends.base import ImagePart, TextPart
from deltarubric.rm.config import JudgeConfig
from deltarubric.rm.judge import Judge, StageResult
from deltarubric.rm.types import JudgeRequest, Verdict
from tests.conftest import make_image
from tests.scripted import ScriptedBackend, all_text, user_text

PLANNER_REPLY = """Generated Checklist:
1. Are there exactly two cats in the image?
2. Response A is better because it counts correctly.
3. Is the cat on the left orange, not grey?"""


def shown_first_is_two_cats(conv) -> bool:
    return "[Response A]\nTwo cats." in all_text(conv)


def careful_judge(conv) -> str:
    """Always prefers 'Two cats.', whichever position it is shown in; answers in the stage's format."""
    good = "A" if shown_first_is_two_cats(conv) else "B"
    other = "B" if good == "A" else "A"
    text = user_text(conv)
    if "Disagreement Planner" in text:
        return PLANNER_REPLY
    if "Checklist Verifier" in text:
        return (
            f"Analysis:\n1. The image shows two cats. Response {good} agrees. Favors: {good}\n"
            f"2. The left cat is orange. Both agree. Favors: Neither\n"
            f"Justification: Response {good} counts the cats correctly; Response {other} hallucinates a third.\n"
            f"Winner: [[{good}]]"
        )
    if "<answer>" in text:
        return f"<type>image_understanding</type><think>counting</think><answer>{good}</answer>"
    return f"Analysis: counted.\nJustification: {good} is right.\nWinner: [[{good}]]"


@pytest.fixture
def request_(image_file: Path) -> JudgeRequest:
    return JudgeRequest(
        id="cats-1", question="How many cats?", images=[str(image_file)], a="Two cats.", b="Three cats."
    )


def judge_with(backend, **config) -> Judge:
    return Judge(JudgeConfig(model="scripted", **config), backend=backend)


def test_deltarubric_plans_then_verifies_with_repaired_checklist(request_):
    backend = ScriptedBackend(careful_judge)
    v = judge_with(backend, judge="deltarubric").judge(request_)
    assert v.winner == "A" and v.parse_ok and v.error is None
    # The leaking item ("Response A is better") is dropped; the neutral ones stay.
    assert v.checklist == ["Are there exactly two cats in the image?", "Is the cat on the left orange, not grey?"]
    assert [f.favors for f in v.findings] == ["A", "Neither"]
    assert [f.item for f in v.findings] == v.checklist
    assert "counts the cats correctly" in v.rationale
    assert set(v.raw) == {"AB/planner", "AB/verifier"} and set(v.usage) == set(v.raw)
    assert len(backend.calls) == 2  # one batched backend call per stage


def test_verifier_conversation_extends_the_planner_conversation(request_):
    backend = ScriptedBackend(careful_judge)
    judge_with(backend, judge="deltarubric").judge(request_)
    (planner,), (verifier,) = backend.calls
    assert verifier[: len(planner)] == planner  # same messages, same image object: a prefix cache hit
    assert verifier[len(planner)].role == "assistant"
    reply = verifier[len(planner)].content[0].text
    assert "Response A is better" not in reply and "1. Are there exactly two cats" in reply
    images = [p for m in verifier for p in m.content if isinstance(p, ImagePart)]
    assert len(images) == 1  # the image is sent once, in the first user turn


def test_swap_unswaps_and_reports_consistency(request_):
    backend = ScriptedBackend(careful_judge, p_letter_a=0.9)
    v = judge_with(backend, judge="deltarubric", swap=True).judge(request_)
    assert [o.shown_order for o in v.orders] == ["AB", "BA"]
    assert [o.winner for o in v.orders] == ["A", "A"]  # both in the caller's labels
    assert v.winner == "A" and v.consistent is True
    # AB: model said A with P(A)=0.9. BA: model said B (= caller's A), and P(shown A)=0.9 -> caller's p_a = 0.1.
    assert v.orders[0].p_a == pytest.approx(0.9) and v.orders[1].p_a == pytest.approx(0.1)
    assert v.p_a == pytest.approx(0.5)
    assert set(v.raw) == {"AB/planner", "AB/verifier", "BA/planner", "BA/verifier"}
    assert [f.favors for f in v.findings] == ["A", "Neither"]  # taken from the AB order


def test_position_biased_model_is_inconsistent_and_tied(request_):
    backend = ScriptedBackend(lambda conv: "Winner: [[A]]", p_letter_a=0.7)
    v = judge_with(backend, judge="direct", swap=True).judge(request_)
    assert [o.winner for o in v.orders] == ["A", "B"]
    assert v.consistent is False
    assert v.p_a == pytest.approx(0.5)  # 0.7 and 1 - 0.7
    assert v.winner == "tie"


def test_random_order_is_seeded_and_mapped_back(image_file: Path):
    requests = [
        JudgeRequest(
            id=f"item-{i}", question="How many cats?", images=[str(image_file)], a="Two cats.", b="Three cats."
        )
        for i in range(16)
    ]
    judge = judge_with(ScriptedBackend(careful_judge), judge="direct", presentation="random", sampling={"seed": 7})
    first = judge.judge_batch(requests)
    again = judge.judge_batch(requests)
    orders = [v.orders[0].shown_order for v in first]
    assert orders == [v.orders[0].shown_order for v in again]
    assert {"AB", "BA"} == set(orders)  # 16 ids: both orders occur
    assert all(v.winner == "A" for v in first)  # whatever was shown first, the caller's A wins


@pytest.mark.parametrize(
    "judge_name, reply, winner, task_pred",
    [
        ("direct", "Analysis: x\nJustification: y\nWinner: [[B]]", "B", None),
        ("msrl", "<type>Image Understanding</type><think>t</think><answer>b</answer>", "B", "image_understanding"),
        ("direct", "I cannot decide.", None, None),  # unparsable: a verdict, not an exception
        ("msrl", "<think>never closed", None, None),
    ],
)
def test_single_stage_judges(request_, judge_name, reply, winner, task_pred):
    v = judge_with(ScriptedBackend(lambda conv: reply), judge=judge_name).judge(request_)
    assert v.winner == winner and v.parse_ok is (winner is not None)
    assert v.task_type_pred == task_pred
    assert v.raw == {"AB/judge": reply}
    if winner is None:
        assert v.p_a is None


@pytest.mark.parametrize(
    "judge_name, reply, winner, label",
    [
        ("vlrb_official", "Overall Judgment: Answer 2 is better.", "A", "2"),  # BA: the caller's A was shown second
        ("vlrb_official", "Overall Judgment: Answer 3 is better.", None, "3"),  # no side, but a vote cal.py counts
        ("mmrb_official", "[[B]] ... [[A]]", "B", "[[A]]"),
        ("direct", "Winner: [[b]]", "A", "b"),
    ],
)
def test_each_order_keeps_its_vote_label_as_shown(request_, judge_name, reply, winner, label):
    v = judge_with(ScriptedBackend(lambda conv: reply), judge=judge_name, swap=True).judge(request_)
    assert [o.label for o in v.orders] == [label, label]  # the same text in both orders: the labels as shown
    assert v.orders[1].winner == winner


def test_genai_vote_label_is_the_exact_verdict_string(tmp_path):
    a, b = make_image(tmp_path / "a.png", seed=1), make_image(tmp_path / "b.png", seed=2)
    req = JudgeRequest(task_type="image_generation", question="two apples", a={"image": str(a)}, b={"image": str(b)})
    judge = judge_with(ScriptedBackend(lambda conv: "Both fail. [[A=B=Bad]]"), judge="genai_bench_official")
    v = judge.judge(req)
    assert (v.winner, v.orders[0].label) == ("tie", "[[A=B=Bad]]")


def test_thinking_model_output_is_parsed_past_the_think_block(request_):
    reply = "<think>Maybe [[B]]? No, count again.</think>Analysis: two.\nJustification: A counts right.\nWinner: [[A]]"
    v = judge_with(ScriptedBackend(lambda conv: reply, p_letter_a=0.6), judge="direct").judge(request_)
    assert v.winner == "A" and v.raw["AB/judge"] == reply
    assert v.p_a == pytest.approx(0.6)


def test_bad_media_and_backend_errors_stay_with_their_item(tmp_path: Path):
    good = make_image(tmp_path / "ok.png")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(good.read_bytes()[:40])
    huge = make_image(tmp_path / "huge.png", size=(3000, 2000))

    def reply(conv):
        return RuntimeError("engine exploded") if "Explode" in all_text(conv) else "Winner: [[A]]"

    def req(i, image, question="How many?"):
        return JudgeRequest(id=str(i), question=question, images=[str(image)], a="Two.", b="Three.")

    config = dict(judge="direct", max_input_pixels=1_000_000)
    verdicts = judge_with(ScriptedBackend(reply), **config).judge_batch(
        [req(0, good), req(1, tmp_path / "missing.png"), req(2, corrupt), req(3, huge), req(4, good, "Explode?")]
    )
    assert [v.id for v in verdicts] == ["0", "1", "2", "3", "4"]
    assert verdicts[0].winner == "A" and verdicts[0].error is None
    assert "file not found" in verdicts[1].error and "missing.png" in verdicts[1].error
    assert "not a readable image" in verdicts[2].error or "corrupt" in verdicts[2].error
    assert "exceeds the limit" in verdicts[3].error
    assert "engine exploded" in verdicts[4].error and verdicts[4].winner is None
    assert all(v.winner is None and not v.parse_ok for v in verdicts[1:])


def test_generation_candidates_are_images_placed_in_order(tmp_path: Path):
    a, b = make_image(tmp_path / "a.png", seed=1), make_image(tmp_path / "b.png", size=(64, 64), seed=2)
    backend = ScriptedBackend(lambda conv: "Winner: [[B]]")
    req = JudgeRequest(
        task_type="image_generation", question="two red apples", a={"image": str(a)}, b={"image": str(b)}
    )
    v = judge_with(backend, judge="direct", swap=True).judge(req)
    (ab, ba) = backend.calls[0]
    sizes = lambda conv: [p.image.size for m in conv for p in m.content if isinstance(p, ImagePart)]  # noqa: E731
    assert sizes(ab) == [(96, 64), (64, 64)] and sizes(ba) == [(64, 64), (96, 64)]
    texts = [p.text for p in ab[-1].content if isinstance(p, TextPart)]
    assert texts[0].startswith("Generation prompt: two red apples") and "Image A:" in texts[0]
    assert v.consistent is False  # always 'B' is position bias


def test_video_without_decoder_is_a_clear_error(tmp_path: Path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    req = JudgeRequest(task_type="video_understanding", question="What happens?", videos=[str(video)], a="x", b="y")
    v = judge_with(ScriptedBackend(lambda conv: "Winner: [[A]]"), judge="direct").judge(req)
    assert v.winner is None and "video input is not supported by the 'scripted' backend" in v.error


def test_lowercase_verdict_letter_gets_p_a():
    from deltarubric.rm.aggregate import verdict_probability
    from deltarubric.rm.backends.base import TokenLogprob

    # '[[a]]' is read as A (the parser ignores case), so its p_a compares the lower-case 'a' and 'b' tokens.
    tokens = [
        TokenLogprob("Winner: [[", -0.1),
        TokenLogprob("a", -0.2, {"a": -0.2, "b": -1.9}),
        TokenLogprob("]]", 0.0),
    ]
    assert verdict_probability(tokens, len("Winner: [[")) == pytest.approx(1 / (1 + math.exp(-1.7)))


def test_text_with_nul_is_rejected_at_the_edge(image_file):
    with pytest.raises(ValueError, match="NUL"):
        JudgeRequest(question="How many?\x001\x00", images=[str(image_file)], a="x", b="y")


@pytest.mark.parametrize(
    "ref, message",
    [
        ("iVBORw0KGgo" * 40, "cannot read file"),  # base64 without its 'data:' prefix: a file name too long
        ("http://[::1", "download failed"),  # an invalid URL
    ],
)
def test_odd_media_references_are_item_errors(image_file, ref, message):
    requests = [
        JudgeRequest(id="bad", question="Q?", images=[ref], a="x", b="y"),
        JudgeRequest(id="good", question="Q?", images=[str(image_file)], a="x", b="y"),
    ]
    bad, good = judge_with(ScriptedBackend(lambda conv: "Winner: [[B]]"), judge="direct").judge_batch(requests)
    assert message in bad.error and good.winner == "B"


def test_blocking_engine_failure_is_isolated_per_conversation(request_):
    """An engine that raises on a batch (as vLLM does for one over-long prompt) fails only the bad conversation."""
    from deltarubric.rm.backends.base import Generation, ThreadedBackend

    class Picky(ThreadedBackend):
        name = "picky"
        batch_size = None

        def generate_blocking(self, conversations, sampling):
            if any("Three" in all_text(c) for c in conversations):
                raise ValueError("prompt too long")
            return [Generation(text="Winner: [[A]]") for _ in conversations]

    ok = request_.model_copy(update={"id": "ok"})
    bad = request_.model_copy(update={"id": "bad", "b": request_.b.model_copy(update={"text": "Three!"})})
    fine = request_.model_copy(update={"id": "fine", "b": request_.b.model_copy(update={"text": "Four."})})
    v_ok, v_bad, v_fine = judge_with(Picky(), judge="direct").judge_batch([ok, bad, fine])
    assert "prompt too long" in v_bad.error and v_bad.winner is None
    assert v_fine.winner == "A" and v_fine.error is None
    assert "prompt too long" in v_ok.error  # request_ itself mentions 'Three cats.'


# ---------------------------------------------------------------------------------------------------------------
# The stage-event stream: the batch calls run the same stage loop, so the stream's verdict is theirs.


def stream(judge: Judge, request: JudgeRequest) -> list:
    async def collect() -> list:
        return [event async for event in judge.astream(request)]

    return asyncio.run(collect())


def steps(events: list) -> list[tuple[str, str, str]]:
    return [(e.stage, e.produces, e.shown_order) for e in events if isinstance(e, StageResult)]


def same_verdict(a: Verdict, b: Verdict) -> bool:
    return a.model_dump(exclude={"latency_s"}) == b.model_dump(exclude={"latency_s"})


def test_stream_direct_yields_the_stage_then_the_same_verdict_as_judge(request_):
    judge = judge_with(ScriptedBackend(careful_judge, confidence=0.9), judge="direct")
    events = stream(judge, request_)
    assert [type(e) for e in events] == [StageResult, Verdict]
    stage, verdict = events
    assert (stage.request_id, stage.stage, stage.produces, stage.shown_order) == ("cats-1", "judge", "verdict", "AB")
    assert stage.prompt.startswith("<image>\nQuestion: How many cats?") and "[Response A]\nTwo cats." in stage.prompt
    assert stage.text == verdict.raw["AB/judge"] and stage.text.endswith("Winner: [[A]]")
    assert stage.parsed.winner == "A" and stage.error is None
    assert stage.usage == verdict.usage["AB/judge"] and stage.seconds >= 0
    assert verdict.winner == "A" and verdict.p_a == pytest.approx(0.9)
    assert same_verdict(verdict, judge.judge(request_))


def test_stream_deltarubric_with_swap_gives_each_stage_in_both_orders_before_the_verdict(request_):
    judge = judge_with(ScriptedBackend(careful_judge), judge="deltarubric", swap=True)
    events = stream(judge, request_)
    assert steps(events) == [
        ("planner", "checklist", "AB"),
        ("planner", "checklist", "BA"),
        ("verifier", "verdict", "AB"),
        ("verifier", "verdict", "BA"),
    ]
    assert isinstance(events[-1], Verdict) and len(events) == 5
    plan_ab, plan_ba, verify_ab, verify_ba, verdict = events
    # the planner's reply is parsed and its leaking item dropped before the verifier runs
    assert (
        plan_ab.parsed.checklist
        == verdict.checklist
        == [
            "Are there exactly two cats in the image?",
            "Is the cat on the left orange, not grey?",
        ]
    )
    assert plan_ab.text == PLANNER_REPLY and plan_ab.parsed.winner is None
    assert "[Response A]\nTwo cats." in plan_ab.prompt and "[Response A]\nThree cats." in plan_ba.prompt
    assert "Checklist Verifier" in verify_ab.prompt and "<image>" not in verify_ab.prompt  # shown once, in stage 1
    # replies are read in the labels shown: in BA the model names B, the caller's A
    assert (verify_ab.parsed.winner, verify_ba.parsed.winner) == ("A", "B")
    assert [o.winner for o in verdict.orders] == ["A", "A"] and verdict.winner == "A"
    assert {f"{e.shown_order}/{e.stage}": e.text for e in events[:-1]} == verdict.raw
    assert same_verdict(verdict, judge.judge(request_))


def test_stream_msrl_reads_the_task_type(request_):
    events = stream(judge_with(ScriptedBackend(careful_judge), judge="msrl"), request_)
    assert steps(events) == [("judge", "verdict", "AB")]
    stage, verdict = events
    assert "<answer>" in stage.prompt and stage.parsed.task_type == "image_understanding" == verdict.task_type_pred
    assert stage.parsed.winner == verdict.winner == "A"


def test_stream_stops_an_order_at_its_backend_error(request_):
    def reply(conv):
        if "Disagreement Planner" in user_text(conv) and "[Response A]\nThree cats." in all_text(conv):
            return RuntimeError("engine fell over")
        return careful_judge(conv)

    events = stream(judge_with(ScriptedBackend(reply), judge="deltarubric", swap=True), request_)
    assert steps(events) == [
        ("planner", "checklist", "AB"),
        ("planner", "checklist", "BA"),
        ("verifier", "verdict", "AB"),  # BA stopped at its planner
    ]
    failed, verdict = events[1], events[-1]
    assert failed.error == "backend error in stage 'planner': engine fell over" == verdict.error
    assert failed.text == "" and failed.parsed.checklist == []
    assert verdict.winner is None and not verdict.parse_ok


def test_stream_of_an_item_whose_media_cannot_load_is_its_verdict(tmp_path):
    req = JudgeRequest(question="How many?", images=[str(tmp_path / "missing.png")], a="Two.", b="Three.")
    backend = ScriptedBackend(careful_judge)
    (verdict,) = stream(judge_with(backend, judge="deltarubric"), req)
    assert isinstance(verdict, Verdict) and "file not found" in verdict.error
    assert backend.calls == []  # no stage ran
