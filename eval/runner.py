"""Resumable benchmark runs: judge every item, append one JSON line per item as soon as it is judged.

A run directory holds `run.json` (everything needed to reproduce it), `results.jsonl` (append-only, keyed by item),
and `summary.json` (the scores at the end); the two JSON files are replaced atomically, never left half-written.
Rerunning the same command resumes: items already in `results.jsonl` are skipped, and a line torn by a crash is
dropped and judged again; a larger `--limit` extends the run. A run whose items fail (media not found, a backend
down) stops early or ends with an error instead of printing a table of zeros. A runner never computes a metric
itself; it calls the benchmark's scorer on what it wrote.

`samples` > 1 (VL-RewardBench's protocol, `--samples k`) judges every item k times, each sample with its own seed
(seed + s), so its own drawn order and its own sampling; one row holds the item's k verdicts. Every run counts the
judged orders whose generation stopped at the token limit (finish_reason 'length') and says so at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import secrets
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from tqdm import tqdm

from deltarubric.eval.core import EvalItem, Prediction, error_counts, json_scores
from deltarubric.eval.registry import Benchmark, Scores, benchmark_names, get_benchmark
from deltarubric.rm.backends.base import Backend, Conversation, Generation
from deltarubric.rm.config import COMPUTE, ComputeConfig, JudgeConfig, SamplingConfig, verdict_identity
from deltarubric.rm.judge import Judge
from deltarubric.rm.types import Verdict

RUN_FILE, RESULTS_FILE, SUMMARY_FILE = "run.json", "results.jsonl", "summary.json"
MAX_ERROR_RATE = 0.05  # the share of items that may end with an error before a run counts as failed
FAIL_FAST_ITEMS = 8  # judged items after which a run where every one failed the same way stops


class RunFailed(ValueError):
    """The run is broken: its items failed (the message says how and what to do). `scores` is set when the run
    finished and was scored anyway (too many errors), None when it stopped early (every first item failed alike)."""

    def __init__(self, message: str, scores: Scores | None = None) -> None:
        super().__init__(message)
        self.scores = scores


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file in the same folder, fsync it, then rename it over `path`: a crash leaves the old
    file or the new one, never an empty or half-written one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("x") as f:
            f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def present_tasks(bench: Benchmark, data_dir: Path) -> tuple[dict[str, list[EvalItem]], list[str]]:
    """Every task's items, for the tasks whose data is in data_dir; and a line for each task left out."""
    loaded, skipped = {}, []
    for t in bench.tasks:
        try:
            loaded[t] = bench.load(data_dir, t)
        except FileNotFoundError as e:
            skipped.append(f"{t} ({e.filename or e} not found)")
    if not loaded:
        raise ValueError(
            f"{bench.name}: no task's data under --data-dir {data_dir}: {'; '.join(skipped)} (layout: docs/eval.md)"
        )
    return loaded, skipped


def eval_config(benchmark: Benchmark, config: JudgeConfig, official: bool) -> JudgeConfig:
    """The judge configuration a run actually uses.

    `official`: the benchmark's preset prompt and parser, in its official order, one order per sample, with the
    official inference's sampling (`benchmark.official_sampling`) for every value the user did not set (a flag or
    --config). Otherwise the given judge, shown in a seeded random order unless both orders are judged or the user
    set a presentation (a flag or --config): several benchmarks list the preferred answer first, which rewards a
    position-biased judge.
    """
    if official:
        given = config.sampling.model_fields_set  # values set by a flag or the --config file
        defaults = {k: v for k, v in benchmark.official_sampling.items() if k not in given}
        sampling = config.sampling.model_copy(update=defaults) if defaults else config.sampling
        return config.model_copy(
            update={
                "judge": benchmark.official_judge,
                "presentation": benchmark.official_order,
                "swap": False,
                "sampling": sampling,
            }
        )
    if config.swap or "presentation" in config.model_fields_set:
        return config
    return config.model_copy(update={"presentation": "random"})


