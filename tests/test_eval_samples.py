"""VL-RewardBench's k-sample protocol (`eval run --official --samples k`), the official reading of the preset's text
under any order, the count of samples cut by the token limit, and MM-RLHF-RewardBench videos given as frame folders.

No model is loaded except in the last test: a scripted backend answers in the official format, choosing its text from
(seed, prompt), so different seeds give different samples and the official figures can be checked against cal.py's
rule (the oracle in test_official_oracles.py) on the very samples the run stored.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from deltarubric.cli.main import app
from deltarubric.eval.core import Prediction, judge_stats
from deltarubric.eval.registry import get_benchmark
from deltarubric.eval.runner import RESULTS_FILE, RUN_FILE, SUMMARY_FILE, eval_config, read_predictions, run_benchmark
from deltarubric.rm.backends.base import Backend, Conversation, Generation, ImagePart
from deltarubric.rm.config import SamplingConfig, build_config
from tests.scripted import user_text
from tests.test_official_oracles import VLRB_OUTPUTS, assert_official_equals_oracle, cal_every_sample, vlrb_row

runner = CliRunner()
VLRB = get_benchmark("vl-rewardbench")
MMRLHF = get_benchmark("mm-rlhf-rewardbench")
GENAI = get_benchmark("genai-bench")
SHIPPED_VLRB = Path(__file__).resolve().parents[1] / "data/vl-rewardbench/data.jsonl"
CUT = "Accuracy: Answer 1 describes the image well, while Answer 2"  # an answer stopped by the token limit


class SeededBackend(Backend):
    """Answers in VL-RewardBench's official format, the text drawn from sha256(seed, prompt); some answers are cut by
    the token limit (finish_reason 'length', no verdict). Records the sampling of every call."""

    name = "seeded"

    def __init__(self, cut_share: int = 6, fail: set[tuple[int, str]] | None = None) -> None:
        self.cut_share = cut_share  # one answer in `cut_share` is cut (0: none)
        self.fail = fail or set()  # (seed, question word) pairs that get a backend error, once
        self.sampling: list[SamplingConfig] = []
        self.prompts: list[str] = []

    async def agenerate(self, conversations: Sequence[Conversation], sampling: SamplingConfig) -> list[Generation]:
        out = []
        for conv in conversations:
            self.sampling.append(sampling)
            text = user_text(conv)
            self.prompts.append(text)
            hit = next((f for f in self.fail if f[0] == sampling.seed and f[1] in text), None)
            if hit:
                self.fail.discard(hit)
                out.append(Generation(error="RuntimeError: connection refused"))
                continue
            h = hashlib.sha256(f"{sampling.seed}:{text}".encode()).digest()
            if self.cut_share and h[0] % self.cut_share == 0:
                out.append(Generation(text=CUT, finish_reason="length"))
                continue
            out.append(Generation(text=VLRB_OUTPUTS[h[1] % len(VLRB_OUTPUTS)].replace("{n}", "12"[h[2] % 2])))
        return out


def vlrb_rows() -> list[dict]:
    """Rows of every group, the five whose second response is preferred among them."""
    rows = [json.loads(line) for line in SHIPPED_VLRB.read_text().splitlines()]
    from deltarubric.eval.benchmarks.vl_rewardbench import group_of

    by_group: dict[str, list[dict]] = {}
    for r in rows:
        by_group.setdefault(group_of(r["id"]), []).append(r)
    second = [r for r in rows if r["human_ranking"] == [1, 0]]
    chosen = by_group["general"][:3] + by_group["hallucination"][:4] + by_group["reasoning"][:4] + second
    return list({(r["id"], r["query"]): r for r in chosen}.values())


@pytest.fixture
def vlrb_dir(tmp_path) -> Path:
    root = tmp_path / "vlrb"
    rows = vlrb_rows()
    for i, row in enumerate(rows):
        path = root / row["image_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40 + i, 32), (10 * i, 90, 160)).save(path)
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture
def seeded(monkeypatch):
    """Every Judge the CLI builds answers through one SeededBackend (no model is loaded)."""
    import deltarubric.rm.judge as judge_module

    shared = SeededBackend()
    real = judge_module.Judge
    monkeypatch.setattr(judge_module, "Judge", lambda config, backend=None: real(config, backend=shared))
    return shared


def rows_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / RESULTS_FILE).read_text().splitlines()]


def cal_rows(run: Path, data_dir: Path) -> list[dict]:
    """The run's stored samples written as cal.py's input rows (one per sample, its drawn order and its text)."""
    from deltarubric.eval.benchmarks.vl_rewardbench import item_key

    items = {item_key(r): r for r in (json.loads(line) for line in (data_dir / "data.jsonl").read_text().splitlines())}
    out = []
    for row in rows_of(run):
        for verdict in row.get("samples") or [row["verdict"]]:
            for order in verdict["orders"]:
                text = verdict["raw"][f"{order['shown_order']}/judge"]
                out.append(vlrb_row(items[row["key"]], text, 0 if order["shown_order"] == "AB" else 1))
    return out


# ============================================================================================ the k-sample protocol
def test_official_samples_run_the_leaderboard_protocol_and_vote_as_cal_py(seeded, vlrb_dir, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "eval",
            "run",
            "vl-rewardbench",
            "-m",
            "scripted",
            "--official",
            "--samples",
            "5",
            "--data-dir",
            str(vlrb_dir),
            "--out",
            str(out),
            "--chunk-size",
            "4",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / RUN_FILE).read_text())
    assert record["samples"] == 5 and record["official_preset"] is True
    sampling = record["judge"]["sampling"]
    assert (sampling["temperature"], sampling["top_p"], sampling["max_tokens"]) == (0.2, 0.2, 2048)
    # every call sampled as the official inference does, sample s with seed s: five distinct seeds
    assert {(s.temperature, s.top_p, s.max_tokens) for s in seeded.sampling} == {(0.2, 0.2, 2048)}
    assert sorted({s.seed for s in seeded.sampling}) == [0, 1, 2, 3, 4]

    rows = rows_of(out)
    n_items = len(vlrb_rows())
    assert len(rows) == n_items and len({r["key"] for r in rows}) == n_items
    assert all(len(r["samples"]) == 5 and all(len(v["orders"]) == 1 for v in r["samples"]) for r in rows)
    # the order is drawn per sample
    assert any(len({v["orders"][0]["shown_order"] for v in r["samples"]}) == 2 for r in rows)
    assert any(len({v["raw"][f"{v['orders'][0]['shown_order']}/judge"] for v in r["samples"]}) > 1 for r in rows)

    # The official figures are cal.py's over every stored sample (k = 5 >= the samples per item).
    scores = VLRB.score(read_predictions(out), "default")
    oracle = cal_every_sample(cal_rows(out, vlrb_dir))
    assert_official_equals_oracle(scores, oracle)
    assert oracle["dropped"] > 0  # the cut samples and the adversarial outputs leave some items out
    printed = json.loads(result.stdout)
    assert printed["official_overall"] == pytest.approx(scores["official_overall"], abs=1e-4)


def test_samples_cut_by_the_token_limit_are_counted_and_said(seeded, vlrb_dir, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "eval",
            "run",
            "vl-rewardbench",
            "-m",
            "scripted",
            "--official",
            "--samples",
            "3",
            "--data-dir",
            str(vlrb_dir),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = rows_of(out)
    cut = [(r["key"], s) for r in rows for s, keys in enumerate(r["length_cut"]) if keys]
    assert cut and all(
        r["samples"][s]["raw"][r["length_cut"][s][0]] == CUT for r in rows for k, s in cut if k == r["key"]
    )
    limited = json.loads((out / SUMMARY_FILE).read_text())["length_limited"]
    assert limited == {"samples": len(cut), "unreadable": len(cut), "of": 3 * len(rows), "max_tokens": 2048}
    said = f"{len(cut)} of {3 * len(rows)} judged samples stopped at the length limit (max_tokens 2048)"
    assert said in result.stderr
    # the scorer counts them as what they are: no verdict (doesntMatch), never silently gone
    assert json.loads((out / SUMMARY_FILE).read_text())["scores"]["parse_failure_rate"] > 0
    scored = runner.invoke(app, ["eval", "score", "vl-rewardbench", "--predictions", str(out)])
    assert scored.exit_code == 0 and said in scored.stderr


def test_a_generation_cut_in_a_one_sample_run_is_counted_too(vlrb_dir, tmp_path):
    from deltarubric.rm.judge import Judge

    config = eval_config(VLRB, build_config(None, model="scripted", judge="direct"), official=False)
    backend = SeededBackend(cut_share=2)
    run_benchmark(VLRB, "default", config, vlrb_dir, tmp_path / "run", judge=Judge(config, backend=backend))
    rows = rows_of(tmp_path / "run")
    assert all("samples" not in r for r in rows)  # the one-sample row format is unchanged
    cut = sum(bool(r["length_cut"]) for r in rows)
    assert 0 < cut < len(rows)
    assert json.loads((tmp_path / "run" / SUMMARY_FILE).read_text())["length_limited"]["samples"] == cut


def test_sampling_flags_override_the_official_defaults_and_others_keep_ours():
    mine = build_config(None, model="m", sampling={"temperature": 0.7, "max_tokens": None})
    config = eval_config(VLRB, mine, official=True)
    assert (config.sampling.temperature, config.sampling.top_p, config.sampling.max_tokens) == (0.7, 0.2, 2048)
    from_file = build_config(None, model="m", sampling={"max_tokens": 4096})  # a --config file's value counts as set
    assert eval_config(VLRB, from_file, official=True).sampling.max_tokens == 4096
    plain = build_config(None, model="m", sampling={})
    assert eval_config(VLRB, plain, official=False).sampling == plain.sampling  # our judges: our defaults
    genai = eval_config(GENAI, plain, official=True).sampling
    assert (genai.temperature, genai.top_p, genai.max_tokens) == (0.0, 1.0, 1024)  # its official inference is greedy


def test_samples_resume_extend_and_refuse_another_k(vlrb_dir, tmp_path):
    from deltarubric.rm.judge import Judge

    config = eval_config(VLRB, build_config(None, model="scripted", sampling={}), official=True)
    backend = SeededBackend(fail={(1, "Answer 1:")})  # sample 1 of the first item fails once (the server was down)
    judge = Judge(config, backend=backend)
    run = tmp_path / "run"
    run_benchmark(VLRB, "default", config, vlrb_dir, run, limit=4, judge=judge, samples=3, max_error_rate=None)
    first = rows_of(run)
    assert len(first) == 4 and first[0]["verdict"]["error"]  # one failed sample: the item carries its error
    calls = len(backend.prompts)
    run_benchmark(VLRB, "default", config, vlrb_dir, run, limit=8, judge=judge, samples=3)
    rows = rows_of(run)
    keys = [i.key for i in VLRB.load(vlrb_dir, "default")]
    assert [r["key"] for r in rows] == keys[:4] + [keys[0]] + keys[4:8]  # the failed item judged again, appended
    assert len(backend.prompts) - calls == 5 * 3  # the failed item and four new ones, three samples each
    preds = read_predictions(run)
    assert len(preds) == 8 and all(p.error is None and len(p.samples) == 3 for p in preds)
    with pytest.raises(ValueError, match=r"samples: 3 there, 5 now"):
        run_benchmark(VLRB, "default", config, vlrb_dir, run, limit=8, judge=judge, samples=5)


def test_samples_are_refused_where_the_metric_does_not_vote(seeded, tmp_path):
    result = runner.invoke(
        app,
        [
            "eval",
            "run",
            "mm-rlhf-rewardbench",
            "-m",
            "scripted",
            "--samples",
            "3",
            "--data-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert isinstance(result.exception, ValueError)  # the CLI's main prints it as one line, exit code 2
    assert "does not vote over sampled judgments" in str(result.exception) and not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match="does not vote"):
        run_benchmark(MMRLHF, "default", build_config(None, model="m"), tmp_path, tmp_path / "r2", samples=2)


def test_swap_consistency_counts_items_judged_once_in_each_order():
    preds = [
        Prediction(key="1", gold="A", samples=[("AB", "A"), ("BA", "A")], parse_ok=True),  # both orders, agree
        Prediction(key="2", gold="A", samples=[("AB", "A"), ("AB", "B")], parse_ok=True),  # two samples, one order
        Prediction(key="3", gold="A", samples=[("AB", "A"), ("BA", "B"), ("AB", "A")], parse_ok=True),  # k = 3
    ]
    assert judge_stats(preds)["swap_consistency"] == 100.0
    assert math.isnan(judge_stats(preds[1:])["swap_consistency"])


# ================================================================= the preset's text is official under any order
def test_vlrb_preset_with_swap_or_samples_is_read_with_the_official_rule(vlrb_dir, tmp_path):
    """cal.py reads each sample with the order it drew: 'Answer 3 is better' is agree in either order, so a preset
    run with --swap or k samples scores it as cal.py does (strict: no side, wrong)."""
    from deltarubric.rm.judge import Judge

    class Three(SeededBackend):
        async def agenerate(self, conversations, sampling):
            return [Generation(text="Overall Judgment: Answer 3 is better.") for _ in conversations]

    for name, update, samples in (("swap", {"swap": True}, 1), ("k3", {}, 3)):
        config = eval_config(VLRB, build_config(None, model="m", judge="vlrb_official", **update), official=False)
        run = tmp_path / name
        run_benchmark(VLRB, "default", config, vlrb_dir, run, judge=Judge(config, backend=Three()), samples=samples)
        assert json.loads((run / RUN_FILE).read_text())["official_preset"] is True
        preds = read_predictions(run)
        assert all(p.official_format for p in preds) and {len(p.samples) for p in preds} == {2 if name == "swap" else 3}
        scores = VLRB.score(preds, "default")
        assert scores["official_overall"] == 100.0 and scores["official_dropped"] == 0 and scores["strict_overall"] == 0
        assert_official_equals_oracle(scores, cal_every_sample(cal_rows(run, vlrb_dir)))

    # a swap run recorded before this counted is read the same way now
    record = json.loads((tmp_path / "swap" / RUN_FILE).read_text())
    (tmp_path / "swap" / RUN_FILE).write_text(json.dumps(record | {"official_preset": False}))
    assert all(p.official_format for p in read_predictions(tmp_path / "swap"))
    # other judges' text is still read as their parsed winners
    direct = eval_config(VLRB, build_config(None, model="m", judge="direct", swap=True), official=False)
    run_benchmark(VLRB, "default", direct, vlrb_dir, tmp_path / "direct", judge=Judge(direct, backend=Three()))
    assert not any(p.official_format for p in read_predictions(tmp_path / "direct"))


def test_other_presets_keep_the_official_order_rule():
    from deltarubric.eval.runner import official_format

    mmrb = get_benchmark("multimodal-rewardbench")
    assert official_format(GENAI, "genai_bench_official", False, "given")
    assert not official_format(GENAI, "genai_bench_official", True, "given")
    assert not official_format(mmrb, "mmrb_official", False, "random")
    assert official_format(VLRB, "vlrb_official", True, "given") and official_format(
        VLRB, "vlrb_official", False, "given"
    )
    assert not official_format(VLRB, "direct", False, "random")


# ============================================================================ MM-RLHF-RewardBench: frame folders
def write_frames(folder: Path, n: int, extra: bool = True) -> None:
    """n PNG frames whose red channel is the frame number, named so that name order is time order; plus files that
    are not frames."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (24, 16), (i, 50, 90)).save(folder / f"frame_{i:04d}.png")
    if extra:
        (folder / ".DS_Store").write_bytes(b"\0")
        (folder / "info.txt").write_text("not a frame")


