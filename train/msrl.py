"""MSRL's staged transfer (docs/training.md, "MSRL staged transfer"): text -> captions -> images, with cross-modal
distillation.

    deltarubric train msrl --config recipes/msrl_qwen3vl_8b.yaml --out ckpt/msrl-8b       # every stage
    deltarubric train msrl --resume ckpt/msrl-8b --stages caption,cmkd                      # any subset, in order

| stage | data | trains | rewards |
|---|---|---|---|
| text_sft (1a) | text pairs with rationales | LLM (vision frozen) | - (target: the msrl format) |
| text_grpo (1b) | text pairs | LLM | accuracy 1.0, format 0.2 |
| caption (2a) | each image pair's caption view + replayed text pairs (new:old 5:1) | LLM | + task type 0.2 |
| cmkd (2b) | the caption model's chains that reach the gold label, on the real image | all | - |
| multimodal (3) | real image pairs | all | accuracy, format, task type |

Each stage is `train sft` or `train grpo` with the msrl judge (train/launch.py: the same parsing, model loading,
validation, resume and saving). Stage S of run OUT trains in OUT/S from the model of the nearest earlier stage that
is done (or the recipe's `model`), and ends by writing OUT/S/msrl_stage.json, its record: data files and hashes,
counts, the resolved config, what was trainable, steps. A stage with a record is done and is skipped on reruns; a
stage folder without one is an interrupted stage, which resumes from its newest complete checkpoint. OUT/final links
to the latest done stage's model.

The recipe (YAML): `model` (the base), `common` (settings for every stage that has them) and one section per stage
(`data` and any `train sft`/`train grpo` field). On the command line, `--KEY VALUE` sets KEY for every stage that has
it and `--STAGE.KEY VALUE` for one stage; both override the recipe.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import os
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from deltarubric.rm.pairs import LabelledPair, read_pairs, write_pairs
from deltarubric.train.config import JudgeArguments, MSRLGRPOConfig, MSRLSFTConfig
from deltarubric.train.grpo import JudgeGRPOTrainer

RECORD = "msrl_stage.json"
RECIPE = "msrl.yaml"


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str  # "sft" | "grpo"
    freeze_vision: bool
    task_reward: bool  # GRPO: reward <type> too


STAGES = (
    Stage("text_sft", "sft", freeze_vision=True, task_reward=False),
    Stage("text_grpo", "grpo", freeze_vision=True, task_reward=False),
    Stage("caption", "grpo", freeze_vision=True, task_reward=True),
    Stage("cmkd", "sft", freeze_vision=False, task_reward=False),
    Stage("multimodal", "grpo", freeze_vision=False, task_reward=True),
)
BY_NAME = {s.name: s for s in STAGES}
NAMES = tuple(BY_NAME)


# -- the command line and the recipe ---------------------------------------------------------------------------------
@dataclass
class Invocation:
    recipe: dict[str, Any]
    out: Path
    stages: list[str]
    flags: dict[str | None, list[str]]  # stage -> flags for it; None: flags for every stage that has the field
    write_recipe: bool


def _fields(kind: str) -> set[str]:
    config = MSRLSFTConfig if kind == "sft" else MSRLGRPOConfig
    return {f.name for f in dataclasses.fields(JudgeArguments)} | {f.name for f in dataclasses.fields(config)}


def load_recipe(path: str | Path) -> dict[str, Any]:
    """An MSRL recipe: `model`, `common` and one section per stage; anything else is refused, naming it."""
    recipe = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: an MSRL recipe is a YAML mapping")  # a ValueError: the CLI prints those as one line
    unknown = set(recipe) - {"model", "common", *NAMES}
    if unknown:
        raise ValueError(
            f"{path}: unknown keys {sorted(unknown)}; a recipe holds model, common and the stages {list(NAMES)}"
        )
    for name in ("common", *NAMES):
        section = recipe.get(name) or {}
        if not isinstance(section, dict):
            raise ValueError(f"{path}: '{name}' must be a mapping of settings")
        if {"model", "output_dir"} & set(section):
            raise ValueError(
                f"{path}: '{name}' sets model/output_dir; each stage starts from the previous stage's model "
                "and writes OUT/<stage> (set the base with the top-level `model`)"
            )
        recipe[name] = section
    return recipe


def _split_flags(argv: list[str]) -> list[tuple[str, str | None]]:
    """`--key value`, `--key=value` and a bare `--key` (TRL's booleans) as (key, value) pairs."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            raise ValueError(f"unexpected argument {token!r} (flags are --KEY VALUE or --STAGE.KEY VALUE)")
        if "=" in token:
            key, value = token[2:].split("=", 1)
            out.append((key, value))
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out.append((token[2:], argv[i + 1]))
            i += 2
        else:
            out.append((token[2:], None))
            i += 1
    return out


def parse_cli(argv: list[str]) -> Invocation:
    own: dict[str, str | None] = {}
    flags: dict[str | None, list[str]] = {}
    for key, value in _split_flags(argv):
        if key in ("config", "out", "output_dir", "resume", "stages", "model"):
            if value is None:
                raise ValueError(f"--{key} needs a value")
            own["out" if key == "output_dir" else key] = value
            continue
        stage, _, field = key.rpartition(".")
        if stage and stage not in BY_NAME:
            raise ValueError(f"--{key}: unknown stage {stage!r}; stages are {', '.join(NAMES)}")
        flags.setdefault(stage or None, []).extend([f"--{field}"] + ([value] if value is not None else []))
    if own.get("out") and own.get("resume"):
        raise ValueError("give --out DIR for a run (a rerun continues it) or --resume DIR, not both")
    out = own.get("out") or own.get("resume")
    if not out:
        raise ValueError("give --out DIR (a new or unfinished run) or --resume DIR (continue a run)")
    saved = Path(out) / RECIPE
    if own.get("resume") and not saved.is_file():
        raise ValueError(f"--resume {out}: no MSRL run there (no {RECIPE})")
    if own.get("config"):
        recipe = load_recipe(own["config"])
    elif saved.is_file():
        recipe = load_recipe(saved)
    else:
        raise ValueError("give --config RECIPE.yaml (recipes/msrl_*.yaml)")
    if own.get("model"):
        recipe["model"] = own["model"]
    elif not recipe.get("model") and saved.is_file():
        recipe["model"] = load_recipe(saved).get("model")  # the run's base, given with --model when it began
    # Local paths made absolute: OUT/msrl.yaml must still find them when the run is resumed from another folder.
    if recipe.get("model") and Path(recipe["model"]).exists():
        recipe["model"] = str(Path(recipe["model"]).resolve())
    for section in (recipe[n] for n in ("common", *NAMES)):
        for key in ("data", "eval_data", "replay_data"):
            if isinstance(section.get(key), str) and Path(section[key]).exists():
                section[key] = str(Path(section[key]).resolve())
    stages = [s.strip() for s in (own.get("stages") or ",".join(NAMES)).split(",") if s.strip()]
    if unknown := [s for s in stages if s not in BY_NAME]:
        raise ValueError(f"--stages: unknown {unknown}; stages are {', '.join(NAMES)}")
    stages = [s for s in NAMES if s in stages]  # always in pipeline order
    return Invocation(recipe, Path(out), stages, flags, write_recipe=bool(own.get("config") or own.get("model")))


def _route(settings: dict[str, Any] | list[str], stage: Stage, what: str) -> Any:
    """The part of shared settings (recipe `common` or flags for every stage) that `stage` has a field for.
    A setting that no kind of stage has is a typo: refused, naming it."""

    def known(key: str, kind: str) -> bool:
        return key.replace("-", "_") in _fields(kind)

    kinds = ("sft", "grpo")
    if isinstance(settings, dict):
        for key in settings:
            if not any(known(key, k) for k in kinds):
                raise ValueError(f"{what}: no stage has a setting {key!r} (see deltarubric train sft/grpo --help)")
        return {k: v for k, v in settings.items() if known(k, stage.kind)}
    routed, i = [], 0
    while i < len(settings):
        key = settings[i][2:]
        j = i + 1
        while j < len(settings) and not settings[j].startswith("--"):
            j += 1
        if not any(known(key, k) for k in kinds):
            raise ValueError(f"{what}: no stage has a setting --{key} (see deltarubric train sft/grpo --help)")
        if known(key, stage.kind):
            routed += settings[i:j]
        i = j
    return routed


def stage_args(inv: Invocation, stage: Stage, model: str, config_file: Path) -> tuple[Any, Any]:
    """(JudgeArguments, MSRL*Config) of `stage`: stage defaults <- recipe `common` <- its section <- flags."""
    from deltarubric.train.launch import parse_train_args

    settings = {
        "freeze_vision": stage.freeze_vision,
        **_route(inv.recipe.get("common") or {}, stage, "recipe 'common'"),
        **inv.recipe.get(stage.name, {}),
    }
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    argv = [
        "--config",
        str(config_file),
        *_route(inv.flags.get(None, []), stage, "flag"),
        *inv.flags.get(stage.name, []),
        "--model",
        model,
        "--output_dir",
        str(inv.out / stage.name),
    ]
    try:
        judge_args, config = parse_train_args(MSRLSFTConfig if stage.kind == "sft" else MSRLGRPOConfig, argv)
    except ValueError as e:
        raise ValueError(f"stage {stage.name}: {e}") from None
    if config.judge != "msrl":
        raise ValueError(f"stage {stage.name}: MSRL stages train the msrl judge, not {config.judge!r}")
    if stage.kind == "sft" and config.targets != "traces":
        raise ValueError(f"stage {stage.name}: targets must be 'traces' (the msrl format), not {config.targets!r}")
    return judge_args, config


# -- where each stage starts -------------------------------------------------------------------------------------------
def record_of(out: Path, name: str) -> dict[str, Any] | None:
    path = out / name / RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _stored(out: Path, model: str) -> str:
    """A model as a record stores it: relative to OUT when inside it (a run folder can move), else as given."""
    path = Path(model).resolve()
    return str(path.relative_to(out.resolve())) if path.is_relative_to(out.resolve()) else model


def model_of(out: Path, record: dict[str, Any]) -> str:
    """The model a done stage passes on (its own folder, or its start model when it trained nothing)."""
    return str(out / record["model"]) if (out / record["model"]).exists() else record["model"]


def start_model(out: Path, name: str, base: str | None, planned: list[str]) -> str:
    """The model stage `name` starts from: the nearest earlier stage that is done or planned before it, else the base.
    An earlier stage left unfinished and not planned now is an error: the run would silently skip it."""
    for prev in reversed(NAMES[: NAMES.index(name)]):
        if record := record_of(out, prev):
            return model_of(out, record)
        if prev in planned:
            return str(out / prev)
        if (out / prev).exists():
            raise ValueError(
                f"{out / prev} holds an unfinished {prev} stage: finish it (--stages {prev},...) or remove the folder"
            )
    if not base:
        raise ValueError(f"stage {name} starts from the base model: give `model:` in the recipe or --model")
    return base


def _link_final(out: Path) -> Path | None:
    """OUT/final -> the model of the latest done stage (in pipeline order)."""
    done = [r for r in (record_of(out, n) for n in NAMES) if r]
    if not done or not Path(model_of(out, done[-1])).is_dir():
        return None
    link = out / "final"
    if link.is_symlink() or link.exists():
        link.unlink()
    target = Path(model_of(out, done[-1])).resolve()
    link.symlink_to(os.path.relpath(target, out.resolve()) if target.is_relative_to(out.resolve()) else target)
    return link


# -- records -----------------------------------------------------------------------------------------------------------
def file_record(path: str | Path, pairs: int) -> dict[str, Any]:
    """A data file as a record names it: where, its SHA-256 (media files are not hashed), size, pairs."""
    path = Path(path).resolve()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "sha256": digest.hexdigest(), "bytes": path.stat().st_size, "pairs": pairs}


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _versions() -> dict[str, str]:
    return {p: metadata.version(p) for p in ("trl", "transformers", "torch", "accelerate")}