def official_format(benchmark: Benchmark, judge: str, swap: bool, presentation: str) -> bool:
    """Whether a run's raw text is read with the benchmark's official rule: the official preset, in the official
    order with one order per item; or, where the official parser reads each sample with the order it was shown in
    (VL-RewardBench, whose cal.py draws the order per sample), the preset under any order, --swap or k samples."""
    if not benchmark.official_judge or judge != benchmark.official_judge:
        return False
    return benchmark.official_any_order or (not swap and presentation == benchmark.official_order)


def sample_config(config: JudgeConfig, s: int) -> JudgeConfig:
    """Sample s of k: the run's configuration with seed + s, so each sample draws its own order and its own tokens
    (sample 0 is the run's own seed: a k-sample run begins with the one-sample run)."""
    if s == 0:
        return config
    return config.model_copy(update={"sampling": config.sampling.model_copy(update={"seed": config.sampling.seed + s})})


class LengthWatch(Backend):
    """The judge's backend, remembering which generations stopped at the token limit (finish_reason 'length'); a
    verdict's `usage` entries are those generations' own Usage objects, so `cut(verdict)` names its cut stages."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self._cut: dict[int, object] = {}  # id -> the Usage object, kept alive so ids stay unique

    @property
    def supports_video(self) -> bool:  # type: ignore[override]
        return self.inner.supports_video

    async def agenerate(self, conversations: list[Conversation], sampling: SamplingConfig) -> list[Generation]:  # type: ignore[override]
        gens = await self.inner.agenerate(conversations, sampling)
        self._cut |= {id(g.usage): g.usage for g in gens if g.finish_reason == "length" and not g.error}
        return gens

    def cut(self, verdict: Verdict) -> list[str]:
        """The '<order>/<stage>' entries of `verdict` whose generation stopped at the token limit."""
        return [k for k, u in verdict.usage.items() if self._cut.get(id(u)) is u]

    def clear(self) -> None:
        self._cut.clear()


def items_sha256(items: list[EvalItem]) -> str:
    """The identity of an item list: keys and gold labels, in order."""
    return hashlib.sha256("\n".join(f"{i.key}\t{i.gold}" for i in items).encode()).hexdigest()


def run_record(
    benchmark: Benchmark,
    task: str,
    config: JudgeConfig,
    judge: Judge,
    items: list[EvalItem],
    limit: int | None,
    all_items: list[EvalItem] | None = None,
    samples: int = 1,
) -> dict[str, Any]:
    """What run.json holds. `items` are the ones this run judges (the first `limit` of `all_items`); the data
    identity (`data_sha256`) is that of all the task's items, so a larger `--limit` is the same run, extended.
    `samples` (k judgments per item) is part of the identity when above 1 (runs recorded before it had one)."""
    hashed = verdict_identity(config)
    hashed["prompt_sha256"] = judge.method.sha256
    if samples != 1:
        hashed["samples"] = samples
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
        "data_sha256": items_sha256(items if all_items is None else all_items),
        "items_sha256": items_sha256(items),
        "n_items": len(items),
        "limit": limit,
        # Raw text is read with the official rule only for the preset run as the protocol runs it (`official_format`);
        # otherwise scorers read the un-swapped winners.
        "official_preset": official_format(benchmark, config.judge, config.swap, config.presentation),
        "samples": samples,  # judgments per item, each with seed + s (sampling: judge.sampling)
        "judge": config.model_dump(exclude={COMPUTE: {"api_key"}}),
        "prompt": {"name": judge.method.name, "version": judge.method.version, "sha256": judge.method.sha256},
        "config_hash": hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:16],
        "versions": versions | {"python": platform.python_version()},
    }


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v}
    return out


def setting_differences(previous: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """The verdict-determining settings in which two run records differ, as 'name: <there> there, <now> now'."""
    missing = "(unset)"
    # Compute settings, in their section or at the top level where records of the flat layout hold them.
    compute = {COMPUTE, *ComputeConfig.model_fields}
    there, now = (
        {k: v for k, v in _flat(r.get("judge") or {}).items() if k.split(".")[0] not in compute}
        for r in (previous, record)
    )
    out = [
        f"{k}: {there.get(k, missing)!r} there, {now.get(k, missing)!r} now"
        for k in sorted(set(there) | set(now))
        if there.get(k, missing) != now.get(k, missing)
    ]
    if previous.get("samples", 1) != record.get("samples", 1):
        out.append(f"samples: {previous.get('samples', 1)} there, {record.get('samples', 1)} now")
    old_prompt, new_prompt = previous.get("prompt") or {}, record["prompt"]
    if old_prompt.get("sha256") != new_prompt["sha256"] and old_prompt.get("name") == new_prompt["name"]:
        out.append(
            f"prompt {new_prompt['name']!r} edited (sha256 {str(old_prompt.get('sha256'))[:12]} there, "
            f"{new_prompt['sha256'][:12]} now)"
        )
    return out


def check_resumable(previous: dict[str, Any], record: dict[str, Any], all_items: list[EvalItem], out_dir: Path) -> None:
    """Refuse to resume a run with another benchmark, judge configuration or data, naming what differs. The limit
    may differ: the items of a smaller limit are a prefix of a larger one's."""
    problems = [
        f"{k}: {previous.get(k)!r} there, {record[k]!r} now"
        for k in ("benchmark", "task")
        if previous.get(k) != record[k]
    ]
    if problems:
        raise ValueError(
            f"{out_dir} holds a run of another benchmark or task ({'; '.join(problems)}); pass a new --out"
        )
    if previous.get("config_hash") != record["config_hash"]:
        diffs = setting_differences(previous, record) or ["settings recorded in its run.json"]
        raise ValueError(
            f"{out_dir} holds a run with another judge configuration ({'; '.join(diffs)}); resume it "
            "with the same settings, or pass a new --out"
        )
    if "data_sha256" in previous:  # the whole task's items
        same_data = previous["data_sha256"] == record["data_sha256"]
    else:  # a run.json written before data_sha256: its items_sha256 covers the first `limit` items
        same_data = previous.get("items_sha256") == items_sha256(all_items[: previous.get("limit")])
    if not same_data:
        raise ValueError(
            f"{out_dir} holds a run over another item set (the data's item keys or labels differ from "
            "this run's: another data folder, file or release); pass a new --out"
        )


