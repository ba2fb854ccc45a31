"""`deltarubric eval run|score|report|list`: thin wrappers over eval.runner, the scorers and eval.report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from eval.core import json_scores
from rm.cli_options import judge_options
from rm.config import JudgeConfig

app = typer.Typer(help="Benchmark harnesses: run a judge on a benchmark, score predictions, report runs.", no_args_is_help=True)


def print_scores(scores: dict[str, float], headline: tuple[str, ...], as_json: bool) -> None:
    if as_json:
        print(json.dumps(json_scores(scores), indent=2))
        return
    from eval.report import fmt

    keys = [k for k in headline if k in scores] + [k for k in scores if k not in headline and k != "n"]
    width = max(len(k) for k in keys)
    for k in keys:
        print(f"{k:<{width}}  {fmt(scores[k])}")
    if "n" in scores:
        print(f"{'items':<{width}}  {int(scores['n'])}")


@app.command("list")
def list_cmd() -> None:
    """List the benchmarks and their tasks."""
    from eval.registry import benchmark_names, get_benchmark

    for name in benchmark_names():
        b = get_benchmark(name)
        print(f"{name:<24} tasks: {', '.join(b.tasks):<52} {b.description}")


@app.command(no_args_is_help=True)
@judge_options
def run(
    config: JudgeConfig,
    benchmark: Annotated[str, typer.Argument(help="vl-rewardbench | genai-bench | multimodal-rewardbench | mm-rlhf-rewardbench | pairs (your own data, with --data)")],
    out: Annotated[Path, typer.Option(help="Run directory; rerunning the same command resumes it.")],
    data_dir: Annotated[Optional[Path], typer.Option(help="Local benchmark folder (metadata and media); default: download the pinned hub revision. See docs/eval.md.")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Your labelled-pair JSONL file, for the benchmark 'pairs' (format: docs/eval.md).")] = None,
    task: Annotated[Optional[str], typer.Option(help="Sub-task (GenAI-Bench); default: all, each in OUT/<task>.")] = None,
    official: Annotated[bool, typer.Option("--official", help="Use the benchmark's official prompt, parser and order.")] = False,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N items (smoke runs).")] = None,
    chunk_size: Annotated[int, typer.Option(help="Items judged per batch, and written after each batch.")] = 16,
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON.")] = False,
) -> None:
    """Judge every item of a benchmark, writing each result as it comes, then print the scores."""
    from eval.benchmarks import pairs
    from eval.registry import get_benchmark
    from eval.runner import eval_config, run_benchmark
    from rm.judge import Judge

    bench = get_benchmark(benchmark)
    if task is not None and task not in bench.tasks:
        raise ValueError(f"{benchmark} has no task {task!r}; its tasks: {', '.join(bench.tasks)}")
    if official and not bench.official_judge:
        raise ValueError(f"{benchmark} has no official preset (no official prompt or parser to copy): drop --official")
    if bench.name == pairs.NAME:
        if data_dir is not None:
            raise ValueError("pairs reads one labelled-pair file: pass --data FILE.jsonl instead of --data-dir")
        if data is None:
            raise ValueError("pairs needs --data FILE.jsonl, your labelled-pair file (format: docs/eval.md)")
        bench = pairs.for_file(data)  # every line checked now, before any model is loaded
        data_dir = data
    elif data is not None:
        raise ValueError(f"--data names your own pair file (benchmark 'pairs'); {benchmark} reads --data-dir DIR")
    elif data_dir is None:
        if bench.hub is None:
            raise ValueError(f"{benchmark} is not on the hub in a usable form: pass --data-dir (see docs/eval.md)")
        from eval.io import snapshot

        data_dir = snapshot(bench.hub.repo, bench.hub.revision, bench.hub.patterns)
    config = eval_config(bench, config, official)
    tasks = [task] if task else list(bench.tasks)
    judge = Judge(config)  # one engine for every task
    all_scores = {}
    for t in tasks:
        target = out / t if len(tasks) > 1 else out
        all_scores[t] = run_benchmark(bench, t, config, data_dir, target, limit=limit, chunk_size=chunk_size, judge=judge)
    if as_json and len(tasks) > 1:
        print(json.dumps({t: json_scores(s) for t, s in all_scores.items()}, indent=2))
        return
    for t, scores in all_scores.items():
        if len(tasks) > 1:
            print(f"== {t}")
        print_scores(scores, bench.headline, as_json)


@app.command(no_args_is_help=True)
def score(
    benchmark: Annotated[str, typer.Argument(help="Benchmark name (see `deltarubric eval list`).")],
    predictions: Annotated[Path, typer.Option(help="A run directory, or a prediction file in the benchmark's official format.")],
    task: Annotated[Optional[str], typer.Option(help="Sub-task the predictions belong to (GenAI-Bench).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON.")] = False,
    export: Annotated[Optional[Path], typer.Option(help="Also write the predictions in the benchmark's official schema (multimodal-rewardbench).")] = None,
) -> None:
    """Compute the official and strict metrics from predictions, without running a model."""
    from eval.registry import get_benchmark
    from eval.runner import RUN_FILE, read_predictions

    bench = get_benchmark(benchmark)
    if predictions.is_dir():
        preds = read_predictions(predictions)
        task = task or json.loads((predictions / RUN_FILE).read_text())["task"]
    elif bench.read_official is None:
        raise ValueError(f"{benchmark} publishes no per-sample prediction format to read; pass a run directory")
    else:
        preds = bench.read_official(predictions)
    if task is None and len(bench.tasks) > 1:
        raise ValueError(f"{benchmark} has several tasks; pass --task ({', '.join(bench.tasks)})")
    if export is not None:
        if bench.write_official is None:
            raise ValueError(f"{benchmark} has no official prediction schema to export to")
        bench.write_official(preds, export)
    print_scores(bench.score(preds, task or bench.tasks[0]), bench.headline, as_json)


@app.command(no_args_is_help=True)
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run directories of one benchmark, shown side by side.")],
    out: Annotated[Optional[Path], typer.Option(help="Where to write report.md and the PNGs; default: <parent of the first run>/report.")] = None,
) -> None:
    """Render a Markdown table and PNG plots for one or several runs."""
    from eval.report import write_report

    path = write_report(runs, out or runs[0].parent / "report")
    print(path.read_text())
    print(f"written: {path} and its PNGs in {path.parent}")
