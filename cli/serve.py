"""`deltarubric serve`: the reward server over one judge."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from deltarubric.app.settings import ServerSettings
from deltarubric.cli.options import judge_options
from deltarubric.rm.config import JudgeConfig

_S = "Server"
_SERVER = {name: f.default for name, f in ServerSettings.model_fields.items()}  # one source for the defaults


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
            help="Decoded image pixels all requests hold together, from decoding until answered; default: "
            "--max-batch-pixels x (--concurrent-batches + 1), at least --max-request-pixels.",
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
