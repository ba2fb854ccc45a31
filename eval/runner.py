"""Resumable benchmark runs: judge every item, append one JSON line per item as soon as it is judged.

A run directory holds `run.json` (everything needed to reproduce it), `results.jsonl` (append-only, keyed by item),
and `summary.json` (the scores at the end). Rerunning the same command resumes: items already in `results.jsonl`
are skipped, and a line torn by a crash is dropped and judged again. A runner never computes a metric itself; it
calls the benchmark's scorer on what it wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from tqdm import tqdm

from eval.core import EvalItem, Prediction, json_scores
from eval.registry import Benchmark, Scores
from rm.config import JudgeConfig, verdict_identity
from rm.judge import Judge
from rm.types import Verdict

RUN_FILE, RESULTS_FILE, SUMMARY_FILE = "run.json", "results.jsonl", "summary.json"


def eval_config(benchmark: Benchmark, config: JudgeConfig, official: bool) -> JudgeConfig:
    """The judge configuration a run actually uses.

    `official`: the benchmark's preset prompt and parser, in its official order, one sample. Otherwise the given
    judge, shown in a seeded random order unless both orders are judged: several benchmarks list the preferred
    answer first, which rewards a position-biased judge.
    """
    if official:
        return config.model_copy(update={"judge": benchmark.official_judge, "order": benchmark.official_order, "swap": False})
    return config if config.swap else config.model_copy(update={"order": "random"})


def run_record(benchmark: Benchmark, task: str, config: JudgeConfig, judge: Judge, items: list[EvalItem], limit: int | None) -> dict[str, Any]:
    hashed = verdict_identity(config)
    hashed["prompt_sha256"] = judge.method.sha256
    data_sha = hashlib.sha256("\n".join(f"{i.key}\t{i.gold}" for i in items).encode()).hexdigest()
    versions = {}
    for pkg in ("deltarubric", "torch", "transformers", "vllm"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "benchmark": benchmark.name,
        "task": task,
        "data_revision": benchmark.data_revision,
        "items_sha256": data_sha,
        "limit": limit,
        # Raw text is in the official format, in the official order, only for the preset run as the protocol runs it
        # (one order, the benchmark's order); otherwise scorers read the un-swapped winners.
        "official_preset": config.judge == benchmark.official_judge and not config.swap and config.order == benchmark.official_order,
        "judge": config.model_dump(exclude={"api_key"}),
        "prompt": {"name": judge.method.name, "version": judge.method.version, "sha256": judge.method.sha256},
        "config_hash": hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:16],
        "versions": versions | {"python": platform.python_version()},
    }


def completed_keys(results: Path) -> set[str]:
    """Keys judged without an error (items that failed, e.g. while the backend was down, are judged again on resume).
    A torn last line (the process died mid-write) is cut off so appends stay valid JSONL."""
    if not results.exists():
        return set()
    keys, good_bytes = set(), 0
    with results.open("rb") as f:
        for line in f:
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("torn")
                row = json.loads(line)
                (keys.discard if row["verdict"].get("error") else keys.add)(row["key"])
            except (ValueError, KeyError, TypeError, AttributeError):
                break
            good_bytes += len(line)
    if good_bytes < results.stat().st_size:
        with results.open("r+b") as f:
            f.truncate(good_bytes)
    return keys


def run_benchmark(
    benchmark: Benchmark,
    task: str,
    config: JudgeConfig,
    data_dir: Path,
    out_dir: Path,
    *,
    limit: int | None = None,
    chunk_size: int = 16,
    judge: Judge | None = None,
) -> Scores:
    """Judge the benchmark's items into `out_dir` (resuming what is there) and return the scores."""
    items = benchmark.load(data_dir, task)[:limit]
    judge = judge or Judge(config)
    record = run_record(benchmark, task, config, judge, items, limit)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_file = out_dir / RUN_FILE
    if run_file.exists():
        previous = json.loads(run_file.read_text())
        if (previous["config_hash"], previous["items_sha256"]) != (record["config_hash"], record["items_sha256"]):
            raise ValueError(
                f"{out_dir} holds a run with another judge configuration or item set; resume it with the same "
                f"command, or pass a new --out"
            )
    else:
        run_file.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")

    results = out_dir / RESULTS_FILE
    done = completed_keys(results)
    todo = [i for i in items if i.key not in done]
    label = f"{benchmark.name}/{task}" if len(benchmark.tasks) > 1 else benchmark.name
    with results.open("a") as f, tqdm(total=len(items), initial=len(items) - len(todo), unit="pair", desc=label) as bar:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start : start + chunk_size]
            for item, verdict in zip(chunk, judge.judge_batch([i.request for i in chunk])):
                f.write(json.dumps(result_row(item, verdict)) + "\n")
            f.flush()
            os.fsync(f.fileno())  # a crash after this point loses nothing already judged
            bar.update(len(chunk))
    scores = benchmark.score(read_predictions(out_dir), task)
    summary = {"benchmark": benchmark.name, "task": task, "n": len(items), "scores": json_scores(scores)}
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return scores


def result_row(item: EvalItem, verdict: Verdict) -> dict[str, Any]:
    return {"key": item.key, "gold": item.gold, "group": item.group, "meta": item.meta, "verdict": verdict.model_dump()}


def read_predictions(out_dir: Path) -> list[Prediction]:
    """A run directory's results as predictions, in first-written order; a later line for a key (a failed item judged
    again on resume) replaces the earlier one."""
    official = json.loads((out_dir / RUN_FILE).read_text())["official_preset"]
    preds: dict[str, Prediction] = {}
    for line in (out_dir / RESULTS_FILE).read_text().splitlines():
        row = json.loads(line)
        item = EvalItem.model_construct(key=row["key"], gold=row["gold"], group=row["group"], meta=row["meta"])
        preds[row["key"]] = Prediction.from_verdict(item, Verdict.model_validate(row["verdict"]), official_format=official)
    return list(preds.values())
