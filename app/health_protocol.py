"""Wire schema of `GET /health`: pools, queue and decoded-pixel budget, and whether any of them is full."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class PoolState(BaseModel):
    size: int = Field(..., description="Slots (threads, download slots).")
    busy: int = Field(..., description="Slots in use: the pool is saturated when this equals size.")
    waiting: int = Field(..., description="Tasks waiting for a slot.")


class QueueState(BaseModel):
    pairs: int = Field(..., description="Pairs waiting for a judge call.")
    limit: int = Field(..., description="--max-queue: past it requests get 503 + Retry-After.")


class PixelState(BaseModel):
    limit: int = Field(..., description="Decoded pixels all requests may hold together (--max-held-pixels).")
    held: int
    waiting: int = Field(..., description="Requests waiting for that budget.")


class HealthResponse(BaseModel):
    """200 whether saturated or not, so a liveness probe does not restart a server that is only busy; read `status`
    for readiness."""

    status: Literal["ok", "saturated"]
    saturated: list[str] = Field(..., description="What is full: pool names, 'queue', 'pixels'.")
    pools: dict[str, PoolState] = Field(..., description="work, decode and downloads.")
    queue: QueueState
    pixels: PixelState
