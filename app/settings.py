"""Server settings: limits, media policy, batching, auth. One typed object; `deltarubric serve` makes a flag of each
field (its description the help, its default shown; `json_schema_extra` names a flag that is not `--field-name`).

Every limit here is listed, with its flag and default, in docs/server.md ("Limits").
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from deltarubric.rm.media import DEFAULT_MAX_INPUT_PIXELS, DEFAULT_MAX_PIXELS


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    served_model_name: str = Field("judge", description="The model name clients ask for (/v1/models, chat).")
    api_key: str | None = Field(
        None,
        description="Require 'Authorization: Bearer TOKEN' on every route but /health.",
        json_schema_extra={"flags": ["--auth-token"], "envvar": "DELTARUBRIC_AUTH_TOKEN", "default_text": "none"},
    )
    # micro-batching
    max_batch: int = Field(32, ge=1, description="Pairs per judge call, coalesced across concurrent requests.")
    batch_window_ms: float = Field(10.0, ge=0, description="How long the first queued pair waits for company.")
    max_queue: int = Field(1024, ge=1, description="Queued pairs beyond which requests get 503 + Retry-After.")
    concurrent_batches: int = Field(1, ge=1, description="Judge calls in flight (raise for --backend openai).")
    request_timeout_s: float = Field(
        170.0,
        gt=0,
        description="Seconds within which every request is answered (OpenRLHF gives up at 180 s).",
        json_schema_extra={"flags": ["--request-timeout"]},
    )
    cache_size: int = Field(4096, ge=0, description="Verdicts remembered by request content; 0 turns it off.")
    # limits on input
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Largest request body, in bytes.")
    max_items_per_request: int = Field(256, ge=1, description="Rollouts (or queries) per request, judged or not.")
    max_pairs_per_request: int = Field(256, ge=1, description="Pairs one request may have judged.")
    max_images_per_request: int = Field(
        64,
        ge=0,
        description="Distinct images and videos per request (a group's "
        "shared image counts once), and all a pair or a chat shows.",
    )
    max_input_pixels: int = Field(DEFAULT_MAX_INPUT_PIXELS, ge=1, description="Per image, from its header.")
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS, ge=1, description="Per image: larger ones are downscaled while decoding."
    )
    max_request_pixels: int = Field(
        64 * 1024 * 1024, ge=1, description="Decoded image pixels per request (after downscaling to --max-pixels)."
    )
    max_batch_pixels: int = Field(128 * 1024 * 1024, ge=1, description="Decoded image pixels per judge call.")
    max_held_pixels: int | None = Field(
        None,
        ge=1,
        description="Decoded image pixels all requests hold together, from decoding until answered.",
        json_schema_extra={
            "default_text": "--max-batch-pixels x (--concurrent-batches + 1), at least --max-request-pixels"
        },
    )
    max_chat_messages: int = Field(1024, ge=1, description="Messages of a chat completion, checked before templating.")
    max_input_tokens: int = Field(32768, ge=1, description="Prompt text tokens after the chat template.")
    max_completion_tokens: int = Field(4096, ge=1, le=32768, description="Largest max_tokens a chat request may ask.")
    # where media may come from: data URLs always; files only under these folders; http(s) only if allowed
    allowed_media_dirs: list[Path] = Field(
        default_factory=list,
        description="A folder whose files requests may name; repeatable.",
        json_schema_extra={"flags": ["--allow-media-dir"]},
    )
    allow_http_media: bool = Field(False, description="Fetch http(s) media named in requests.")
    allow_private_addresses: bool = Field(False, description="Let http(s) media resolve to loopback/private hosts.")
    media_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Seconds for a whole http(s) image download, waiting for a slot included.",
        json_schema_extra={"flags": ["--media-timeout"]},
    )
    media_downloads: int = Field(8, ge=1, description="http(s) downloads at once (their own pool).")
    work_threads: int = Field(4, ge=1, description="Threads for parsing, checking, hashing and tokenizing requests.")
    decode_threads: int = Field(2, ge=1, description="Threads decoding images: at most this many at full size at once.")
    # connections and shutdown
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Seconds a connection has to send its request headers.",
        json_schema_extra={"flags": ["--header-timeout"]},
    )
    drain_timeout_s: float | None = Field(
        None,
        gt=0,
        description="On SIGTERM: seconds to answer what was accepted, then exit.",
        json_schema_extra={"flags": ["--drain-timeout"], "default_text": "--request-timeout"},
    )
    access_log: bool = Field(True, description="One stderr line per request: method, route, status, latency, pairs.")

    @property
    def held_pixels(self) -> int:
        """The decoded-pixel budget shared by all requests: by default what the judge calls in flight may hold plus
        one more such batch ready behind them (the engine cannot use more at once), and at least one request's."""
        default = max(self.max_batch_pixels * (self.concurrent_batches + 1), self.max_request_pixels)
        return self.max_held_pixels or default

    @property
    def drain_s(self) -> float:
        return self.drain_timeout_s or self.request_timeout_s