def read_run_file(run_file: Path, results: Path) -> dict[str, Any] | None:
    """The run.json of a run directory, or None when there is none. One left empty or torn by a crash (by older
    versions, which did not write it atomically) counts as none when no results were written yet."""
    if not run_file.exists():
        return None
    try:
        record = json.loads(run_file.read_text())
    except ValueError as e:
        problem = f"not JSON: {e}"
    else:
        if isinstance(record, dict):
            return record
        problem = "not a JSON object"
    if results.exists() and results.stat().st_size:
        raise ValueError(
            f"{run_file} is unreadable ({problem}) but {results} holds results: restore run.json, or pass a new --out"
        )
    return None


def resume_rows(
    results: Path, key_of: Callable[[dict[str, Any]], str], failed: Callable[[dict[str, Any]], Any], *, compact: bool
) -> set[str]:
    """The keys of an append-only JSONL results file whose rows ended without an error: a resume skips them and
    judges the rest again. A torn last line (the process died mid-write) is cut off so appends stay valid JSONL.
    `compact`: the failed rows are also dropped from the file (rewritten atomically), so judging them again leaves
    one row per key; otherwise a later row for a key replaces the earlier one for its readers."""
    if not results.exists():
        return set()
    keys: set[str] = set()
    kept: list[bytes] = []
    good_bytes = 0
    lines = results.read_bytes().splitlines(keepends=True)
    for n, line in enumerate(lines, 1):
        try:
            if not line.endswith(b"\n"):
                raise ValueError("torn")
            row = json.loads(line)
            key, bad = key_of(row), failed(row)
        except (ValueError, KeyError, TypeError, AttributeError):
            if n < len(lines):  # not a line torn by a crash, which can only be the last: not a results file
                raise ValueError(
                    f"{results} line {n} is not a result row, so the file is not one this writes; pass another"
                ) from None
            break
        else:
            good_bytes += len(line)
            (keys.discard if bad else keys.add)(key)
            if not bad:
                kept.append(line)
    size = results.stat().st_size
    if compact and sum(map(len, kept)) < size:
        tmp = results.with_name(f".{results.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        tmp.write_bytes(b"".join(kept))
        os.replace(tmp, results)
    elif good_bytes < size:
        with results.open("r+b") as f:
            f.truncate(good_bytes)
    return keys


def completed_keys(results: Path) -> set[str]:
    """Keys of a run's results.jsonl judged without an error (items that failed, e.g. while the backend was down, are
    judged again on resume, their new row replacing the old)."""
    return resume_rows(results, lambda row: row["key"], lambda row: row["verdict"].get("error"), compact=False)


def missing_media(item: EvalItem) -> str | None:
    """The first local media path of an item that does not exist, if any."""
    r = item.request
    refs = [*r.images, *r.videos, *(x for c in (r.a, r.b) for x in (c.image, c.video))]
    for ref in refs:
        if isinstance(ref, str) and ref and not ref.startswith(("http://", "https://", "data:")):
            path = Path(ref.removeprefix("file://"))
            if not path.exists():
                return str(path)
    return None


def fail_fast_message(judged: list[tuple[EvalItem, Verdict]], data_dir: Path) -> str | None:
    """Why to stop, when every item judged so far failed for the same reason; None otherwise."""
    counts = error_counts(v.error for _, v in judged)
    if not judged or len(counts) != 1 or counts[0][1] != len(judged):
        return None
    kind, n, example = counts[0]
    first = f"the first {n} items all failed the same way" if n > 1 else "the first item failed"
    if kind == "media: file not found":
        path = next((m for i, _ in judged if (m := missing_media(i))), None) or example
        where = f"under --data-dir {data_dir}" if data_dir.is_dir() else f"where {data_dir} says"
        return (
            f"no media found {where}: looked for {path} ({first}); pass the folder that holds the benchmark's "
            "images (layout: docs/eval.md), then rerun the same command"
        )
    return f"{first} ({kind}), e.g. {judged[0][0].key}: {example}; fix the cause and rerun the same command to resume"


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
    items: list[EvalItem] | None = None,
    max_error_rate: float | None = MAX_ERROR_RATE,
    samples: int = 1,
) -> Scores:
    """Judge the benchmark's items into `out_dir` (resuming what is there) and return the scores.

    `items`: the task's items, when already loaded (else loaded from `data_dir`). `samples`: judgments per item
    (k > 1 only where the benchmark's official metric votes over samples), sample s with seed + s. Raises
    `RunFailed` when the first items judged all fail the same way (before judging the rest), or when more than
    `max_error_rate` of the items end with an error (after scoring and writing summary.json; None: no limit)."""
    if samples < 1:
        raise ValueError("--samples must be at least 1")
    if samples > 1 and not benchmark.votes_over_samples:
        voting = [n for n in benchmark_names() if get_benchmark(n).votes_over_samples]
        raise ValueError(
            f"--samples {samples}: {benchmark.name}'s metric does not vote over sampled judgments; only "
            f"{', '.join(voting)} has such a protocol (cal.py). Drop --samples"
        )
    all_items = benchmark.load(data_dir, task) if items is None else items
    items = all_items[:limit]
    judge = judge or Judge(config)
    record = run_record(benchmark, task, config, judge, items, limit, all_items, samples=samples)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_file, results = out_dir / RUN_FILE, out_dir / RESULTS_FILE
    previous = read_run_file(run_file, results)
    if previous is None:
        write_json_atomic(run_file, record)
    else:
        check_resumable(previous, record, all_items, out_dir)
        extent = None if None in (limit, previous.get("limit")) else max(limit, previous["limit"])
        if "data_sha256" not in previous or extent != previous.get("limit"):  # extended: record the new extent
            judged_items = all_items[:extent]
            write_json_atomic(
                run_file,
                previous
                | {
                    "limit": extent,
                    "n_items": len(judged_items),
                    "items_sha256": items_sha256(judged_items),
                    "data_sha256": record["data_sha256"],
                },
            )

    done = completed_keys(results)
    todo = [i for i in items if i.key not in done]
    label = f"{benchmark.name}/{task}" if len(benchmark.tasks) > 1 else benchmark.name
    judged: list[tuple[EvalItem, Verdict]] = []
    checked = False  # whether the fail-fast check has been made
    watch = LengthWatch(judge.backend)
    # One judge per sample, on the same engine. A chunk's samples are judged one after another, each a batch of the
    # chunk's items, so the requests in flight stay within the backend's concurrency.
    judges = [Judge(sample_config(config, s), backend=watch) for s in range(samples)]
    with results.open("a") as f, tqdm(total=len(items), initial=len(items) - len(todo), unit="pair", desc=label) as bar:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start : start + chunk_size]
            per_sample = [j.judge_batch([i.request for i in chunk]) for j in judges]
            for n, item in enumerate(chunk):
                verdicts = [vs[n] for vs in per_sample]
                row = (
                    result_row(item, verdicts[0], watch.cut(verdicts[0]))
                    if samples == 1
                    else sampled_row(item, verdicts, [watch.cut(v) for v in verdicts])
                )
                f.write(json.dumps(row) + "\n")
                judged.append((item, verdicts[0] if samples == 1 else combined_verdict(item, verdicts)))
            watch.clear()
            f.flush()
            os.fsync(f.fileno())  # a crash after this point loses nothing already judged
            bar.update(len(chunk))
            if not checked and len(judged) >= min(FAIL_FAST_ITEMS, len(items)):
                checked = True
                if message := fail_fast_message(judged, data_dir):
                    raise RunFailed(message)
    keys = {i.key for i in items}
    preds = [p for p in read_predictions(out_dir) if p.key in keys]
    scores = benchmark.score(preds, task)
    errors = error_counts(p.error for p in preds)
    limited = length_limited(out_dir, keys)
    summary = {
        "benchmark": benchmark.name,
        "task": task,
        "n": len(items),
        "scores": json_scores(scores),
        "errors": [{"kind": k, "count": n, "example": e} for k, n, e in errors],
        "length_limited": limited | {"max_tokens": config.sampling.max_tokens},
    }
    write_json_atomic(out_dir / SUMMARY_FILE, summary)
    if note := length_note(label, limited, config.sampling.max_tokens):
        print(note, file=sys.stderr)
    if errors:
        n_errors = sum(n for _, n, _ in errors)
        kind, n, example = errors[0]
        what = (
            f"{label}: {n_errors} of {len(preds)} items ended with an error; the most common ({n}): {kind}, "
            f"e.g. {example}"
        )
        if max_error_rate is not None and n_errors > max_error_rate * len(preds):
            raise RunFailed(
                f"{what}. That is more than --max-error-rate {max_error_rate:g} allows: fix the cause and "
                "rerun the same command (errored items are judged again)",
                scores,
            )
        print(f"warning: {what}; rerun the same command to judge them again", file=sys.stderr)
    return scores


