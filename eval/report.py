"""Reports for one or several run directories: a Markdown table side by side, and PNG plots.

Scores are recomputed from each run's results.jsonl with its benchmark's scorer, so a report never disagrees with
the data it shows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from deltarubric.eval.registry import Scores, get_benchmark  # noqa: E402
from deltarubric.eval.runner import RUN_FILE, read_predictions  # noqa: E402

JUDGE_STATS = ("parse_failure_rate", "error_rate", "swap_consistency", "first_position_rate")


def fmt(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


def load_run(run_dir: Path) -> tuple[dict, Scores, list[str]]:
    """(run.json, scores, the groups present) for one run directory."""
    record = json.loads((run_dir / RUN_FILE).read_text())
    preds = read_predictions(run_dir)
    scores = get_benchmark(record["benchmark"]).score(preds, record["task"])
    return record, scores, sorted({p.group for p in preds})


def write_report(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write report.md and PNGs into out_dir; return the Markdown path."""
    records = [json.loads((d / RUN_FILE).read_text()) for d in run_dirs]
    benchmarks = sorted({r["benchmark"] for r in records})
    if len(benchmarks) > 1:
        which = ", ".join(f"{d} is {r['benchmark']}" for d, r in zip(run_dirs, records))
        raise ValueError(
            f"a report compares runs of one benchmark; these are of {len(benchmarks)} ({which}): "
            "report each benchmark's runs separately"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [(d.name, *load_run(d)) for d in run_dirs]
    names = [n for n, *_ in runs]
    benchmark = get_benchmark(runs[0][1]["benchmark"])
    metric_names = list(dict.fromkeys(k for _, _, scores, _ in runs for k in scores if k != "n"))
    ordered = [m for m in benchmark.headline if m in metric_names] + [
        m for m in metric_names if m not in benchmark.headline
    ]

    lines = [f"# {benchmark.name} report", ""]
    lines += ["| run | task | judge | model | order | items | data |", "|---|---|---|---|---|---|---|"]
    for name, record, scores, _ in runs:
        j = record["judge"]
        order = "both (swap)" if j["swap"] else j.get("presentation", j.get("order"))
        if record.get("samples", 1) > 1:  # --samples k: k judgments per item, each with its own seed and order
            order += f", {record['samples']} samples (T={j['sampling']['temperature']:g})"
        cells = [name, record["task"], j["judge"], j["model"], order, int(scores["n"]), record["data_revision"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "| metric (%) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for m in ordered:
        lines.append(f"| {m} | " + " | ".join(fmt(scores.get(m, float("nan"))) for _, _, scores, _ in runs) + " |")

    plots = {
        "groups.png": _group_plot(runs, out_dir / "groups.png"),
        "judge_behaviour.png": _bars(runs, JUDGE_STATS, "judge behaviour (%)", out_dir / "judge_behaviour.png"),
    }
    lines += [""] + [f"![{name}]({name})" for name, made in plots.items() if made]
    lines += [
        "",
        (
            "Strict metrics count an unparsable verdict and an item that ended with an error as wrong; official "
            "ones follow the benchmark's own rule. parse_failure_rate: answers that could not be read; error_rate: "
            "items with no answer (media not loaded, backend errors)."
        ),
        "first_position_rate: decisive verdicts for the candidate shown first (50 = no position bias).",
    ]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _group_plot(runs: list, path: Path) -> bool:
    """Per-group accuracy bars: the metrics named '<something>_<group>' for the groups present."""
    groups = sorted({g for *_, gs in runs for g in gs})
    keys = [k for k in runs[0][2] if any(k.endswith("_" + g) for g in groups)]
    # One accuracy family per plot: the strict one where there is one, else the first found.
    prefix = (
        "strict_" if any(k.startswith("strict_") for k in keys) else (keys[0].rsplit("_", 1)[0] + "_" if keys else "")
    )
    chosen = [k for k in keys if k.startswith(prefix) and k[len(prefix) :] in groups]
    return _bars(runs, chosen, f"{prefix.rstrip('_') or 'accuracy'} accuracy per group (%)", path) if chosen else False


def _bars(runs: list, metrics, title: str, path: Path) -> bool:
    metrics = list(metrics)
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(metrics) * len(runs) / 2 + 2), 3.6))
    width = 0.8 / len(runs)
    for r, (name, _, scores, _) in enumerate(runs):
        values = [0.0 if math.isnan(scores.get(m, float("nan"))) else scores[m] for m in metrics]
        bars = ax.bar([i + r * width for i in range(len(metrics))], values, width, label=name)
        ax.bar_label(bars, labels=[fmt(scores.get(m, float("nan"))) for m in metrics], fontsize=7)
    ax.set_xticks([i + width * (len(runs) - 1) / 2 for i in range(len(metrics))], metrics, fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
