"""`deltarubric judge`: one pair from flags, or a JSONL file of requests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from deltarubric.cli.errors import CLIError
from deltarubric.cli.options import judge_options
from deltarubric.rm.config import JudgeConfig
from deltarubric.rm.types import TASK_TYPES, JudgeRequest, Verdict

_PAIR, _IO = "Pair", "Input and output"
_NONE: dict[str, Any] = {"rich_help_panel": _PAIR, "show_default": "none"}


def _candidate(side: str, text: str | None, image: str | None, video: str | None) -> dict[str, str]:
    given = {k: v for k, v in (("text", text), ("image", image), ("video", video)) if v is not None}
    if len(given) != 1:
        raise CLIError(f"give exactly one of --response-{side}, --image-{side}, --video-{side}")
    return given


def _infer_task(a: dict[str, str], context_images: list[str], context_videos: list[str]) -> str:
    """Text pairs need --task text to go without media, so a forgotten --image is an error, not a text judgment."""
    if "text" in a:
        return "video_understanding" if context_videos else "image_understanding"
    if "video" in a:
        return "video_generation"
    return "image_editing" if context_images else "image_generation"


def _print_human(v: Verdict) -> None:
    p = "n/a" if v.p_a is None else f"{v.p_a:.3f}"
    print(f"winner: {v.winner or 'unparsable'}   p(A better): {p}   consistent: {v.consistent}   ({v.latency_s:.2f}s)")
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
            help="JSONL file of requests (the JudgeRequest schema); prints JSONL verdicts.",
            rich_help_panel=_IO,
            show_default="none: judge the pair given by flags",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the verdict as JSON.", rich_help_panel=_IO, show_default="off")
    ] = False,
) -> None:
    """Judge one preference pair (or a JSONL file of them) and print the verdict.

    Example: deltarubric judge -m Qwen/Qwen3-VL-8B-Instruct --backend openai --base-url http://127.0.0.1:8000/v1
    --image cat.jpg -q "How many cats?" --response-a "Two cats." --response-b "Three cats." --swap --json
    """
    from deltarubric.rm.judge import Judge

    if input is not None:
        requests = [JudgeRequest.model_validate_json(line) for line in input.read_text().splitlines() if line.strip()]
    elif question is None:
        raise CLIError("give --question (and the two candidates), or --input FILE.jsonl")
    else:
        a = _candidate("a", response_a, image_a, video_a)
        b = _candidate("b", response_b, image_b, video_b)
        request = JudgeRequest(
            id=id,
            task_type=task or _infer_task(a, image or [], video or []),
            question=question,
            images=image or [],
            videos=video or [],
            a=a,
            b=b,
            reference=reference,
        )
        requests = [request]
    verdicts = Judge(config).judge_batch(requests)
    for v in verdicts:
        if input is not None or as_json:
            print(v.model_dump_json(indent=None if input is not None else 2))
        else:
            _print_human(v)
    if input is None and verdicts[0].error:
        raise typer.Exit(code=1)