# -- the stages' data --------------------------------------------------------------------------------------------------
@dataclass
class StageData:
    pairs: list[LabelledPair]  # what the trainer sees
    task_types: dict[str, str]  # pair id -> the gold task type the task reward reads
    files: list[dict[str, Any]]  # file_record()s, each with a "role"
    counts: dict[str, Any]


def _pairs_of(path: str) -> tuple[list[LabelledPair], dict[str, Any]]:
    pairs = read_pairs(path)
    return pairs, file_record(path, len(pairs))


def caption_data(judge_args: Any, config: Any, stage_dir: Path, main: bool) -> StageData:
    """Caption views of the image pairs, plus replayed stage-1 text pairs at new:old = replay_ratio:1 (seeded)."""
    from deltarubric.train.views import views

    real, src = _pairs_of(judge_args.data)
    viewed, skipped = views(real, "caption")
    if not viewed:
        raise ValueError(
            f"stage caption: no pair of {judge_args.data} has a caption view ({dict(skipped)}); add captions "
            "with deltarubric data caption"
        )
    source_type = {p.request.id: p.request.task_type for p in real}
    task_types = {v.request.id: source_type[v.request.id] for v in viewed}
    files = [{**src, "role": "caption views of"}]
    rng = random.Random(config.seed)
    replayed: list[LabelledPair] = []
    if config.replay_data:
        old, rec = _pairs_of(config.replay_data)
        files.append({**rec, "role": "replayed from"})
        want = round(len(viewed) / config.replay_ratio)
        for p in rng.sample(old, min(want, len(old))):
            pid = f"replay/{p.request.id}"  # replayed ids may repeat the caption pairs' ids
            replayed.append(p.model_copy(update={"request": p.request.model_copy(update={"id": pid})}))
            task_types[pid] = p.request.task_type
    mixed = viewed + replayed
    rng.shuffle(mixed)
    train_file = stage_dir / "train.jsonl"
    written = {"path": str(train_file), "pairs": len(mixed)}
    if main:
        written = file_record(write_pairs(mixed, train_file), len(mixed))
    counts = {
        "source_pairs": len(real),
        "caption_views": len(viewed),
        "skipped": dict(skipped),
        "replayed": len(replayed),
        "replay_ratio": config.replay_ratio,
        "task_types": dict(Counter(task_types[p.request.id] for p in mixed)),
    }
    return StageData(mixed, task_types, files + [{**written, "role": "trained on (written here)"}], counts)


