"""`deltarubric data list|convert|dedup|caption`: thin wrappers over pairdata.converters, .dedup and .caption.
Errors (a wrong schema, a missing file) propagate to `deltarubric.cli.main.main`, which prints them as one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from deltarubric.cli.options import judge_options
from deltarubric.pairdata.imagehash import DHASH_MAX, PHASH_MAX
from deltarubric.rm.config import JudgeConfig

DEDUP_OUT = Path("dedup")
app = typer.Typer(
    help="Training data: convert public preference datasets to pair files, drop benchmark items.", no_args_is_help=True
)


@app.command("list")
def list_cmd() -> None:
    """The dataset converters, the datasets they read, and whether each schema was confirmed or assumed."""
    from deltarubric.pairdata.converters import converter_names, get_converter

    for name in converter_names():
        c = get_converter(name)
        print(f"{name:<24} {c.dataset}\n{'':<24} {c.description}\n{'':<24} schema {c.schema}")


@app.command(no_args_is_help=True)
def convert(
    name: Annotated[str, typer.Argument(help="The converter (see `deltarubric data list`), e.g. helpsteer3.")],
    src: Annotated[
        Path, typer.Option(help="The downloaded dataset: a .jsonl[.gz]/.json/.parquet file or a folder of them.")
    ],
    out: Annotated[Path, typer.Option(help="The pair file to write (JSONL); embedded images go to images/ beside it.")],
    seed: Annotated[int, typer.Option(help="Seeds each pair's A/B order (drawn from the seed and the pair's id).")] = 0,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many pairs.", show_default="all")] = None,
    id_prefix: Annotated[
        str | None,
        typer.Option(
            help="Ids are PREFIX-<row index>. Give each split its own (e.g. helpsteer3-val) when converting them "
            "separately, or their ids collide.",
            show_default="the converter's name",
        ),
    ] = None,
) -> None:
    """Convert a public preference dataset into the labelled-pair JSONL that `train` and `eval run pairs` read."""
    from deltarubric.pairdata.converters import convert as run_convert
    from deltarubric.pairdata.converters import get_converter

    get_converter(name)  # an unknown name fails before the source is opened
    summary = run_convert(name, src, out, seed=seed, limit=limit, id_prefix=id_prefix)
    print(json.dumps(summary.to_json(), indent=2))
    if not summary.written:  # an empty pair file is no result: most likely the wrong converter or a broken download
        out.unlink(missing_ok=True)
        top = "; ".join(f"{reason} ({n})" for reason, n in summary.skipped.most_common(3))
        why = f"skipped: {top}" if top else "the source has no rows"
        raise ValueError(f"no pairs written from {summary.rows} rows of {src} ({why}); {out} not written")


def _split_benchmarks(files: list[Path], against: list[str]) -> tuple[list[Path], list[str]]:
    """`--against a b c` as the issue writes it: click gives `--against` one value, and b, c land among FILES. A FILES
    entry that is no file but names a registered benchmark (NAME or NAME=DIR) is taken as a benchmark."""
    from deltarubric.eval.registry import benchmark_names

    names = set(benchmark_names())
    moved = [f for f in files if not f.exists() and str(f).partition("=")[0] in names]
    return [f for f in files if f not in moved], [*against, *(str(f) for f in moved)]


@app.command(no_args_is_help=True)
def dedup(
    files: Annotated[list[Path], typer.Argument(help="Pair files (JSONL) to clean.")],
    against: Annotated[
        list[str] | None,
        typer.Option(
            "--against",
            help="A benchmark to check against: NAME (its pinned hub copy, from the cache or downloaded) or "
            "NAME=DIR (the folder `eval run --data-dir` reads). Repeat it, or list names after it.",
            show_default="none",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Folder for the cleaned files (same names) and dedup_report.json.")
    ] = DEDUP_OUT,
    phash_max: Annotated[
        int, typer.Option(min=0, max=63, help="Largest pHash distance (bits) of a match.")
    ] = PHASH_MAX,
    dhash_max: Annotated[
        int, typer.Option(min=0, max=64, help="Largest dHash distance (bits) of a match.")
    ] = DHASH_MAX,
) -> None:
    """Drop pairs whose image (perceptual hash) or question+responses (normalised, either order) is a benchmark item."""
    from deltarubric.pairdata.dedup import REPORT_NAME
    from deltarubric.pairdata.dedup import dedup as run_dedup

    files, specs = _split_benchmarks(files, against or [])
    if not files:
        raise typer.BadParameter("give at least one pair file", param_hint="FILES")
    report = run_dedup(files, specs, out, phash_max=phash_max, dhash_max=dhash_max)
    for b in report["benchmarks"]:
        unchecked = {k: v for k, v in b["images"].items() if k != "hashed" and v}
        note = f"; not checked by image: {unchecked}" if unchecked else ""  # a clean result may then be incomplete
        print(f"{b['benchmark']}: {b['items']} items from {b['data']}, {b['images']['hashed']} images hashed{note}")
    for f in report["files"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(f["dropped_by_reason"].items())) or "none"
        unchecked = {k: v for k, v in f["images"].items() if k != "hashed" and v}
        note = f"; images not checked: {unchecked}" if unchecked else ""
        print(f"{f['input']}: kept {f['kept']} of {f['pairs']} -> {f['output']} (dropped by reason: {reasons}){note}")
    print(f"report: {out / REPORT_NAME}")


@app.command(no_args_is_help=True)
@judge_options
def caption(
    config: JudgeConfig,
    file: Annotated[Path, typer.Argument(help="The pair file to caption.")],
    out: Annotated[
        Path | None, typer.Option(help="Write here instead of rewriting FILE in place.", show_default="FILE")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace captions the file already has.", show_default="off")
    ] = False,
    chunk_size: Annotated[int, typer.Option(min=1, help="Captions requested per backend call.")] = 16,
) -> None:
    """Add a `caption` (a description of the pair's context image or video) to every pair, with any judge backend."""
    from deltarubric.pairdata.caption import caption_file
    from deltarubric.rm.backends import make_backend

    summary = caption_file(
        file,
        out or file,
        make_backend(config),
        config.sampling,
        judge=config.judge,
        max_input_pixels=config.max_input_pixels,
        max_pixels=config.max_pixels,
        overwrite=overwrite,
        chunk_size=chunk_size,
    )
    print(json.dumps(summary.to_json(), indent=2))
