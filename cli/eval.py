"""`deltarubric eval run|score|report|list|prepare`: thin wrappers over eval.runner, the scorers, eval.report and the
benchmarks' prepare steps."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from deltarubric.cli.errors import fail
from deltarubric.cli.options import JUDGE, model_options
from deltarubric.cli.progress import status
from deltarubric.eval.core import json_scores
from deltarubric.rm.config import JudgeConfig

# A run shows the pair in a seeded random order unless told otherwise (eval.runner.eval_config): the released order of
# several benchmarks puts the preferred answer first.
EVAL_JUDGE = replace(JUDGE, default_text={"presentation": "random (without --swap or --official)"})
app = typer.Typer(
    help="Benchmark harnesses: run a judge on a benchmark, score predictions, report runs.", no_args_is_help=True
)


def print_scores(scores: dict[str, float], headline: tuple[str, ...], as_json: bool) -> None:
    if as_json:
        print(json.dumps(json_scores(scores), indent=2))
        return
    from deltarubric.eval.report import fmt

    keys = [k for k in headline if k in scores] + [k for k in scores if k not in headline and k != "n"]
    width = max(len(k) for k in keys)
    for k in keys:
        print(f"{k:<{width}}  {fmt(scores[k])}")
    if "n" in scores:
        print(f"{'items':<{width}}  {int(scores['n'])}")


@app.command("list")
def list_cmd() -> None:
    """List the benchmarks and their tasks."""
    from deltarubric.eval.registry import benchmark_names, get_benchmark

    for name in benchmark_names():
        b = get_benchmark(name)
        print(f"{name:<24} tasks: {', '.join(b.tasks):<52} {b.description}")


@app.command(no_args_is_help=True)
@model_options(config=EVAL_JUDGE)
def run(
    config: JudgeConfig,
    benchmark: Annotated[
        str,
        typer.Argument(
            help="vl-rewardbench | genai-bench | multimodal-rewardbench | mm-rlhf-rewardbench | "
            "pairs (your own data, with --data)"
        ),
    ],
    out: Annotated[Path, typer.Option(help="Run directory; rerunning the same command resumes it.")],
    data_dir: Annotated[
        Optional[Path],
        typer.Option(
            help="Local benchmark folder (metadata and media); see docs/eval.md.",
            show_default="the pinned hub revision, downloaded",
        ),
    ] = None,
    data: Annotated[
        Optional[Path],
        typer.Option(
            "--data",
            help="Your labelled-pair JSONL file, for the benchmark 'pairs' (format: docs/eval.md).",
            show_default="none",
        ),
    ] = None,
    task: Annotated[
        Optional[str],
        typer.Option(
            help="Sub-task (GenAI-Bench).", show_default="every task whose data is present, each in OUT/<task>"
        ),
    ] = None,
    official: Annotated[
        bool,
        typer.Option(
            "--official",
            help="Use the benchmark's official prompt, parser, order and sampling (VL-RewardBench: temperature 0.2, "
            "top_p 0.2, 2048 tokens, unless you set them).",
            show_default="off",
        ),
    ] = False,
    samples: Annotated[
        int,
        typer.Option(
            min=1,
            help="Judgments per item, each with its own seed (seed + s) and drawn order; the official metric votes "
            "over them (VL-RewardBench's cal.py protocol).",
        ),
    ] = 1,
    limit: Annotated[
        Optional[int],
        typer.Option(
            help="Only the first N items (smoke runs); a larger N later extends the same run.", show_default="all"
        ),
    ] = None,
    chunk_size: Annotated[int, typer.Option(help="Items judged per batch, and written after each batch.")] = 16,
    max_error_rate: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Fail (exit 1) when more than this share of the items ends with an error (media not loaded, "
            "backend down).",
        ),
    ] = 0.05,
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON.", show_default="off")] = False,
) -> None:
    """Judge every item of a benchmark, writing each result as it comes, then print the scores."""
    from deltarubric.eval.benchmarks import pairs
    from deltarubric.eval.registry import get_benchmark
    from deltarubric.eval.runner import RunFailed, eval_config, present_tasks, run_benchmark
    from deltarubric.rm.judge import Judge

    bench = get_benchmark(benchmark)
    if task is not None and task not in bench.tasks:
        raise ValueError(f"{benchmark} has no task {task!r}; its tasks: {', '.join(bench.tasks)}")
    if official and not bench.official_judge:
        raise ValueError(f"{benchmark} has no official preset (no official prompt or parser to copy): drop --official")
    if limit is not None and limit < 1:
        raise ValueError("--limit must be at least 1")
    if samples > 1 and not bench.votes_over_samples:
        raise ValueError(
            f"--samples {samples}: {benchmark}'s metric does not vote over sampled judgments (only "
            "vl-rewardbench's does, as cal.py): drop --samples"
        )
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
        from deltarubric.eval.prepare import hub_data

        data_dir = hub_data(bench)  # says at once when the hub is off or unreachable
    config = eval_config(bench, config, official)
    if samples > 1 and config.sampling.temperature == 0:
        print(
            f"warning: --samples {samples} at temperature 0: greedy samples differ only in the order drawn; "
            "pass --temperature (the official protocol samples at 0.2)",
            file=sys.stderr,
        )
    several = task is None and len(bench.tasks) > 1  # one sub-folder per task, whichever tasks are present
    if several:
        loaded, skipped = present_tasks(bench, data_dir)
        for line in skipped:
            print(f"{bench.name}: skipping {line}", file=sys.stderr)
    else:
        t = task or bench.tasks[0]
        loaded = {t: bench.load(data_dir, t)}  # data problems show before any model is loaded
    with status(f"loading {config.model} ({config.compute.backend})", say_when_piped=True):
        judge = Judge(config)  # one engine for every task
    all_scores, failures = {}, []
    for t, items in loaded.items():
        target = out / t if several else out
        try:
            all_scores[t] = run_benchmark(
                bench,
                t,
                config,
                data_dir,
                target,
                limit=limit,
                chunk_size=chunk_size,
                judge=judge,
                items=items,
                max_error_rate=max_error_rate,
                samples=samples,
            )
        except RunFailed as e:
            if e.scores is None:  # stopped early: every first item failed alike, the rest would too
                raise fail(str(e)) from None
            all_scores[t], failures = e.scores, failures + [str(e)]
    if as_json and several:
        print(json.dumps({t: json_scores(s) for t, s in all_scores.items()}, indent=2))
    else:
        for t, scores in all_scores.items():
            if several:
                print(f"== {t}")
            print_scores(scores, bench.headline, as_json)
    if failures:
        raise fail("\n".join(failures))


@app.command(no_args_is_help=True)
def prepare(
    benchmark: Annotated[str, typer.Argument(help="A benchmark whose release needs converting (genai-bench).")],
    src: Annotated[
        Path,
        typer.Option(
            help="The downloaded release (e.g. hf download TIGER-Lab/GenAI-Bench --repo-type dataset --local-dir SRC)."
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="The folder to write the local layout into: pass it to `eval run --data-dir`.")
    ],
    split: Annotated[
        str | None,
        typer.Option(help="Which split to export.", show_default="the benchmark's own (genai-bench: test_v1)"),
    ] = None,
) -> None:
    """Turn a benchmark's downloaded release into the layout `eval run --data-dir` reads."""
    from deltarubric.eval.registry import benchmark_names, get_benchmark

    bench = get_benchmark(benchmark)
    if bench.prepare is None:
        needing = [n for n in benchmark_names() if get_benchmark(n).prepare is not None]
        raise ValueError(
            f"{benchmark} has no prepare step (docs/eval.md, 'Where the data comes from', says how to get "
            f"its data); benchmarks with one: {', '.join(needing)}"
        )
    split = split or bench.default_split
    written = bench.prepare(src, out, split)
    for t in bench.tasks:
        print(
            f"{t:<20} {written[t]} rows -> {out / t}.jsonl"
            if t in written
            else f"{t:<20} skipped: no split {split!r} under {src}"
        )
    print(f"next: deltarubric eval run {bench.name} --data-dir {out} ...")