def cmkd_data(judge_args: Any, config: Any, stage_dir: Path, start: str) -> StageData:
    """Sample chains on the caption views (or reuse OUT/cmkd/chains.jsonl from an interrupted run), keep the ones
    that reach the gold label, and pair each kept chain with its real image pair."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from deltarubric.train.cmkd import Chain, chain_problem, distilled_pair, sample_chains, select_chains, sft_orders
    from deltarubric.train.render import shown
    from deltarubric.train.views import views

    state = PartialState()
    real, src = _pairs_of(judge_args.data)
    viewed, skipped = views(real, "caption")
    by_id = {p.request.id: p for p in real}
    task_types = {p.request.id: p.request.task_type for p in real}
    orders = sft_orders(real, config.order_seed)
    chains_file = stage_dir / "chains.jsonl"
    reused = chains_file.is_file()
    if reused:
        chains = [
            Chain(**{k: v for k, v in json.loads(x).items() if k in ("pair_id", "order", "text", "p_shown_a")})
            for x in chains_file.read_text(encoding="utf-8").splitlines()
        ]
    else:
        backend = sampling_backend(start, judge_args, config)
        mine = viewed[state.process_index :: state.num_processes]  # each process samples its share
        chains = sample_chains(
            backend,
            mine,
            orders,
            samples=config.cmkd_samples,
            temperature=config.cmkd_temperature,
            max_tokens=config.cmkd_max_tokens,
            seed=config.seed,
            swap=config.cmkd_swap,
        )
        del backend
        _free_memory()
        if state.num_processes > 1:
            chains = gather_object(chains)
    kept, dropped = select_chains(chains, by_id, orders, swap=config.cmkd_swap)
    if state.is_main_process and not reused:
        rows = [
            {
                **c.to_json(),
                "kept": kept.get(c.pair_id) is c,
                "problem": chain_problem(c.text, shown(by_id[c.pair_id].label, c.order)),
            }
            for c in chains
        ]
        tmp = chains_file.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        os.replace(tmp, chains_file)  # complete or absent: a rerun reuses it only whole
    state.wait_for_everyone()
    pairs = [distilled_pair(by_id[pid], chain, caption=config.cmkd_caption) for pid, chain in kept.items()]
    train_file = stage_dir / "train.jsonl"
    written = {"path": str(train_file), "pairs": len(pairs)}
    if state.is_main_process and pairs:
        written = file_record(write_pairs(pairs, train_file), len(pairs))
    problems = Counter(
        chain_problem(c.text, shown(by_id[c.pair_id].label, c.order)) or "usable"
        for c in chains
        if c.order == orders[c.pair_id]
    )
    counts = {
        "source_pairs": len(real),
        "caption_views": len(viewed),
        "skipped": dict(skipped),
        "chains": len(chains),
        "chains_reused": reused,
        "chains_in_sft_order": dict(problems),
        "kept_pairs": len(kept),
        "dropped_pairs": dict(dropped),
        "samples_per_pair": config.cmkd_samples,
        "swap": config.cmkd_swap,
    }
    files = [
        {**src, "role": "real pairs and caption views of"},
        {
            **(file_record(chains_file, len(viewed)) if chains_file.is_file() else {"path": str(chains_file)}),
            "role": "sampled chains (written here; pairs = caption views sampled)",
        },
    ]
    if pairs:
        files.append({**written, "role": "trained on (written here)"})
    return StageData(pairs, task_types, files, counts)


def sampling_backend(model: str, judge_args: Any, config: Any) -> Any:
    """The CMKD sampler: the start model in the production transformers backend, on this process's device."""
    from deltarubric.rm.backends.hf import TransformersBackend
    from deltarubric.train.launch import load_model

    args = dataclasses.replace(judge_args, model=model, freeze_vision=False)
    loaded, processor = load_model(args, config)
    return TransformersBackend.from_model(loaded.to(config.device), processor, batch_size=config.cmkd_batch_size)


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- training one stage ------------------------------------------------------------------------------------------------
def stage_rewards(stage: Stage, task_reward: str) -> tuple[list[Any], list[float]]:
    """The msrl parser's rewards and MSRL's weights: accuracy 1.0, format 0.2, and (stages 2a, 3) task type 0.2."""
    from deltarubric.train.rewards import task_type_authors, task_type_correct, verdict_correct, verdict_format

    funcs: list[Any] = [verdict_correct, verdict_format]
    if stage.task_reward:
        funcs.append(task_type_authors if task_reward == "authors" else task_type_correct)
    return funcs, [1.0, 0.2, 0.2][: len(funcs)]


