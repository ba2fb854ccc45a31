"""Every judge end to end on the tiny random-weight Qwen3-VL through the transformers backend.

The weights are random, so these check mechanics: stages, usage, shapes, batching equality, prefix layout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deltarubric.rm.backends.base import ImagePart, Message, TextPart
from deltarubric.rm.config import SamplingConfig
from deltarubric.rm.judge import Judge
from deltarubric.rm.types import JudgeRequest
from tests.conftest import make_image

STAGES = {"direct": ["judge"], "deltarubric": ["planner", "verifier"], "msrl": ["judge"]}


def requests_for(tmp_path: Path) -> list[JudgeRequest]:
    imgs = [make_image(tmp_path / f"{i}.png", size=s, seed=i) for i, s in enumerate([(96, 64), (64, 64), (200, 120)])]
    return [
        JudgeRequest(id="u", question="How many shapes?", images=[str(imgs[0])], a="Two shapes.", b="Three shapes."),
        JudgeRequest(
            id="g",
            task_type="image_generation",
            question="an orange disc",
            a={"image": str(imgs[1])},
            b={"image": str(imgs[2])},
        ),
        JudgeRequest(
            id="e",
            task_type="image_editing",
            question="make it blue",
            images=[str(imgs[2])],
            a={"image": str(imgs[0])},
            b={"image": str(imgs[1])},
        ),
        JudgeRequest(id="t", task_type="text", question="What is 2+2?", a="4", b="5"),
    ]


@pytest.mark.parametrize("judge_name", ["direct", "deltarubric", "msrl"])
def test_each_judge_runs_end_to_end(judge_name, tiny_config, tiny_backend, tmp_path):
    config = tiny_config.model_copy(update={"judge": judge_name, "swap": True})
    verdicts = Judge(config, backend=tiny_backend).judge_batch(requests_for(tmp_path))
    assert [v.id for v in verdicts] == ["u", "g", "e", "t"]
    for v in verdicts:
        assert v.error is None
        keys = [f"{o}/{s}" for o in ("AB", "BA") for s in STAGES[judge_name]]
        assert sorted(v.raw) == sorted(keys) and sorted(v.usage) == sorted(keys)
        assert all(u.prompt_tokens > 0 and 0 < u.completion_tokens <= 12 for u in v.usage.values())
        assert [o.shown_order for o in v.orders] == ["AB", "BA"]
        assert v.parse_ok is all(o.parse_ok for o in v.orders)
        if not v.parse_ok:  # random weights: almost surely unparsable, and then nothing is guessed
            assert v.winner is None and v.consistent is None
        assert v.latency_s > 0


def test_verifier_prompt_extends_planner_prompt(tiny_config, tiny_backend, tmp_path):
    config = tiny_config.model_copy(update={"judge": "deltarubric"})
    v = Judge(config, backend=tiny_backend).judge(requests_for(tmp_path)[0])
    planner, verifier = v.usage["AB/planner"], v.usage["AB/verifier"]
    # The verifier's prompt holds the planner's prompt, its (re-rendered) checklist reply and a new user turn.
    assert verifier.prompt_tokens > planner.prompt_tokens + 20


def test_planner_conversation_is_a_token_prefix_of_the_verifier(tiny_backend, image_file):
    from PIL import Image

    from deltarubric.rm.backends.hf import _to_hf

    img = ImagePart(Image.open(image_file).convert("RGB"))
    planner = [Message.text("system", "sys"), Message("user", (img, TextPart("Plan.")))]
    verifier = planner + [Message.text("assistant", "Generated Checklist:\n1. Q?"), Message.text("user", "Verify.")]

    def render(conv):
        return tiny_backend.processor.apply_chat_template(_to_hf(conv), add_generation_prompt=True, tokenize=False)

    assert render(verifier).startswith(render(planner))


def test_batched_equals_one_by_one(tiny_config, tiny_backend, tmp_path):
    config = tiny_config.model_copy(update={"judge": "deltarubric", "swap": True})
    judge = Judge(config, backend=tiny_backend)
    requests = requests_for(tmp_path)
    batched = judge.judge_batch(requests)
    single = [judge.judge(r) for r in requests]
    for b, s in zip(batched, single):
        assert b.raw == s.raw
        assert b.usage == s.usage
        assert b.model_dump(exclude={"latency_s"}) == s.model_dump(exclude={"latency_s"})


def test_backend_returns_logprobs_aligned_with_tokens(tiny_backend, image_file):
    from PIL import Image

    conv = [Message("user", (ImagePart(Image.open(image_file).convert("RGB")), TextPart("Describe.")))]
    (gen,) = tiny_backend.generate([conv], SamplingConfig(max_tokens=6, top_logprobs=3))
    assert len(gen.tokens) == gen.usage.completion_tokens <= 6
    for t in gen.tokens:
        assert len(t.top) <= 3 and t.logprob <= 0.0
        assert t.logprob == pytest.approx(max(t.top.values()), abs=1e-5)  # greedy: the chosen token is the most likely
    (no_lp,) = tiny_backend.generate([conv], SamplingConfig(max_tokens=6, top_logprobs=0))
    assert no_lp.tokens == [] and no_lp.text == gen.text


def test_sampling_is_reproducible_with_a_seed(tiny_backend):
    conv = [Message.text("user", "Say something.")]
    sampling = SamplingConfig(max_tokens=10, temperature=1.0, seed=3)
    first = tiny_backend.generate([conv], sampling)[0].text
    assert tiny_backend.generate([conv], sampling)[0].text == first


def test_min_max_pixels_reach_the_processor(tiny_model_dir):
    from deltarubric.rm.backends.hf import TransformersBackend

    backend = TransformersBackend(str(tiny_model_dir), device="cpu", min_pixels=32 * 32, max_pixels=64 * 64)
    assert backend.processor.image_processor.size == {"shortest_edge": 32 * 32, "longest_edge": 64 * 64}
