"""MSRL's staged transfer (`train msrl`) on the tiny checkpoint: every stage a couple of steps, in order.

Mechanics, not learning (benchmarks/train_msrl.py measures transfer on the testbed): which weights each stage may
move, the records, starting from the previous stage, `--stages` subsets and resuming, the caption and text views,
the task-type reward, CMKD's chain filter, and the final checkpoint judging through the real Judge.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from deltarubric.rm.config import JudgeConfig
from deltarubric.rm.judge import Judge
from deltarubric.rm.pairs import LabelledPair, read_pairs
from deltarubric.rubrics.parsing import parse_msrl
from deltarubric.rubrics.targets import render_target
from deltarubric.train import msrl
from deltarubric.train.cmkd import Chain, select_chains
from deltarubric.train.render import order_for, shown
from deltarubric.train.views import CAPTION_LEAD, caption_view, describe, text_view, views
from tests.scripted import ScriptedBackend

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "TRL_EXPERIMENTAL_SILENCE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_DISABLED": "true",
}
CHAIN = "<type>image_understanding</type><think>Response A matches the caption.</think><answer>A</answer>"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Image pairs with captions (syn/), other scenes' text views (text.jsonl), and a small test recipe."""
    from deltarubric.train.synthetic import make_synthetic
    from deltarubric.train.views import write_views

    root = tmp_path_factory.mktemp("msrl-data")
    make_synthetic(root / "syn", 10, seed=0)
    make_synthetic(root / "other", 10, seed=1, splits={"train": 1.0})
    write_views(root / "other" / "train.jsonl", root, kinds=("text",))
    recipe = {
        "common": {
            "use_cpu": True,
            "bf16": False,
            "gradient_checkpointing": False,
            "report_to": "none",
            "max_steps": 2,
            "per_device_train_batch_size": 4,
            "num_generations": 4,
            "max_completion_length": 8,
            "learning_rate": 1e-2,
            "logging_steps": 1,
            "save_strategy": "no",
            "seed": 0,
        },
        "text_sft": {"data": str(root / "text.jsonl")},
        "text_grpo": {"data": str(root / "text.jsonl")},
        "caption": {"data": str(root / "syn" / "train.jsonl"), "replay_data": str(root / "text.jsonl")},
        "cmkd": {"data": str(root / "syn" / "train.jsonl"), "cmkd_samples": 2, "cmkd_max_tokens": 8},
        "multimodal": {
            "data": str(root / "syn" / "train.jsonl"),
            "eval_data": str(root / "syn" / "val.jsonl"),
            "eval_limit": 2,
            "eval_max_tokens": 8,
            "eval_steps": 2,
        },
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return root


def length_reward(completions: list[Any], **_: Any) -> list[float]:
    """A reward the random tiny model can earn (shorter is better), so every GRPO group has variance and moves
    weights; the msrl rewards themselves are tested on scripted completions below."""
    return [-len(c[-1]["content"]) / 20 for c in completions]


def _with_length_reward(stage: msrl.Stage, task_reward: str) -> tuple[list[Any], list[float]]:
    funcs, weights = ORIGINAL_REWARDS(stage, task_reward)
    return [*funcs, length_reward], [*weights, 1.0]


ORIGINAL_REWARDS = msrl.stage_rewards


def scripted_sampler(model: str, judge_args: Any, config: Any) -> ScriptedBackend:
    """CMKD's sampler: every chain says A (so only pairs whose gold is A in their SFT order keep one)."""
    return ScriptedBackend(lambda conv: CHAIN, confidence=0.9)


def run_stages(out: Path, recipe: Path, *flags: str, model: Path | None = None) -> dict[str, Any]:
    argv = ["--config", str(recipe), "--out", str(out), *flags] + (["--model", str(model)] if model else [])
    return msrl.run_msrl(msrl.parse_cli(argv))


@pytest.fixture(scope="module")
def full_run(tiny_model_dir: Path, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("msrl-run") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(msrl, "stage_rewards", _with_length_reward)
        mp.setattr(msrl, "sampling_backend", scripted_sampler)
        result = run_stages(out, data / "recipe.yaml", model=tiny_model_dir)
    assert list(result["stages"]) == list(msrl.NAMES)
    return out


def _weights(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def _changed(a: dict[str, Any], b: dict[str, Any], visual: bool) -> set[str]:
    return {k for k in a if ("visual" in k) == visual and not (a[k] == b[k]).all()}


def test_each_stage_starts_from_the_last_and_moves_only_what_it_may(full_run: Path, tiny_model_dir: Path) -> None:
    previous = _weights(tiny_model_dir)
    for name in msrl.NAMES:
        record = json.loads((full_run / name / msrl.RECORD).read_text())
        assert record["stage"] == name and record["steps"] == 2 and record["model"] == name
        expected_start = str(tiny_model_dir.resolve()) if name == "text_sft" else msrl.NAMES[msrl.NAMES.index(name) - 1]
        assert record["started_from"] == expected_start
        now = _weights(full_run / name)
        assert _changed(previous, now, visual=False), f"{name}: the language model did not move"
        if msrl.BY_NAME[name].freeze_vision:
            assert record["vision"] == "frozen" and not _changed(previous, now, visual=True), f"{name}: vision moved"
        else:
            assert record["vision"] == "trainable" and _changed(previous, now, visual=True), (
                f"{name}: vision did not move"
            )
        previous = now
    assert (full_run / "final").resolve() == (full_run / "multimodal").resolve()


def test_records_name_the_data_and_the_config(full_run: Path, data: Path) -> None:
    text_sft = json.loads((full_run / "text_sft" / msrl.RECORD).read_text())
    (source,) = text_sft["data"]
    assert source["sha256"] == hashlib.sha256((data / "text.jsonl").read_bytes()).hexdigest()
    assert source["pairs"] == len(read_pairs(data / "text.jsonl")) == text_sft["counts"]["examples"]
    assert text_sft["config"]["trainer"]["judge"] == "msrl" and text_sft["config"]["arguments"]["freeze_vision"] is True
    grpo = json.loads((full_run / "text_grpo" / msrl.RECORD).read_text())
    trainer = grpo["config"]["trainer"]
    assert (
        trainer["beta"],
        trainer["epsilon"],
        trainer["epsilon_high"],
        trainer["scale_rewards"],
        trainer["loss_type"],
    ) == (0.0, 0.2, 0.28, "none", "grpo")
    assert grpo["rewards"] == {"verdict_correct": 1.0, "verdict_format": 0.2, "length_reward": 1.0}
    third = json.loads((full_run / "multimodal" / msrl.RECORD).read_text())
    assert third["rewards"]["task_type_authors"] == 0.2
    assert [json.loads(x)["step"] for x in (full_run / "multimodal" / "validation.jsonl").read_text().splitlines()] == [
        0,
        2,
    ]


def test_caption_stage_trains_on_caption_views_plus_replayed_text(full_run: Path, data: Path) -> None:
    record = json.loads((full_run / "caption" / msrl.RECORD).read_text())
    real = read_pairs(data / "syn" / "train.jsonl")
    trained = read_pairs(full_run / "caption" / "train.jsonl")
    replayed = [p for p in trained if p.request.id.startswith("replay/")]
    assert (
        len(trained) - len(replayed) == len(real)
        and len(replayed) == round(len(real) / 5) == record["counts"]["replayed"]
    )
    assert record["counts"]["task_types"] == {"image_understanding": len(real), "text": len(replayed)}
    by_id = {p.request.id: p for p in real}
    for p in trained:
        assert not p.request.images and p.request.task_type == "text"
        if p in replayed:
            continue
        assert (
            p.request.question
            == f"{CAPTION_LEAD}{by_id[p.request.id].caption}\n\n{by_id[p.request.id].request.question}"
        )
    assert trained[0].request.id != min(p.request.id for p in trained) or len(trained) < 3  # shuffled (seeded)
    assert (
        record["data"][-1]["sha256"] == hashlib.sha256((full_run / "caption" / "train.jsonl").read_bytes()).hexdigest()
    )


def test_cmkd_distils_only_gold_chains_onto_the_real_image(full_run: Path, data: Path) -> None:
    from deltarubric.train.sft import sft_examples

    real = {p.request.id: p for p in read_pairs(data / "syn" / "train.jsonl")}
    gold_a = {pid for pid, p in real.items() if shown(p.label, order_for(0, pid, 0, 0)) == "A"}
    chains = [json.loads(x) for x in (full_run / "cmkd" / "chains.jsonl").read_text().splitlines()]
    assert len(chains) == 2 * len(real)  # 2 samples, SFT order only (no swap)
    assert {c["pair_id"] for c in chains if c["kept"]} == gold_a
    assert all(c["problem"] == "wrong label" for c in chains if c["pair_id"] not in gold_a)
    record = json.loads((full_run / "cmkd" / msrl.RECORD).read_text())
    assert record["counts"]["kept_pairs"] == len(gold_a) and record["counts"]["chains_in_sft_order"][
        "usable"
    ] == 2 * len(gold_a)
    distilled = read_pairs(full_run / "cmkd" / "train.jsonl")
    assert {p.request.id for p in distilled} == gold_a and all(p.request.images for p in distilled)  # the real image
    for pair, example in zip(distilled, sft_examples(distilled, "msrl", "traces")):
        target = example["completion"][0]["content"]
        parsed = parse_msrl(target)
        assert parsed.winner == "A" and parsed.rationale == "Response A matches the caption."  # the chain, as sampled
        assert f"<caption>{real[pair.request.id].caption}</caption>" in target and len(example["images"]) == 1


def test_final_checkpoint_judges_with_the_msrl_judge(full_run: Path, data: Path) -> None:
    pair = read_pairs(data / "syn" / "val.jsonl")[0]
    config = JudgeConfig(model=str(full_run / "final"), judge="msrl", sampling={"max_tokens": 8})
    verdict = Judge(config).judge(pair.request)
    assert verdict.judge == "msrl" and set(verdict.raw) == {"AB/judge"} and verdict.error is None


def test_an_interrupted_stage_resumes_from_its_checkpoint(tiny_model_dir: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    flags = ("--stages", "text_sft", "--save_strategy", "steps", "--save_steps", "1")
    run_stages(out, data / "recipe.yaml", *flags, model=tiny_model_dir)
    stage = out / "text_sft"
    # As if killed after checkpoint-1: no record, no final model, no later checkpoint.
    for name in (msrl.RECORD, "model.safetensors", "trainer_state.json"):
        (stage / name).unlink()
    shutil.rmtree(stage / "checkpoint-2")
    result = run_stages(out, data / "recipe.yaml", *flags)  # the base comes from OUT/msrl.yaml now
    record = json.loads((stage / msrl.RECORD).read_text())
    assert (
        record["resumed_from"] == "text_sft/checkpoint-1"
        and record["steps"] == 2
        and result["stages"]["text_sft"]["steps"] == 2
    )
    history = json.loads((stage / "trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "loss" in h] == [1, 2]
    # Done now: a rerun skips it.
    assert run_stages(out, data / "recipe.yaml", *flags)["stages"]["text_sft"]["skipped"]


def test_stage_subset_from_the_command_line(full_run: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    shutil.copytree(full_run / "text_sft", out / "text_sft")
    shutil.copy(full_run / msrl.RECIPE, out / msrl.RECIPE)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "deltarubric.cli",
            "train",
            "msrl",
            "--resume",
            str(out),
            "--stages",
            "caption",
            "--caption.max_steps",
            "1",
        ],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(result["stages"]) == ["caption"] and result["stages"]["caption"]["steps"] == 1
    record = json.loads((out / "caption" / msrl.RECORD).read_text())
    assert record["started_from"] == "text_sft"  # text_grpo is neither done nor asked for: the nearest done stage
    assert sorted(p.name for p in out.iterdir()) == ["caption", "final", "msrl.yaml", "text_sft"]


def test_bad_invocations_fail_before_training(data: Path, tmp_path: Path) -> None:
    recipe = data / "recipe.yaml"
    out = str(tmp_path / "o")
    for argv, message in [
        (["--config", str(recipe), "--out", out, "--stages", "caption,images"], "unknown \\['images'\\]"),
        (["--config", str(recipe)], "give --out"),
        (["--resume", out], "no MSRL run there"),
        (["--config", str(recipe), "--out", out, "--bogus.max_steps", "1"], "unknown stage 'bogus'"),
    ]:
        with pytest.raises(ValueError, match=message):
            msrl.parse_cli(argv)
    inv = msrl.parse_cli(["--config", str(recipe), "--out", out, "--model", "m", "--max_stepz", "1"])
    with pytest.raises(ValueError, match="no stage has a setting --max_stepz"):
        msrl.run_msrl(inv)
    inv = msrl.parse_cli(
        ["--config", str(recipe), "--out", out, "--model", "m", "--text_sft.max_completion_length", "4"]
    )
    with pytest.raises(ValueError, match="stage text_sft: .*max_completion_length"):
        msrl.run_msrl(inv)
    (tmp_path / "o" / "text_grpo").mkdir(parents=True)  # an interrupted stage that this run would skip over
    inv = msrl.parse_cli(["--config", str(recipe), "--out", out, "--model", "m", "--stages", "caption"])
    with pytest.raises(ValueError, match="unfinished text_grpo stage"):
        msrl.run_msrl(inv)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: m\ncaptions: {}\n")
    with pytest.raises(ValueError, match="unknown keys \\['captions'\\]"):
        msrl.load_recipe(bad)


@pytest.mark.parametrize("recipe", ["msrl_qwen3vl_8b.yaml", "testbed_msrl.yaml"])
def test_recipes_parse_with_the_authors_grpo_settings(recipe: str, tmp_path: Path) -> None:
    inv = msrl.parse_cli(
        ["--config", str(ROOT / "recipes" / recipe), "--out", str(tmp_path), "--model", "m", "--bf16", "false"]
    )
    for name in msrl.NAMES:
        stage = msrl.BY_NAME[name]
        judge_args, config = msrl.stage_args(inv, stage, "m", tmp_path / f"{name}.yaml")
        assert judge_args.freeze_vision is stage.freeze_vision and judge_args.data and config.judge == "msrl"
        if stage.kind == "grpo":
            assert (
                config.num_generations,
                config.temperature,
                config.beta,
                config.epsilon,
                config.epsilon_high,
                config.scale_rewards,
                config.loss_type,
            ) == (8, 1.0, 0.0, 0.2, 0.28, "none", "grpo")
            assert config.per_device_train_batch_size * config.steps_per_generation % config.num_generations == 0
            if recipe.startswith("msrl_"):
                assert config.learning_rate == 1e-6 and config.task_reward == "authors"
    assert inv.recipe["caption"]["replay_ratio"] == 5


def test_task_type_reward_authors_and_plain() -> None:
    from deltarubric.train.rewards import task_type_authors, task_type_correct

    completions = [
        "<type>Image Understanding</type><think>x</think><answer>A</answer>",
        "<type>text</type><answer>B</answer>",
        "<answer>A</answer>",
        "<type>image-understanding</type>",
    ]
    gold = ["image_understanding", "image_understanding", "text", "image_understanding"]
    assert task_type_correct(completions, gold) == [1.0, 0.0, 0.0, 1.0]
    assert task_type_authors(completions, gold) == [0.2, 0.0, 0.0, 0.2]
    assert task_type_correct(completions[:2], gold[:2], role=["planner", "judge"]) == [None, 0.0]


def _pair(pid: str, label: str) -> LabelledPair:
    return LabelledPair.model_validate(
        {"request": {"id": pid, "question": "q", "task_type": "text", "a": "x", "b": "y"}, "label": label}
    )


def test_cmkd_filter_keeps_the_most_confident_gold_chain_in_format() -> None:
    def chain(pid: str, order: str, answer: str, p: float | None = None, think: str = "t", task: str = "text") -> Chain:
        text = f"<type>{task}</type><think>{think}</think><answer>{answer}</answer>"
        return Chain(pid, order, text, p)  # type: ignore[arg-type]

    pairs = {
        "p1": _pair("p1", "A"),
        "p2": _pair("p2", "B"),
        "p3": _pair("p3", "A"),
        "p4": _pair("p4", "A"),
        "p5": _pair("p5", "A"),
        "p6": _pair("p6", "A"),
    }
    orders = {"p1": "AB", "p2": "BA", "p3": "AB", "p4": "AB", "p5": "AB", "p6": "AB"}
    chains = [
        chain("p1", "AB", "B"),
        chain("p1", "AB", "A", 0.6),
        chain("p1", "AB", "A", 0.9),
        chain("p1", "AB", "A", 0.7),
        chain("p2", "BA", "A", 0.8),
        chain("p2", "BA", "B", 0.99),  # gold B shown second in BA order: shown "A"
        chain("p3", "AB", "A", think=""),
        chain("p3", "BA", "B"),  # no <think>; the other order is no candidate
        Chain("p4", "AB", "Response A is better.", 0.9),  # no <answer>
        chain("p5", "AB", "A", task="image_generation"),  # a wrong <type>: the target writes the pair's own
        chain("p6", "AB", "A", think="x</think><answerb"),  # rambling: the parser reads its last tags, SFT must not
    ]
    kept, dropped = select_chains(chains, pairs, orders)  # type: ignore[arg-type]
    assert {k: c.p_shown_a for k, c in kept.items()} == {"p1": 0.9, "p2": 0.8, "p5": None}
    assert dropped == {"no chain names the gold label in format": 3}
    target = render_target("msrl", task_type="text", caption=None, rationale="t", winner="A")
    assert parse_msrl(target).task_type == "text"  # what distilled_pair's example trains on for p5
    # Consistent under swap: the other order's majority must name the gold candidate too.
    swapped = chains[:4] + [chain("p1", "BA", "B"), chain("p1", "BA", "A")]  # 1 of 2 right in BA: not a majority
    kept, dropped = select_chains(swapped, pairs, orders, swap=True)  # type: ignore[arg-type]
    assert not kept and dropped == {"not consistent under A/B swap": 1}
    kept, _ = select_chains(swapped + [chain("p1", "BA", "B")], pairs, orders, swap=True)  # type: ignore[arg-type]
    assert kept["p1"].order == "AB" and kept["p1"].p_shown_a == 0.9


def test_caption_and_text_views(data: Path) -> None:
    pairs = read_pairs(data / "syn" / "train.jsonl")
    p = pairs[0]
    cap = caption_view(p)
    assert cap.request.id == p.request.id and cap.label == p.label and cap.request.task_type == "text"
    assert not cap.request.images and p.caption in cap.request.question and cap.caption is None
    txt = text_view(p)
    assert txt.request.question.startswith("Scene: The top left cell ") and "image" not in txt.request.question.lower()
    assert describe("top left: red square. top right: empty. bottom left: empty. bottom right: blue circle.") == (
        "The top left cell has a red square. The top right cell is empty. The bottom left cell is empty. "
        "The bottom right cell has a blue circle."
    )
    assert describe("A cat on a mat.") == "A cat on a mat."
    gen = LabelledPair.model_validate(
        {
            "request": {
                "id": "g",
                "task_type": "image_generation",
                "question": "a cat",
                "a": {"image": p.request.images[0]},
                "b": {"image": p.request.images[0]},
            },
            "label": "A",
            "caption": "c",
        }
    )
    no_caption = p.model_copy(update={"caption": None})
    viewed, skipped = views([p, gen, no_caption, cap], "caption")
    assert viewed == [cap] and skipped == {
        "candidates are images or videos (one caption cannot describe both)": 1,
        "no caption": 1,
        "no image (already text)": 1,
    }