@app.command(no_args_is_help=True)
def score(
    benchmark: Annotated[str, typer.Argument(help="Benchmark name (see `deltarubric eval list`).")],
    predictions: Annotated[
        Path, typer.Option(help="A run directory, or a prediction file in the benchmark's official format.")
    ],
    task: Annotated[
        Optional[str],
        typer.Option(help="Sub-task the predictions belong to (GenAI-Bench).", show_default="the run's own"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON.", show_default="off")] = False,
    export: Annotated[
        Optional[Path],
        typer.Option(
            help="Also write the predictions in the benchmark's official schema (multimodal-rewardbench).",
            show_default="none",
        ),
    ] = None,
) -> None:
    """Compute the official and strict metrics from predictions, without running a model."""
    from deltarubric.eval.registry import get_benchmark
    from deltarubric.eval.runner import RUN_FILE, length_limited, length_note, read_predictions

    bench = get_benchmark(benchmark)
    if task is not None and task not in bench.tasks:
        raise ValueError(f"{benchmark} has no task {task!r}; its tasks: {', '.join(bench.tasks)}")
    if predictions.is_dir():
        record = json.loads((predictions / RUN_FILE).read_text())
        if record["benchmark"] != bench.name:
            raise ValueError(
                f"{predictions} is a run of {record['benchmark']}, not {bench.name}: score it with "
                f"`deltarubric eval score {record['benchmark']}`"
            )
        if task is not None and task != record["task"]:
            raise ValueError(
                f"{predictions} is a run of the task {record['task']!r}, not {task!r}: drop --task or "
                f"pass --task {record['task']}"
            )
        preds = read_predictions(predictions)
        task = record["task"]
        max_tokens = ((record.get("judge") or {}).get("sampling") or {}).get("max_tokens")
        if note := length_note(str(predictions), length_limited(predictions), max_tokens):
            print(note, file=sys.stderr)
    elif bench.read_official is None:
        raise ValueError(f"{benchmark} publishes no per-sample prediction format to read; pass a run directory")
    else:
        told = file_task(bench, predictions) if task is not None else None
        if told is not None and task not in told[0]:
            raise ValueError(
                f"{predictions} holds {bench.name} predictions of {' or '.join(told[0])} ({told[1]}), "
                f"not of {task!r}: pass --task {told[0][0]}"
            )
        preds = bench.read_official(predictions)
    if task is None and len(bench.tasks) > 1:
        raise ValueError(f"{benchmark} has several tasks; pass --task ({', '.join(bench.tasks)})")
    if export is not None:
        if bench.write_official is None:
            raise ValueError(f"{benchmark} has no official prediction schema to export to")
        bench.write_official(preds, export)
    print_scores(bench.score(preds, task or bench.tasks[0]), bench.headline, as_json)


def file_task(bench, path: Path) -> tuple[tuple[str, ...], str] | None:
    """The tasks a published prediction file can belong to, with the evidence, when it can be told: a folder of its
    path named after a task (results/<task>/<model>/pairwise.jsonl), or GenAI-Bench rows carrying the editing
    fields (editing) or a prompt without them (generation: image or video, not told apart)."""
    named = [part for part in path.resolve().parts if part in bench.tasks]
    if named:
        return (named[-1],), f"its path names {named[-1]}"
    if bench.name != "genai-bench":
        return None
    from deltarubric.eval.io import read_records

    rows = [r for r in read_records(path)[:50] if isinstance(r, dict)]
    if rows and all("instruct_prompt" in r for r in rows):
        return ("image_edition",), "its rows carry instruct_prompt"
    if rows and all("prompt" in r and "instruct_prompt" not in r for r in rows):
        return ("image_generation", "video_generation"), "its rows carry a prompt, not an editing instruction"
    return None


@app.command(no_args_is_help=True)
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run directories of one benchmark, shown side by side.")],
    out: Annotated[
        Optional[Path],
        typer.Option(help="Where to write report.md and the PNGs.", show_default="<parent of the first run>/report"),
    ] = None,
) -> None:
    """Render a Markdown table and PNG plots for one or several runs."""
    from deltarubric.eval.report import write_report

    path = write_report(runs, out or runs[0].parent / "report")
    print(path.read_text())
    print(f"written: {path} and its PNGs in {path.parent}")
