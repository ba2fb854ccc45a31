"""When to send an HTTP request again and how long to wait first: one policy for every client of ours, the trainer
adapters' reward client and the `openai` backend.

Retried: failures where the server never answered (connection refused or reset, a dropped connection) and answers
that say "later" (408, 429, 500, 502, 503, 504). Judging and generating have no side effects, so sending again is
safe. Not retried: read timeouts (after waiting the whole timeout for a busy server, retrying would only multiply the
wait) and every other status (a malformed request stays malformed). The wait is the server's Retry-After when it
gives one (seconds, capped, so a bad header cannot stall training), else an exponential backoff with jitter, so many
workers refused at once do not come back at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
RETRY_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)
Outcome = httpx.Response | httpx.HTTPError  # what one try ended with
# Jitter from the OS, not the global generator: trainers seed that alike on every rank, which would send ranks
# refused together back together.
_JITTER = random.SystemRandom()


@dataclass(frozen=True)
class RetryPolicy:
    """`retries` tries after the first; waits from `backoff_s`, doubling per retry (times 0.5 to 1.5 at random)."""

    retries: int = 2
    backoff_s: float = 1.0
    max_retry_after_s: float = 30.0

    @property
    def tries(self) -> int:
        return self.retries + 1

    def retryable(self, outcome: Outcome) -> bool:
        if isinstance(outcome, httpx.Response):
            return outcome.status_code in RETRY_STATUS
        return isinstance(outcome, RETRY_ERRORS)

    def delay_s(self, retry: int, outcome: Outcome) -> float:
        """Seconds to wait before retry number `retry` (1 for the first)."""
        if isinstance(outcome, httpx.Response) and "retry-after" in outcome.headers:
            try:  # only the delta-seconds form; an HTTP-date falls back to the backoff
                seconds = float(outcome.headers["retry-after"])
            except ValueError:
                seconds = math.nan
            if not math.isnan(seconds):  # 'nan' parses as a float but is no delay (time.sleep refuses it)
                return min(max(seconds, 0.0), self.max_retry_after_s)
        return self.backoff_s * 2 ** (retry - 1) * _JITTER.uniform(0.5, 1.5)


def _describe(outcome: Outcome) -> str:
    if isinstance(outcome, httpx.Response):
        return f"HTTP {outcome.status_code}"
    return f"{type(outcome).__name__}: {outcome}"


def send(policy: RetryPolicy, attempt: Callable[[], httpx.Response]) -> tuple[Outcome, int]:
    """Call `attempt` (one request) until its outcome is not worth retrying or the tries run out: (the last outcome,
    the tries made). The caller decides what an error status or a transport error means to it."""
    tries = 0
    while True:
        tries += 1
        outcome: Outcome
        try:
            outcome = attempt()
        except httpx.HTTPError as e:
            outcome = e
        if tries >= policy.tries or not policy.retryable(outcome):
            return outcome, tries
        wait = policy.delay_s(tries, outcome)
        log.info("retrying in %.2f s after %s", wait, _describe(outcome))
        time.sleep(wait)


async def asend(policy: RetryPolicy, attempt: Callable[[], Awaitable[httpx.Response]]) -> tuple[Outcome, int]:
    """Async twin of `send`."""
    tries = 0
    while True:
        tries += 1
        outcome: Outcome
        try:
            outcome = await attempt()
        except httpx.HTTPError as e:
            outcome = e
        if tries >= policy.tries or not policy.retryable(outcome):
            return outcome, tries
        wait = policy.delay_s(tries, outcome)
        log.info("retrying in %.2f s after %s", wait, _describe(outcome))
        await asyncio.sleep(wait)
