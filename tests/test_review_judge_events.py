"""Review of the stage-event stream and what was built on it: regressions found in `Judge.astream`, the judge-name
check and the prompt-file checks, each kept as a regression test."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

import deltarubric.rm.judge as judge_module
from deltarubric.rm.backends.base import Backend, Conversation, Generation
from deltarubric.rm.config import JudgeConfig, SamplingConfig
from deltarubric.rm.judge import Judge
from deltarubric.rm.types import JudgeRequest, Usage, Verdict
from deltarubric.rubrics.prompts import available_methods, check_method, load_method
from tests.conftest import make_image
from tests.scripted import user_text

PLAN = "Generated Checklist:\n1. Are there two cats?\n2. Is one of them grey?"
VERDICT = "Analysis:\n1. Two cats. Favors: A\nJustification: A counts right.\nWinner: [[A]]"


def reply(conv: Conversation) -> str:
    return PLAN if "Disagreement Planner" in user_text(conv) else VERDICT


@pytest.fixture
def request_(tmp_path: Path) -> JudgeRequest:
    image = make_image(tmp_path / "cats.png")
    return JudgeRequest(id="r1", question="How many cats?", images=[str(image)], a="Two.", b="Three.")


# ------------------------------------------------------------------------------------------------ latency


class FakeClock:
    """time.perf_counter under test control: the model's calls and the consumer advance it, nothing else does."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ClockedBackend(Backend):
    """Answers like the scripted judge and takes exactly `seconds` of the fake clock per batched call."""

    name = "clocked"

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        self.clock, self.seconds = clock, seconds

    async def agenerate(self, conversations, sampling: SamplingConfig) -> list[Generation]:
        self.clock.now += self.seconds
        return [Generation(text=reply(c), usage=Usage(completion_tokens=3)) for c in conversations]


def test_astream_latency_is_the_judges_time_not_the_consumers(monkeypatch, request_):
    """A consumer that takes its time between events (the demo renders a page after each stage, Gradio sends it)
    must not lengthen the verdict's `latency_s`: the same judgment reports the same latency from `judge` and from
    `astream`, the time its stages took."""
    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    judge = Judge(JudgeConfig(model="x", judge="deltarubric", swap=True), backend=ClockedBackend(clock, 2.0))

    batch = judge.judge(request_)

    async def slow_consumer() -> Verdict:
        async for event in judge.astream(request_):
            if isinstance(event, Verdict):
                return event
            clock.now += 100.0  # rendering and sending a page
        raise AssertionError("no verdict")

    streamed = asyncio.run(slow_consumer())
    assert batch.latency_s == 4.0  # two stages, one batched call each
    assert streamed.latency_s == batch.latency_s


# ------------------------------------------------------------------------------------------ the event loop


class ScriptedReplies(Backend):
    name = "scripted"

    async def agenerate(self, conversations, sampling: SamplingConfig) -> list[Generation]:
        return [Generation(text=reply(c)) for c in conversations]


def test_astream_loads_media_off_the_consumers_event_loop(monkeypatch, request_):
    """Decoding an upload (seconds for a large photo) must not block the event loop the stream is consumed on: the
    demo consumes `astream` on Gradio's loop, which serves every other visitor meanwhile (the demo judged in a
    thread of its own before it was built on the stream)."""
    real_load = judge_module.load_image
    loaded_on: list[int] = []

    def recording_load(ref, **kwargs):
        loaded_on.append(threading.get_ident())
        return real_load(ref, **kwargs)

    monkeypatch.setattr(judge_module, "load_image", recording_load)
    judge = Judge(JudgeConfig(model="x", judge="direct"), backend=ScriptedReplies())

    async def consume() -> tuple[int, list]:
        return threading.get_ident(), [event async for event in judge.astream(request_)]

    loop_thread, events = asyncio.run(consume())
    assert isinstance(events[-1], Verdict) and events[-1].winner == "A"
    assert loaded_on and loop_thread not in loaded_on


# ---------------------------------------------------------------------------------------------- judge names


@pytest.mark.parametrize("name", ["../prompts/direct", "./direct", "_words"])
def test_a_judge_name_is_one_of_the_listed_methods(name):
    """`check_method` is the one judge-name check: a name that is not in the list of judges is refused with that
    list, even when it happens to lead to a YAML file (a relative path, a shared part of the prompts)."""
    assert name not in available_methods()
    with pytest.raises(ValueError, match=r"unknown judge .*; available: deltarubric, direct"):
        check_method(name)
    with pytest.raises(ValidationError, match="unknown judge"):
        JudgeConfig(model="x", judge=name)


# ------------------------------------------------------------------------------------------- prompt files


def write_prompts(folder: Path, body: str) -> Path:
    (folder / "_words.yaml").write_text("noun: {}\nmedia_word: {image_understanding: image}\n")
    (folder / "m.yaml").write_text(body)
    return folder


def test_two_stages_with_one_name_are_refused(tmp_path):
    """Raw outputs and usage are keyed '<order>/<stage>': two stages of one name would overwrite each other's text
    in the verdict, so the file is refused when it loads."""
    folder = write_prompts(
        tmp_path,
        "name: m\nversion: 1\nsystem: s\nstages:\n"
        "  - {name: judge, parser: checklist, produces: checklist, user: u}\n"
        "  - {name: judge, parser: verdict, produces: verdict, user: v}\n",
    )
    with pytest.raises(ValueError, match="stage names must differ") as e:
        load_method("m", folder)
    assert str(e.value).startswith(f"{folder / 'm.yaml'}: ")


def test_a_prompt_file_that_is_not_yaml_is_a_value_error_naming_it(tmp_path):
    """A broken prompt file is a ValueError naming the file, as every other problem in it is (pydantic turns only
    ValueErrors into the config's validation error; the CLI prints those as one line)."""
    folder = write_prompts(tmp_path, "name: m\nstages: [\n  - {name: judge\n")
    with pytest.raises(ValueError, match=r"m\.yaml: not valid YAML") as e:
        check_method("m", folder)
    assert str(folder / "m.yaml") in str(e.value)
