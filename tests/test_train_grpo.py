"""GRPO training of judges on TRL's real GRPOTrainer with the tiny checkpoint (CPU, a few steps).

Mechanics, not learning (benchmarks/train_synthetic.py measures learning): the multi-role rollout's rows and loss
masks, that training prompts are token for token the Judge's prompts, per-role advantages reaching the loss, weights
changing, and the saved checkpoint loading and judging through the CLI.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from deltarubric.rm.backends.hf import _to_hf
from deltarubric.rm.config import JudgeConfig
from deltarubric.rm.hf_compat import load_processor
from deltarubric.rm.judge import Judge
from deltarubric.rm.pairs import LabelledPair, read_pairs
from tests.conftest import make_image
from tests.scripted import ScriptedBackend

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def pair_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    rows = []
    for i in range(4):
        make_image(root / f"img{i}.png", seed=i)
        rows.append(
            {
                "id": f"p{i}",
                "question": "How many cats?",
                "images": [f"img{i}.png"],
                "a": f"{i + 1} cats.",
                "b": f"{i + 2} cats.",
                "label": "AB"[i % 2],
            }
        )
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "pairs.jsonl"


def length_reward(completions: list[Any], generated: list[str] | None = None, **_: Any) -> list[float]:
    """A reward the random tiny model can earn: shorter own text is better (gives every group variance)."""
    texts = generated if generated is not None else [c[-1]["content"] for c in completions]
    return [-len(t) / 20 for t in texts]


def make_trainer(
    model_dir: Path,
    pairs: list[LabelledPair],
    out: Path,
    *,
    judge: str,
    reward_funcs: list[Any] | None = None,
    **overrides: Any,
):
    from transformers import AutoModelForImageTextToText

    from deltarubric.train.config import JudgeGRPOConfig
    from deltarubric.train.grpo import JudgeGRPOTrainer

    settings: dict[str, Any] = dict(
        output_dir=str(out),
        judge=judge,
        num_checklists=2,
        num_verifications=2,
        num_generations=4,
        per_device_train_batch_size=6 if judge == "deltarubric" else 4,
        max_completion_length=10,
        max_steps=1,
        logging_steps=1,
        report_to="none",
        loss_type="grpo",
        learning_rate=1e-2,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        save_strategy="no",
        seed=0,
    )
    settings.update(overrides)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    return JudgeGRPOTrainer(
        model,
        JudgeGRPOConfig(**settings),
        pairs,
        processing_class=load_processor(str(model_dir)),
        reward_funcs=reward_funcs,
    )


def judge_prompt_ids(
    model_dir: Path, pair: LabelledPair, order: str, judge: str, planner_reply: str = "", stage: int = -1
) -> list[int]:
    """What the production Judge sends at `stage` for `pair` shown in `order`, tokenized as the backend does."""
    backend = ScriptedBackend(lambda conv: planner_reply if len(conv) == 2 else "Winner: [[A]]")
    Judge(JudgeConfig(model="x", judge=judge, swap=True), backend=backend).judge(pair.request)
    conversation = backend.calls[stage][0 if order == "AB" else 1]
    processor = load_processor(str(model_dir))
    return processor.apply_chat_template([_to_hf(conversation)], add_generation_prompt=True, tokenize=True)[0]


def test_deltarubric_rollout_rows_masks_and_prompts(tiny_model_dir: Path, pair_file: Path, tmp_path: Path) -> None:
    pairs = read_pairs(pair_file)[:2]
    trainer = make_trainer(
        tiny_model_dir, pairs, tmp_path / "out", judge="deltarubric", reward_funcs=[length_reward], rubric_delta=True
    )
    captured: dict[str, Any] = {}
    rollout = trainer.rollout_func

    def spy(prompts: list[Any], t: Any) -> dict[str, Any]:
        out = rollout(prompts, t)
        captured["out"], captured["rows"] = out, [dict(x) for x in trainer._rollout_inputs]
        return out

    trainer.rollout_func = spy
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()

    out, rows = captured["out"], captured["rows"]
    assert len(rows) == 6  # one pair: N=2 planners + N*K=4 verifiers
    assert [(r["role"], r["chain"]) for r in rows] == [("planner", 0), ("planner", 1)] + [("verifier", 0)] * 2 + [
        ("verifier", 1)
    ] * 2
    assert {r["pair_id"] for r in rows} == {rows[0]["pair_id"]}
    tok = trainer.processing_class.tokenizer
    pair = trainer.pairs[rows[0]["pair_id"]]
    for i, r in enumerate(rows):
        mask, completion = out["env_mask"][i], out["completion_ids"][i]
        assert len(mask) == len(completion)
        own = [t for t, m in zip(completion, mask) if m]
        assert tok.decode(own, skip_special_tokens=True) == out["generated"][i]
        if r["role"] == "planner":
            assert set(mask) == {1}
            # The planner prompt is the Judge's planner prompt, token for token.
            assert out["prompt_ids"][i] == judge_prompt_ids(tiny_model_dir, pair, r["order"], "deltarubric", stage=0)
        else:
            bridge = completion[: mask.index(1)]
            assert set(mask[: len(bridge)]) == {0} and set(mask[len(bridge) :]) == {1} and bridge
            planner = rows.index(next(x for x in rows if x["role"] == "planner" and x["chain"] == r["chain"]))
            assert out["prompt_ids"][i] == out["prompt_ids"][planner]
            # Prompt + bridge = the Judge's verifier prompt after this checklist, token for token.
            reply = out["generated"][planner]
            assert out["prompt_ids"][i] + bridge == judge_prompt_ids(
                tiny_model_dir, pair, r["order"], "deltarubric", reply
            )
            assert "Checklist Verifier" in tok.decode(bridge)
    logs = trainer.state.log_history[0]
    assert math.isfinite(logs["loss"])
    assert {
        "planner/reward_mean",
        "verifier/reward_mean",
        "rewards/length_reward/mean",
        "planner/no_rubric_gap",
        "planner/frac_reward_zero_std",
    } <= set(logs)
    assert -1.0 <= logs["planner/no_rubric_gap"] <= 1.0
    changed = [k for k, v in trainer.model.named_parameters() if not torch.equal(before[k], v.detach())]
    assert changed, "no weight moved: advantages did not reach the loss"


def test_direct_judge_trains_on_trl_generation_with_judge_prompts(
    tiny_model_dir: Path, pair_file: Path, tmp_path: Path
) -> None:
    pairs = read_pairs(pair_file)
    trainer = make_trainer(tiny_model_dir, pairs, tmp_path / "out", judge="direct", reward_funcs=[length_reward])
    captured: dict[str, Any] = {}
    score = trainer._generate_and_score_completions

    def spy(inputs: list[dict[str, Any]]) -> dict[str, Any]:
        out = score(inputs)
        captured.setdefault("batches", []).append((out, [dict(x) for x in inputs]))
        return out

    trainer._generate_and_score_completions = spy
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    out, rows = captured["batches"][0]
    assert [r["role"] for r in rows] == ["judge"] * 4 and len({r["pair_id"] for r in rows}) == 1
    pair = trainer.pairs[rows[0]["pair_id"]]
    for i, r in enumerate(rows):
        ids = out["prompt_ids"][i][out["prompt_mask"][i].bool()].tolist()
        assert ids == judge_prompt_ids(tiny_model_dir, pair, r["order"], "direct")
        assert r["label_shown"] == (pair.label if r["order"] == "AB" else {"A": "B", "B": "A"}[pair.label])
    assert math.isfinite(trainer.state.log_history[0]["loss"])
    assert any(not torch.equal(before[k], v.detach()) for k, v in trainer.model.named_parameters())


def test_a_pair_split_across_processes_is_refused(tiny_model_dir: Path, pair_file: Path, tmp_path: Path) -> None:
    from deltarubric.train.grpo import check_whole_pairs

    # G = 2 * (1 + 2) = 6 rows per pair. Two processes with 3 rows each make TRL's global batch of 6 valid, but each
    # process would hold half a pair.
    with pytest.raises(ValueError, match="3 rows per process is not a multiple of the 6 rows of one pair"):
        check_whole_pairs(3, 6)
    check_whole_pairs(12, 6)
    with pytest.raises(ValueError, match="6"):  # one process: TRL's own check refuses it first
        make_trainer(
            tiny_model_dir, read_pairs(pair_file), tmp_path / "o", judge="deltarubric", per_device_train_batch_size=4
        )


def test_trl_contract() -> None:
    """The TRL pieces train/grpo.py relies on beyond the public API; TRL is pinned exactly in pyproject.toml."""
    import inspect
    from importlib import metadata

    from trl import GRPOTrainer

    assert metadata.version("trl") == "1.16.0"
    params = {
        name: list(inspect.signature(getattr(GRPOTrainer, name)).parameters)
        for name in (
            "_tokenize_prompts",
            "_generate_single_turn",
            "_calculate_rewards",
            "_generate_and_score_completions",
            "__init__",
        )
    }
    assert params["_tokenize_prompts"][:2] == ["self", "prompts"]
    assert params["_generate_single_turn"][:5] == [
        "self",
        "prompt_ids",
        "images",
        "multimodal_fields",
        "num_generations",
    ]
    assert params["_calculate_rewards"] == ["self", "inputs", "prompts", "completions", "completion_ids_list"]
    assert params["_generate_and_score_completions"] == ["self", "inputs"]
    assert "rollout_func" in params["__init__"]
    source = inspect.getsource(GRPOTrainer._generate)
    assert 'extra_fields.pop("env_mask", None)' in source  # our loss mask for the verifier's bridge tokens


def test_two_pairs_per_batch_align_image_tokens_and_get_per_role_advantages(
    tiny_model_dir: Path, pair_file: Path, tmp_path: Path
) -> None:
    from deltarubric.train.grpo import role_advantages

    # Pairs whose prompts differ in length share one batch: left padding must shift ids and image-token types alike.
    pairs = read_pairs(pair_file)
    long = pairs[0].model_copy(
        update={"request": pairs[0].request.model_copy(update={"question": "How many cats? " * 30})}
    )
    trainer = make_trainer(
        tiny_model_dir,
        [long, pairs[1]],
        tmp_path / "out",
        judge="deltarubric",
        reward_funcs=[length_reward],
        per_device_train_batch_size=12,
    )
    captured: dict[str, Any] = {}
    score = trainer._generate_and_score_completions

    def spy(inputs: list[dict[str, Any]]) -> dict[str, Any]:
        out = score(inputs)
        captured["out"], captured["rows"] = out, [dict(x) for x in inputs]
        return out

    trainer._generate_and_score_completions = spy
    trainer.train()
    out, rows = captured["out"], captured["rows"]
    assert len({r["pair_id"] for r in rows}) == 2
    image_pad = trainer.processing_class.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    width = out["prompt_ids"].shape[1]
    is_image = out["mm_token_type_ids"][:, :width] == 1
    assert torch.equal(is_image, out["prompt_ids"] == image_pad)
    # The advantages TRL trains on are the per-role ones, computed from this batch's rewards.
    rewards = torch.tensor(length_reward([None] * len(rows), generated=[r["generated"] for r in rows]))
    expected = role_advantages(
        rewards,
        [r["role"] for r in rows],
        [r["group"] for r in rows],
        [r["chain"] for r in rows],
        verifier_baseline="checklist",
        scale="group",
    )
    assert torch.allclose(out["advantages"].cpu(), expected, atol=1e-5)
    assert out["advantages"].abs().sum() > 0
