"""`deltarubric judge`: one pair from flags, or a JSONL file of requests (streamed out, resumable)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from pydantic import ValidationError

from deltarubric.cli.errors import CLIError, fail
from deltarubric.cli.options import judge_options
from deltarubric.cli.progress import status
from deltarubric.rm.config import JudgeConfig
from deltarubric.rm.tasks import infer_task_type
from deltarubric.rm.types import TASK_TYPES, JudgeRequest, Verdict
from deltarubric.rm.validation import field_problems

if TYPE_CHECKING:
    from deltarubric.rm.judge import Judge

_PAIR, _IO = "Pair", "Input and output"
_NONE: dict[str, Any] = {"rich_help_panel": _PAIR, "show_default": "none"}


def _candidate(side: str, text: str | None, image: str | None, video: str | None) -> dict[str, str]:
    given = {k: v for k, v in (("text", text), ("image", image), ("video", video)) if v is not None}
    if len(given) != 1:
        raise CLIError(f"give exactly one of --response-{side}, --image-{side}, --video-{side}")
    return given


def _report_errors(errors: list[str | None]) -> None:
    """A file judged with errors says so on stderr; mostly errors (a backend down, missing media) is a failed run."""
    from deltarubric.eval.core import error_counts
    from deltarubric.eval.runner import MAX_ERROR_RATE

    counts = error_counts(errors)
    if not counts:
        return
    n_failed = sum(n for _, n, _ in counts)
    kind, n, _ = counts[0]
    what = f"{n_failed} of {len(errors)} pairs ended with an error; the most common ({n}): {kind}"
    if n_failed > MAX_ERROR_RATE * len(errors):
        # as for one pair: the run is broken, not the command line
        raise fail(f"{what}. Fix the cause and rerun the same command: errored pairs are judged again")
    print(f"warning: {what}; rerun the same command to judge them again", file=sys.stderr)


def _print_human(v: Verdict) -> None:
    if v.error and not v.raw:  # never judged (a missing image, a backend down): the error is all there is to say
        print(f"error: {v.error}")
        return
    p = "n/a" if v.p_a is None else f"{v.p_a:.3f}"
    consistent = "n/a (one order)" if v.consistent is None else ("yes" if v.consistent else "no")
    print(f"winner: {v.winner or 'unparsable'}   p(A better): {p}   consistent: {consistent}   ({v.latency_s:.2f}s)")
    for k, item in enumerate(v.checklist, 1):
        print(f"  {k}. {item}")
    for f in v.findings:
        print(f"  - favors {f.favors or '?'}: {f.text}")
    if v.rationale:
        print(f"rationale: {v.rationale}")
    if v.error:
        print(f"error: {v.error}")


@judge_options
def judge(
    config: JudgeConfig,
    question: Annotated[
        Optional[str],
        typer.Option(
            "--question",
            "-q",
            help="Question, generation prompt or edit instruction.",
            rich_help_panel=_PAIR,
            show_default="none: give it, or --input",
        ),
    ] = None,
    response_a: Annotated[Optional[str], typer.Option(help="Text of candidate A.", **_NONE)] = None,
    response_b: Annotated[Optional[str], typer.Option(help="Text of candidate B.", **_NONE)] = None,
    image: Annotated[
        Optional[list[str]], typer.Option(help="Context image (path, URL, data URL); repeatable.", **_NONE)
    ] = None,
    video: Annotated[Optional[list[str]], typer.Option(help="Context video; repeatable.", **_NONE)] = None,
    image_a: Annotated[
        Optional[str], typer.Option(help="Candidate A as an image (generation/editing).", **_NONE)
    ] = None,
    image_b: Annotated[Optional[str], typer.Option(help="Candidate B as an image.", **_NONE)] = None,
    video_a: Annotated[Optional[str], typer.Option(help="Candidate A as a video.", **_NONE)] = None,
    video_b: Annotated[Optional[str], typer.Option(help="Candidate B as a video.", **_NONE)] = None,
    reference: Annotated[Optional[str], typer.Option(help="Reference answer shown to the judge.", **_NONE)] = None,
    task: Annotated[
        Optional[str],
        typer.Option(
            help="Task type: " + " | ".join(TASK_TYPES) + ".",
            rich_help_panel=_PAIR,
            show_default="inferred from the candidates and --image",
        ),
    ] = None,
    id: Annotated[str, typer.Option(help="Item id (seeds --presentation random).", rich_help_panel=_PAIR)] = "0",
    input: Annotated[
        Optional[Path],
        typer.Option(
            help="JSONL file of requests (the JudgeRequest schema): prints one verdict per line as each chunk is "
            "judged, with a progress bar on stderr.",
            rich_help_panel=_IO,
            show_default="none: judge the pair given by flags",
        ),
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option(
            help="With --input: append the verdicts here as each chunk is judged; rerunning the same command skips "
            "the ids already there (resume).",
            rich_help_panel=_IO,
            show_default="stdout",
        ),
    ] = None,
    chunk_size: Annotated[
        int,
        typer.Option(
            min=1, help="With --input: pairs per batched judge call, written after each.", rich_help_panel=_IO
        ),
    ] = 16,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the verdict as JSON.", rich_help_panel=_IO, show_default="off")
    ] = False,
) -> None:
    """Judge one preference pair (or a JSONL file of them) and print the verdict.

    Example: deltarubric judge -m Qwen/Qwen3-VL-8B-Instruct --backend openai --base-url http://127.0.0.1:8000/v1
    --image data/examples/cats.png -q "How many cats?" --response-a "Two cats." --response-b "Three cats." --swap --json
    """
    if input is not None:
        pair = {
            "--question": question,
            "--response-a": response_a,
            "--response-b": response_b,
            "--image": image,
            "--video": video,
            "--image-a": image_a,
            "--image-b": image_b,
            "--video-a": video_a,
            "--video-b": video_b,
            "--reference": reference,
            "--task": task,
            "--id": None if id == "0" else id,
        }
        if given := [flag for flag, value in pair.items() if value is not None]:
            raise CLIError(f"{', '.join(given)}: with --input every pair comes from the file; put them in its lines")
        from deltarubric.eval.judge_file import judge_file, read_requests

        requests = read_requests(input)  # every line checked before the model loads
        _report_errors(judge_file(_load(config), requests, output, chunk_size=chunk_size))
        return
    if output is not None:
        raise CLIError("--output goes with --input FILE.jsonl; for one pair, redirect stdout")
    if question is None:
        raise CLIError("give --question (and the two candidates), or --input FILE.jsonl")
    a = _candidate("a", response_a, image_a, video_a)
    b = _candidate("b", response_b, image_b, video_b)
    if task is None and "text" in a and not (image or video):
        raise CLIError("give --image (or --video) the question is about, or --task text for a pair without media")
    fields = {
        "id": id,
        # a's one key is its kind. Text pairs need --task text to go without media, so a forgotten --image is an
        # error, not a text judgment.
        "task_type": task or infer_task_type(next(iter(a)), image or [], video or [], require_media=True),  # type: ignore[arg-type]
        "question": question,
        "images": image or [],
        "videos": video or [],
        "a": a,
        "b": b,
        "reference": reference,
    }
    try:
        request = JudgeRequest.model_validate(fields)
    except ValidationError as e:
        raise CLIError(_flag_problems(e, a, b)) from None
    judge = _load(config)
    with status("judging"):
        verdict = judge.judge(request)
    if as_json:
        print(verdict.model_dump_json(indent=2))
    else:
        _print_human(verdict)
    if verdict.error:
        raise typer.Exit(code=1)


def _load(config: JudgeConfig) -> Judge:
    from deltarubric.rm.judge import Judge

    with status(f"loading {config.model} ({config.compute.backend})"):
        return Judge(config)


def _flag_problems(error: ValidationError, a: dict[str, str], b: dict[str, str]) -> str:
    """A request built from flags that does not validate, in the words of the flags."""
    candidate = {"text": "--response", "image": "--image", "video": "--video"}
    flags = {
        "id": "--id",
        "task_type": "--task",
        "question": "--question",
        "images": "--image",
        "videos": "--video",
        "reference": "--reference",
        "a": candidate[next(iter(a))] + "-a",
        "b": candidate[next(iter(b))] + "-b",
    }
    parts = []
    for _, loc, message in field_problems(error, JudgeRequest):
        flag = flags.get(str(loc[0])) if loc else None
        parts.append(f"{flag}: {message}" if flag else message)
    return "; ".join(parts)
