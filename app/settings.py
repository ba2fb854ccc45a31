"""Server settings: limits, media policy, batching, auth. One typed object, shown by `deltarubric serve --help`."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from rm.media import DEFAULT_MAX_INPUT_PIXELS


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    served_model_name: str = "judge"
    api_key: str | None = Field(None, description="Bearer token required on every route but /health.")
    # micro-batching
    max_batch: int = Field(32, ge=1, description="Pairs per judge call, coalesced across concurrent requests.")
    batch_window_ms: float = Field(10.0, ge=0, description="How long the first queued pair waits for company.")
    max_queue: int = Field(1024, ge=1, description="Queued pairs beyond which requests get 503 + Retry-After.")
    concurrent_batches: int = Field(1, ge=1, description="Judge calls in flight (raise for remote backends).")
    request_timeout_s: float = Field(170.0, gt=0, description="Answer by then (OpenRLHF gives up at 180 s).")
    cache_size: int = Field(4096, ge=0, description="Verdicts remembered by request content; 0 turns it off.")
    # limits on input
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_pairs_per_request: int = Field(256, ge=1)
    max_images_per_request: int = Field(64, ge=0)
    max_input_pixels: int = Field(DEFAULT_MAX_INPUT_PIXELS, ge=1)
    # where media may come from: data URLs always; files only under these folders; http(s) only if allowed
    allowed_media_dirs: list[Path] = Field(default_factory=list)
    allow_http_media: bool = False
    allow_private_addresses: bool = Field(False, description="Let http(s) media resolve to loopback/private hosts.")