def result_row(item: EvalItem, verdict: Verdict, length_cut: list[str] | None = None) -> dict[str, Any]:
    """One item's line: its verdict, and the '<order>/<stage>' entries whose generation hit the token limit."""
    return {
        "key": item.key,
        "gold": item.gold,
        "group": item.group,
        "meta": item.meta,
        "verdict": verdict.model_dump(),
        "length_cut": length_cut or [],
    }


def combined_verdict(item: EvalItem, verdicts: list[Verdict]) -> Verdict:
    """The k samples of an item as one verdict, for what reads a row's `verdict` (resume, fail-fast, people): every
    sample's judged orders, the winner more than half of them gave, the first error; raw texts stay in `samples`."""
    orders = [o for v in verdicts for o in v.orders]
    winners = [o.winner for o in orders]
    error = next((v.error for v in verdicts if v.error), None)
    return Verdict(
        id=item.key,
        judge=verdicts[0].judge,
        orders=orders,
        error=error,
        winner=next((w for w in ("A", "B", "tie") if winners.count(w) > len(winners) / 2), None),
        parse_ok=all(v.parse_ok for v in verdicts) and error is None,
        latency_s=max(v.latency_s for v in verdicts),
    )


def sampled_row(item: EvalItem, verdicts: list[Verdict], length_cut: list[list[str]]) -> dict[str, Any]:
    """One item judged k times: the combined verdict, then every sample's full verdict (raw texts, usage, order)
    and its entries cut by the token limit, sample s judged with seed + s."""
    row = result_row(item, combined_verdict(item, verdicts))
    return row | {"samples": [v.model_dump() for v in verdicts], "length_cut": length_cut}


