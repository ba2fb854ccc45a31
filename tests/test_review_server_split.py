"""Review of the reward-server split and the shared retry policy (issue 13): regressions found, kept as tests.

Each test drives the real pieces: a reward server from `build_app` on a loopback port (as tests/conftest.py starts
one), the trainer adapters' `RewardClient`, and `rm.retry.RetryPolicy` as both clients use it.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest
from starlette.responses import Response

from deltarubric.app.server import build_app
from deltarubric.app.settings import ServerSettings
from deltarubric.rm.adapters.client import RewardClient
from deltarubric.rm.config import JudgeConfig
from deltarubric.rm.judge import Judge
from deltarubric.rm.retry import RetryPolicy
from tests.conftest import LoopbackServer
from tests.scripted import ScriptedBackend

ITEMS = [{"question": "How many cats?", "response": "Two cats.", "reference": "Three dogs."}]


class RefusesFirst:
    """ASGI wrapper: the first `refusals` posts to /v1/rewards get 503 with the given Retry-After; the rest reach
    the reward server."""

    def __init__(self, app: Any, retry_after: str, refusals: int = 1) -> None:
        self.app, self.retry_after, self.refusals = app, retry_after, refusals
        self.attempts = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/rewards":
            self.attempts += 1
            if self.attempts <= self.refusals:
                busy = Response(status_code=503, headers={"Retry-After": self.retry_after})
                return await busy(scope, receive, send)
        return await self.app(scope, receive, send)


def reward_server_app() -> Any:
    judge = Judge(
        JudgeConfig(model="scripted", judge="direct", sampling={"top_logprobs": 0}),
        backend=ScriptedBackend(lambda conv: "Winner: [[A]]"),
    )
    return build_app(judge, ServerSettings())


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_retry_after_that_is_not_a_number_falls_back_to_the_backoff(asynchronous: bool) -> None:
    # float() reads 'nan' as a number: the sync client then called time.sleep(nan), which raises ValueError out of
    # the trainer's reward call, while the async one retried at once. A Retry-After that is no delay is ignored like
    # any other unreadable one: both clients wait their backoff, retry, and get the rewards.
    front = RefusesFirst(reward_server_app(), retry_after="nan")
    with LoopbackServer(front) as server:
        client = RewardClient(server.url, retry=RetryPolicy(retries=2, backoff_s=0.01))
        rewards = asyncio.run(client.arewards(ITEMS)) if asynchronous else client.rewards(ITEMS)
    assert front.attempts == 2 and len(rewards) == 1
    assert RetryPolicy(backoff_s=1.0).delay_s(1, httpx.Response(503, headers={"Retry-After": "nan"})) >= 0.5


def test_backoff_jitter_differs_between_workers_seeded_alike() -> None:
    # Trainers seed Python's global `random` with the same seed on every data-parallel rank (transformers' set_seed),
    # and the ranks call their reward function together: jitter drawn from that generator gives every rank the same
    # waits, so workers refused at once come back at once, which the jitter is there to prevent.
    policy = RetryPolicy(backoff_s=1.0)
    waits = []
    for _rank in range(2):
        random.seed(1234)
        waits.append([policy.delay_s(retry, httpx.ConnectError("refused")) for retry in (1, 2, 3)])
    assert waits[0] != waits[1]