@pytest.fixture
def mmrlhf_dir(tmp_path) -> Path:
    root = tmp_path / "mmrlhf"
    (root / "images/mcq").mkdir(parents=True)
    Image.new("RGB", (32, 32), (200, 10, 10)).save(root / "images/mcq/1.png")
    write_frames(root / "video/clipA", 40)
    write_frames(root / "video/clipB", 3)
    rows = [
        {
            "id": "img",
            "image": "images/mcq/1.png",
            "prompt": "What colour is it?",
            "chosen": "Red.",
            "rejected": "Blue.",
        },
        {"id": "vid", "video": "video/clipA", "prompt": "What moves?", "chosen": "A car.", "rejected": "A boat."},
        {"id": "vid", "video": "video/clipB", "prompt": "How long is it?", "chosen": "Short.", "rejected": "Long."},
    ]
    (root / "mm_reward_bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_a_video_folder_is_judged_as_its_frames_in_time_order(mmrlhf_dir):
    items = MMRLHF.load(mmrlhf_dir, "default")
    image, long_clip, short_clip = (i.request for i in items)
    assert image.task_type == "image_understanding" and image.question == "What colour is it?"
    names = sorted(f"frame_{i:04d}.png" for i in range(40))
    official = [names[i] for i in np.linspace(0, 39, 32, dtype=int)]  # eval_mm_reward_bench.py's choice
    assert long_clip.task_type == "image_understanding" and not long_clip.videos
    assert [Path(p).name for p in long_clip.images] == official and len(official) == 32
    assert long_clip.question == "The 32 images are frames of one video, in time order.\nWhat moves?"
    assert [Path(p).name for p in short_clip.images] == ["frame_0000.png", "frame_0001.png", "frame_0002.png"]
    assert items[1].meta == {"id": "vid", "image": "", "video": "video/clipA", "frames": 32}
    assert [i.group for i in items] == ["mcq", "video", "video"]  # categories still read the video path


def test_frames_reach_the_judge_as_images_and_the_run_scores_them(mmrlhf_dir, tmp_path):
    from deltarubric.rm.judge import Judge

    seen: list[list[int]] = []

    class Frames(Backend):
        name = "frames"

        async def agenerate(self, conversations, sampling):
            for conv in conversations:
                parts = [p for m in conv if m.role == "user" for p in m.content if isinstance(p, ImagePart)]
                seen.append([p.image.getpixel((0, 0))[0] for p in parts])
            return [Generation(text="Analysis: x\nJustification: y\nWinner: [[A]]") for _ in conversations]

    config = eval_config(MMRLHF, build_config(None, model="m", judge="direct", swap=True), official=False)
    scores = run_benchmark(
        MMRLHF, "default", config, mmrlhf_dir, tmp_path / "run", judge=Judge(config, backend=Frames())
    )
    frames = [s for s in seen if len(s) > 1]
    assert sorted(map(len, frames)) == [3, 3, 32, 32]  # both orders of both clips
    assert [0, 1, 2] in frames and list(np.linspace(0, 39, 32, dtype=int)) in frames  # the frames, in time order
    assert scores["error_rate"] == 0 and not math.isnan(scores["accuracy_video"])


def test_a_video_folder_without_frames_is_named_and_a_missing_one_stays_a_video(mmrlhf_dir):
    for f in (mmrlhf_dir / "video/clipB").iterdir():
        if f.suffix == ".png":
            f.unlink()
    with pytest.raises(ValueError, match=r"video/clipB is a video folder without frames"):
        MMRLHF.load(mmrlhf_dir, "default")
    for f in (mmrlhf_dir / "video/clipB").iterdir():
        f.unlink()
    (mmrlhf_dir / "video/clipB").rmdir()
    items = MMRLHF.load(mmrlhf_dir, "default")
    assert items[2].request.task_type == "video_understanding" and items[2].request.videos[0].endswith("video/clipB")


def test_frames_run_through_the_transformers_backend(tiny_config, tiny_backend, mmrlhf_dir, tmp_path):
    """The local backend takes frames as images, with or without a video decoder."""
    from deltarubric.rm.judge import Judge

    config = eval_config(MMRLHF, tiny_config.model_copy(update={"judge": "direct"}), official=False)
    items = MMRLHF.load(mmrlhf_dir, "default")[2:]  # the three-frame clip
    run_benchmark(
        MMRLHF, "default", config, mmrlhf_dir, tmp_path / "run", items=items, judge=Judge(config, backend=tiny_backend)
    )
    (pred,) = read_predictions(tmp_path / "run")
    assert pred.error is None and len(pred.samples) == 1