def _row_samples(row: dict[str, Any]) -> list[tuple[dict[str, Any], list[str]]]:
    """(verdict, its entries cut by the token limit) for each sample of a results row."""
    if "samples" in row:
        cuts = row.get("length_cut") or [[] for _ in row["samples"]]
        return list(zip(row["samples"], cuts))
    return [(row["verdict"], row.get("length_cut") or [])]


def _last_rows(out_dir: Path) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for line in (out_dir / RESULTS_FILE).read_text().splitlines():
        row = json.loads(line)
        rows[row["key"]] = row  # a later line for a key (judged again on resume) replaces the earlier one
    return rows


def length_limited(out_dir: Path, keys: set[str] | None = None) -> dict[str, int]:
    """Judged samples (one order of one sample) whose generation stopped at the token limit, over the run's latest
    rows (of `keys`, when given): `samples` cut, `unreadable` of them without a readable verdict, `of` judged."""
    cut = unreadable = total = 0
    for key, row in _last_rows(out_dir).items():
        if keys is not None and key not in keys:
            continue
        for verdict, cuts in _row_samples(row):
            for order in verdict.get("orders") or []:
                total += 1
                if any(c.split("/", 1)[0] == order.get("shown_order", order.get("order")) for c in cuts):
                    cut += 1
                    unreadable += not order.get("parse_ok")
    return {"samples": cut, "unreadable": unreadable, "of": total}