class MSRLGRPOTrainer(JudgeGRPOTrainer):
    """`JudgeGRPOTrainer` plus the `task_type` column the task reward reads: a caption view's is the task of the pair
    it came from (the view itself is a `text` request)."""

    def __init__(self, *args: Any, task_types: dict[str, str], **kwargs: Any) -> None:
        self.task_types = task_types
        super().__init__(*args, **kwargs)

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        for row in inputs:
            row["task_type"] = self.task_types[row["pair_id"]]
        return super()._generate_and_score_completions(inputs)


def _grpo_trainer(
    model: Any, config: Any, data: StageData, processor: Any, judge_args: Any, stage: Stage
) -> MSRLGRPOTrainer:
    from deltarubric.train.launch import peft_config

    funcs, weights = stage_rewards(stage, config.task_reward)
    if config.reward_weights is None:
        config.reward_weights = weights
    return MSRLGRPOTrainer(
        model,
        config,
        data.pairs,
        processing_class=processor,
        max_pixels=judge_args.max_pixels,
        reward_funcs=funcs,
        peft_config=peft_config(judge_args),
        task_types=data.task_types,
    )


def run_stage(inv: Invocation, stage: Stage, start: str) -> dict[str, Any]:
    """Train one stage from `start` in OUT/<stage> (resuming an interrupted one) and write its record."""
    from accelerate import PartialState

    from deltarubric.train.launch import load_model, peft_config, resume_checkpoint, run
    from deltarubric.train.sft import make_sft_trainer, sft_examples

    t0 = time.time()
    stage_dir = inv.out / stage.name
    judge_args, config = stage_args(inv, stage, start, stage_dir / "config.yaml")
    main = PartialState().is_main_process
    if stage.name == "caption":
        data = caption_data(judge_args, config, stage_dir, main)
    elif stage.name == "cmkd":
        data = cmkd_data(judge_args, config, stage_dir, start)
    else:
        pairs, rec = _pairs_of(judge_args.data)
        data = StageData(
            pairs,
            {p.request.id: p.request.task_type for p in pairs},
            [{**rec, "role": "trained on"}],
            {"pairs": len(pairs), "task_types": dict(Counter(p.request.task_type for p in pairs))},
        )
    record: dict[str, Any] = {
        "stage": stage.name,
        "kind": stage.kind,
        "started_from": _stored(inv.out, start),
        "data": data.files,
        "counts": data.counts,
    }
    if stage.name == "cmkd" and len(data.pairs) < config.cmkd_min_kept:
        raise RuntimeError(
            f"stage cmkd kept a chain for {len(data.pairs)} of {data.counts['caption_views']} pairs, fewer "
            f"than cmkd_min_kept {config.cmkd_min_kept} (chains: {data.counts['chains_in_sft_order']}): "
            "train the caption stage longer, sample more (cmkd_samples), or set cmkd_min_kept 0 to pass "
            "its start model on"
        )
    if not data.pairs:  # an empty CMKD allowed by cmkd_min_kept 0
        record.update(model=_stored(inv.out, start), steps=0, note="no chain kept: the start model is passed on")
    else:
        val = read_pairs(judge_args.eval_data)[: judge_args.eval_limit] if judge_args.eval_data else None
        model, processor = load_model(judge_args, config)
        params = {
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total": sum(p.numel() for p in model.parameters()),
        }
        if stage.kind == "sft":
            rows = sft_examples(
                data.pairs, "msrl", "traces", order_seed=config.order_seed, max_pixels=judge_args.max_pixels
            )
            trainer = make_sft_trainer(
                model, config, rows, processing_class=processor, peft_config=peft_config(judge_args)
            )
            data.counts["examples"] = len(rows)
        else:
            trainer = _grpo_trainer(model, config, data, processor, judge_args, stage)
        resumed = resume_checkpoint(config)
        run(trainer, processor, config, judge_args, val, default_eval_steps=50 if stage.kind == "sft" else 5)
        record.update(
            model=stage.name,
            steps=trainer.state.global_step,
            resumed_from=resumed and _stored(inv.out, resumed),
            vision="frozen" if judge_args.freeze_vision else "trainable",
            parameters=params,
        )
        if stage.kind == "grpo":
            record["rewards"] = {
                n: round(w, 6) for n, w in zip(trainer.reward_func_names, trainer.reward_weights.tolist())
            }
        del trainer, model
        _free_memory()
    record.update(
        seconds=round(time.time() - t0, 1),
        versions=_versions(),
        config={"arguments": dataclasses.asdict(judge_args), "trainer": config.to_dict()},
    )
    if main:
        stage_dir.mkdir(parents=True, exist_ok=True)
        _write_json(stage_dir / RECORD, record)
    PartialState().wait_for_everyone()
    return record


