"""The `deltarubric` command. Each command checks its flags, calls one library function, and prints the result."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError

from deltarubric.app.settings import ServerSettings
from deltarubric.rm.cli_options import judge_options
from deltarubric.rm.config import JudgeConfig
from deltarubric.rm.media import MediaError
from deltarubric.rm.types import JudgeRequest, Verdict

app = typer.Typer(
    name="deltarubric",
    help="Generative multimodal reward models: judge preference pairs with a Qwen3-VL model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _attach_eval() -> None:
    from deltarubric.eval.cli import app as eval_app

    app.add_typer(eval_app, name="eval")


_attach_eval()


def _attach_train() -> None:
    from deltarubric.train.cli import app as train_app

    app.add_typer(train_app, name="train")


_attach_train()


def _attach_data() -> None:
    from deltarubric.pairdata.cli import app as data_app

    app.add_typer(data_app, name="data")


_attach_data()


class CLIError(Exception):
    """A user error: printed as one line, without a traceback."""


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


@app.command(no_args_is_help=True)
@judge_options
def judge(
    config: JudgeConfig,
    question: Annotated[
        Optional[str], typer.Option("--question", "-q", help="Question, generation prompt or edit instruction.")
    ] = None,
    response_a: Annotated[Optional[str], typer.Option(help="Text of candidate A.")] = None,
    response_b: Annotated[Optional[str], typer.Option(help="Text of candidate B.")] = None,
    image: Annotated[Optional[list[str]], typer.Option(help="Context image (path, URL, data URL); repeatable.")] = None,
    video: Annotated[Optional[list[str]], typer.Option(help="Context video; repeatable.")] = None,
    image_a: Annotated[Optional[str], typer.Option(help="Candidate A as an image (generation/editing).")] = None,
    image_b: Annotated[Optional[str], typer.Option(help="Candidate B as an image.")] = None,
    video_a: Annotated[Optional[str], typer.Option(help="Candidate A as a video.")] = None,
    video_b: Annotated[Optional[str], typer.Option(help="Candidate B as a video.")] = None,
    reference: Annotated[Optional[str], typer.Option(help="Reference answer shown to the judge.")] = None,
    task: Annotated[
        Optional[str], typer.Option(help="Task type; inferred from the candidates and --image when omitted.")
    ] = None,
    id: Annotated[str, typer.Option(help="Item id (seeds --order random).")] = "0",
    input: Annotated[
        Optional[Path], typer.Option(help="JSONL file of requests (the JudgeRequest schema); prints JSONL verdicts.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
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


@app.command("make-tiny-model")
def make_tiny_model_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the checkpoint into.")],
    seed: Annotated[int, typer.Option(help="Weight initialisation seed.")] = 0,
) -> None:
    """Write a tiny random-weight Qwen3-VL checkpoint that loads offline with from_pretrained (for tests and CI)."""
    from deltarubric.rm.tiny import make_tiny_model

    print(make_tiny_model(out_dir, seed=seed))


_S = "Server"
_SERVER = {name: f.default for name, f in ServerSettings.model_fields.items()}  # one source for the defaults


@app.command()
@judge_options
def serve(
    config: JudgeConfig,
    host: Annotated[str, typer.Option(help="Interface to bind.", rich_help_panel=_S)] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", rich_help_panel=_S)] = 8000,
    served_model_name: Annotated[
        Optional[str], typer.Option(help="Model name clients ask for; default: --model.", rich_help_panel=_S)
    ] = None,
    auth_token: Annotated[
        Optional[str],
        typer.Option(
            envvar="DELTARUBRIC_AUTH_TOKEN",
            help="Require 'Authorization: Bearer TOKEN' (all routes but /health).",
            rich_help_panel=_S,
        ),
    ] = None,
    max_batch: Annotated[
        int, typer.Option(help="Pairs per judge call, coalesced across requests.", rich_help_panel=_S)
    ] = _SERVER["max_batch"],
    batch_window_ms: Annotated[
        float, typer.Option(help="How long a queued pair waits for company.", rich_help_panel=_S)
    ] = _SERVER["batch_window_ms"],
    max_queue: Annotated[
        int, typer.Option(help="Queued pairs beyond which requests get 503 + Retry-After.", rich_help_panel=_S)
    ] = _SERVER["max_queue"],
    concurrent_batches: Annotated[
        int, typer.Option(help="Judge calls in flight (raise for --backend openai).", rich_help_panel=_S)
    ] = _SERVER["concurrent_batches"],
    request_timeout: Annotated[
        float, typer.Option(help="Seconds within which every request is answered.", rich_help_panel=_S)
    ] = _SERVER["request_timeout_s"],
    cache_size: Annotated[
        int, typer.Option(help="Verdicts remembered by request content (0: off).", rich_help_panel=_S)
    ] = _SERVER["cache_size"],
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body.", rich_help_panel=_S)] = _SERVER[
        "max_body_bytes"
    ],
    max_items_per_request: Annotated[
        int, typer.Option(help="Rollouts or queries per request, judged or not.", rich_help_panel=_S)
    ] = _SERVER["max_items_per_request"],
    max_pairs_per_request: Annotated[int, typer.Option(rich_help_panel=_S)] = _SERVER["max_pairs_per_request"],
    max_images_per_request: Annotated[int, typer.Option(rich_help_panel=_S)] = _SERVER["max_images_per_request"],
    max_request_pixels: Annotated[
        int,
        typer.Option(
            help="Decoded image pixels per request (after downscaling to --max-pixels, default 16777216).",
            rich_help_panel=_S,
        ),
    ] = _SERVER["max_request_pixels"],
    max_batch_pixels: Annotated[
        int, typer.Option(help="Decoded image pixels per judge call.", rich_help_panel=_S)
    ] = _SERVER["max_batch_pixels"],
    max_held_pixels: Annotated[
        Optional[int],
        typer.Option(
            help="Decoded image pixels all requests hold together, from decoding until answered; default: --max-batch-pixels x (--concurrent-batches + 1), at least --max-request-pixels.",
            rich_help_panel=_S,
        ),
    ] = None,
    max_chat_messages: Annotated[
        int, typer.Option(help="Messages of one chat completion, checked before templating.", rich_help_panel=_S)
    ] = _SERVER["max_chat_messages"],
    max_input_tokens: Annotated[
        int, typer.Option(help="Prompt text tokens after the chat template.", rich_help_panel=_S)
    ] = _SERVER["max_input_tokens"],
    max_completion_tokens: Annotated[
        int, typer.Option(help="Largest max_tokens a chat completion may ask for.", rich_help_panel=_S)
    ] = _SERVER["max_completion_tokens"],
    allow_media_dir: Annotated[
        Optional[list[Path]], typer.Option(help="Folder whose files requests may name; repeatable.", rich_help_panel=_S)
    ] = None,
    allow_http_media: Annotated[
        bool, typer.Option(help="Fetch http(s) media named in requests.", rich_help_panel=_S)
    ] = False,
    allow_private_addresses: Annotated[
        bool, typer.Option(help="Let http(s) media resolve to loopback/private hosts.", rich_help_panel=_S)
    ] = False,
    media_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds for a whole http(s) image download, waiting for a slot included.", rich_help_panel=_S
        ),
    ] = _SERVER["media_timeout_s"],
    media_downloads: Annotated[int, typer.Option(help="http(s) downloads at once.", rich_help_panel=_S)] = _SERVER[
        "media_downloads"
    ],
    work_threads: Annotated[
        int, typer.Option(help="Threads for parsing, checking and tokenizing requests.", rich_help_panel=_S)
    ] = _SERVER["work_threads"],
    decode_threads: Annotated[
        int, typer.Option(help="Threads decoding images (at most this many at full size at once).", rich_help_panel=_S)
    ] = _SERVER["decode_threads"],
    header_timeout: Annotated[
        float, typer.Option(help="Seconds a connection has to send its request headers.", rich_help_panel=_S)
    ] = _SERVER["header_timeout_s"],
    drain_timeout: Annotated[
        Optional[float],
        typer.Option(
            help="On SIGTERM, seconds to answer accepted requests before exiting; default: --request-timeout.",
            rich_help_panel=_S,
        ),
    ] = None,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="One stderr line per request (method, route, status, latency, pairs).",
            rich_help_panel=_S,
        ),
    ] = True,
) -> None:
    """Serve the judge to RL trainers: /get_reward (OpenRLHF), /v1/judge, /v1/rewards, OpenAI-compatible
    /v1/chat/completions and /v1/models, /health and /metrics. See docs/server.md."""
    from deltarubric.app.server import build_app, run_server
    from deltarubric.rm.judge import Judge

    settings = ServerSettings(
        served_model_name=served_model_name or config.model,
        api_key=auth_token,
        max_batch=max_batch,
        batch_window_ms=batch_window_ms,
        max_queue=max_queue,
        concurrent_batches=concurrent_batches,
        request_timeout_s=request_timeout,
        cache_size=cache_size,
        max_body_bytes=max_body_bytes,
        max_items_per_request=max_items_per_request,
        max_pairs_per_request=max_pairs_per_request,
        max_images_per_request=max_images_per_request,
        max_input_pixels=config.max_input_pixels,
        max_pixels=config.max_pixels or _SERVER["max_pixels"],
        max_request_pixels=max_request_pixels,
        max_batch_pixels=max_batch_pixels,
        max_held_pixels=max_held_pixels,
        max_chat_messages=max_chat_messages,
        max_input_tokens=max_input_tokens,
        max_completion_tokens=max_completion_tokens,
        allowed_media_dirs=allow_media_dir or [],
        allow_http_media=allow_http_media,
        allow_private_addresses=allow_private_addresses,
        media_timeout_s=media_timeout,
        media_downloads=media_downloads,
        work_threads=work_threads,
        decode_threads=decode_threads,
        header_timeout_s=header_timeout,
        drain_timeout_s=drain_timeout,
        access_log=access_log,
    )
    # On SIGTERM uvicorn stops accepting, in-flight requests finish and the queue drains, all within the drain
    # timeout; a backend that never returns cannot hold the process past it (see app/edge.py).
    run_server(build_app(Judge(config), settings), host=host, port=port)


_D = "Demo"


@app.command()
@judge_options
def demo(
    config: JudgeConfig,
    host: Annotated[
        str, typer.Option(help="Interface to bind; 127.0.0.1 keeps the page on this machine.", rich_help_panel=_D)
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", rich_help_panel=_D)] = 7860,
    examples_dir: Annotated[
        Optional[Path],
        typer.Option(help="Folder of the example images; default: data/examples of the checkout.", rich_help_panel=_D),
    ] = None,
) -> None:
    """Open the Gradio demo: judge one pair in the browser, stage by stage. Needs gradio (pip install -e ".[demo]").

    Example: deltarubric demo -m Qwen/Qwen3-VL-8B-Instruct --backend openai --base-url http://127.0.0.1:8000/v1
    --host 127.0.0.1 --port 7860. See docs/demo.md.
    """
    from deltarubric.app.demo import launch_demo

    launch_demo(config, host=host, port=port, examples_dir=examples_dir)


@app.command()
def env() -> None:
    """Print versions and capabilities, for bug reports."""
    from importlib import metadata

    from transformers.utils import is_torchvision_available

    info = {}
    for pkg in ("deltarubric", "torch", "transformers", "pillow", "pydantic", "httpx", "fastapi", "vllm", "openai"):
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info[pkg] = None
    import torch

    info |= {
        "python": sys.version.split()[0],
        "cuda": torch.cuda.is_available(),
        "torchvision (video)": is_torchvision_available(),
    }
    print(json.dumps(info, indent=2))


def main() -> None:
    logging.basicConfig(level=os.environ.get("DELTARUBRIC_LOG_LEVEL", "WARNING").upper(), stream=sys.stderr)
    try:
        app()
    except (CLIError, ValidationError, MediaError, ValueError, OSError, ImportError) as e:  # user errors, one line each
        if os.environ.get("DELTARUBRIC_DEBUG"):
            raise
        msg = str(e)
        if isinstance(e, ValidationError):
            msg = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'input'}: {err['msg']}" for err in e.errors())
        print(f"Error: {msg}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