def length_note(label: str, limited: dict[str, int], max_tokens: int | None) -> str | None:
    """The warning a run prints when some of its samples were cut by the token limit; None when none was."""
    if not limited["samples"]:
        return None
    limit = f" (max_tokens {max_tokens})" if max_tokens else ""
    return (
        f"warning: {label}: {limited['samples']} of {limited['of']} judged samples stopped at the length limit"
        f"{limit}; {limited['unreadable']} of them have no readable verdict (unparsable: wrong in the strict "
        "metrics; VL-RewardBench's official rule counts such a sample doesntMatch, so a majority of them drops the "
        "item). Raise --max-tokens, in a new --out, to let them finish"
    )


def run_official_format(record: dict[str, Any]) -> bool:
    """Whether a run's raw text is read with the official rule: as recorded, or as `official_format` now says for
    its judge, order and swap (so a VL-RewardBench preset run with --swap is read with it too)."""
    if record.get("official_preset"):
        return True
    j = record.get("judge") or {}
    try:
        benchmark = get_benchmark(record["benchmark"])
    except (KeyError, ValueError):
        return False
    presentation = j.get("presentation", j.get("order", "given"))  # records of the flat layout call it order
    return official_format(benchmark, j.get("judge", ""), bool(j.get("swap")), presentation)


def read_predictions(out_dir: Path) -> list[Prediction]:
    """A run directory's results as predictions, in first-written order; a later line for a key (a failed item judged
    again on resume) replaces the earlier one. An item judged k times is one prediction with k samples' votes."""
    official = run_official_format(json.loads((out_dir / RUN_FILE).read_text()))
    preds: dict[str, Prediction] = {}
    for key, row in _last_rows(out_dir).items():
        item = EvalItem.model_construct(key=row["key"], gold=row["gold"], group=row["group"], meta=row["meta"])
        if "samples" in row:
            verdicts = [Verdict.model_validate(v) for v in row["samples"]]
            preds[key] = Prediction.from_samples(item, verdicts, official_format=official)
        else:
            preds[key] = Prediction.from_verdict(item, Verdict.model_validate(row["verdict"]), official_format=official)
    return list(preds.values())