def run_msrl(inv: Invocation) -> dict[str, Any]:
    """Every planned stage in order; done stages are skipped. Everything is checked before the first stage trains."""
    from accelerate import PartialState

    base = inv.recipe.get("model")
    with tempfile.TemporaryDirectory() as tmp:  # parse every stage now: a typo in stage 3 fails before stage 1 trains
        for name in inv.stages:
            stage_args(inv, BY_NAME[name], start_model(inv.out, name, base, inv.stages), Path(tmp) / f"{name}.yaml")
    if PartialState().is_main_process:
        inv.out.mkdir(parents=True, exist_ok=True)
        if inv.write_recipe or not (inv.out / RECIPE).exists():
            (inv.out / RECIPE).write_text(yaml.safe_dump(inv.recipe, sort_keys=False), encoding="utf-8")
    summary: dict[str, Any] = {}
    for name in inv.stages:
        if record := record_of(inv.out, name):
            print(
                json.dumps({"stage": name, "done": True, "skipped": True, "model": model_of(inv.out, record)}),
                flush=True,
            )
            summary[name] = {"steps": record["steps"], "model": model_of(inv.out, record), "skipped": True}
            continue
        start = start_model(inv.out, name, base, inv.stages)
        print(json.dumps({"stage": name, "start": start}), flush=True)
        record = run_stage(inv, BY_NAME[name], start)
        summary[name] = {"steps": record["steps"], "model": model_of(inv.out, record), "counts": record["counts"]}
        if PartialState().is_main_process:
            _link_final(inv.out)
    final = inv.out / "final"
    return {"output_dir": str(inv.out), "stages": summary, "final": str(final) if final.exists() else None}


def main(argv: list[str]) -> None:
    if any(a in ("--help", "-h") for a in argv):
        print(__doc__)
        return
    result = run_msrl(parse_cli(argv))
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(json.dumps(result))
