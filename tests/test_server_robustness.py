"""The reward server under real clients, load, faults, shutdown and hostile input.

- OpenRLHF 0.11.2's own `SingleTurnAgentExecutor._fetch_rewards_via_http`, unmodified, against real uvicorn on
  127.0.0.1 (integration.md §8: loaded from the installed wheel without importing `openrlhf.utils`, which pulls torch).
- Load: hundreds of concurrent single-item requests, none lost, batched (seen in /metrics); a saturated queue
  answers 503 + Retry-After and everything it accepted 200.
- Faults: a backend that raises, fails some conversations, or is slower than `request_timeout_s`.
- Graceful shutdown: requests in flight when uvicorn is told to exit are all answered.
- Property-based fuzzing of every JSON route: never a 500.

Every server listens on 127.0.0.1 only; every request loop is bounded in count and time.
Needs (besides the project): hypothesis, httpx, aiohttp, and `pip install "openrlhf==0.11.2" --no-deps`.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import importlib.metadata
import importlib.util
import io
import json
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from prometheus_client.parser import text_string_to_metric_families

from app.server import build_app
from app.settings import ServerSettings
from rm.backends.base import Conversation, Generation, TokenLogprob
from rm.config import JudgeConfig, SamplingConfig
from rm.judge import Judge
from tests.conftest import LoopbackServer
from tests.scripted import ScriptedBackend, all_text

# ----------------------------------------------------------------------------------------------------------------
# Shared pieces: a PNG data URL, OpenRLHF-shaped payloads, a referee backend whose verdicts are known in advance.


def png_data_url(size: tuple[int, int] = (32, 24), seed: int = 0) -> str:
    img = Image.new("RGB", size, (40 + 50 * seed % 200, 120, 200))
    ImageDraw.Draw(img).ellipse([4, 4, size[0] // 2, size[1] // 2], fill=(250, 160, 40))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


IMAGE = png_data_url()
IMAGE_2 = png_data_url((24, 24), seed=3)
IMAGE_PADS = "<|image_pad|>" * 24  # OpenRLHF decodes the expanded placeholder: one pad per visual token


def chat_prompt(i: int) -> str:
    """A Qwen chat-templated VLM prompt, as OpenRLHF sends it in `prompts`."""
    return (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n<|vision_start|>{IMAGE_PADS}<|vision_end|>"
        f"What colour is the ball in picture #{i}?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def response_text(i: int, good: bool) -> str:
    return f"Answer #{i}: the ball is {'orange' if good else 'purple'}. {'GOOD' if good else 'BAD'}"


def query_text(i: int, good: bool) -> str:
    """OpenRLHF's `query`: prompt + response decoded with special tokens kept."""
    return chat_prompt(i) + response_text(i, good) + "<|im_end|>\n<|endoftext|>"


def label_for(i: int, images: Sequence[str] = (IMAGE,)) -> dict[str, Any]:
    return {"reference": f"Reference #{i}: an orange ball.", "images": list(images)}


def reward_body(indices: Sequence[int], good: Callable[[int], bool] = lambda i: i % 2 == 0) -> dict[str, Any]:
    return {
        "query": [query_text(i, good(i)) for i in indices],
        "prompts": [chat_prompt(i) for i in indices],
        "labels": [json.dumps(label_for(i)) for i in indices],
    }


GOOD_P = 0.9  # the referee's confidence in the letter it picks: rewards are 0.9 (GOOD) and 0.1 (BAD) exactly
_PAIR = re.compile(r"\[Response A\]\n(.*?)\n\[End of Response A\].*?\[Response B\]\n(.*?)\n\[End of Response B\]", re.S)


def referee(conv: Conversation) -> str:
    """Prefers the candidate marked GOOD (or the one not marked BAD), in whichever position it is shown.

    Both candidates must carry the same '#n': a pair whose response and reference were mixed up between requests
    gets an unparsable reply, so misalignment shows up as a neutral reward, never as a plausible one.
    """
    m = _PAIR.search(all_text(conv))
    if not m:
        return "I cannot tell."
    a, b = m.groups()
    if re.findall(r"#(\d+)", a) != re.findall(r"#(\d+)", b):
        return "These two answers are about different questions."
    winner = "A" if "GOOD" in a or "BAD" in b else "B"
    return f"Analysis: one answer names the right colour.\nJustification: it matches the picture.\nWinner: [[{winner}]]"


class Referee(ScriptedBackend):
    """ScriptedBackend whose chosen verdict letter carries probability GOOD_P (the other letter 1 - GOOD_P), so
    both presentation orders agree on p_a. Optional per-call delay, failures and hooks for fault tests."""

    def __init__(self, respond: Callable[[Conversation], str | Exception] = referee, delay_s: float = 0.0) -> None:
        super().__init__(respond)
        self.delay_s = delay_s
        self.active = 0  # backend calls in progress
        self.started: list[float] = []  # time.monotonic() at the start of each call

    async def agenerate(self, conversations: Sequence[Conversation], sampling: SamplingConfig) -> list[Generation]:
        self.active += 1
        self.started.append(time.monotonic())
        try:
            await self.before(conversations)
            return await super().agenerate(conversations, sampling)
        finally:
            self.active -= 1

    async def before(self, conversations: Sequence[Conversation]) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)

    def _tokens(self, text: str) -> list[TokenLogprob]:
        hi, lo = math.log(GOOD_P), math.log(1 - GOOD_P)
        out = []
        for ch in text:
            if ch in "AB":
                other = "B" if ch == "A" else "A"
                out.append(TokenLogprob(ch, hi, {ch: hi, other: lo}))
            else:
                out.append(TokenLogprob(ch, 0.0, {ch: 0.0}))
        return out


def scripted_app(backend, **settings: Any):
    """The server over a 'direct' judge on a scripted backend (the server forces both orders for rewards)."""
    return build_app(Judge(JudgeConfig(model="x", judge="direct"), backend=backend), ServerSettings(**settings))


def expected_reward(i: int, good: Callable[[int], bool] = lambda i: i % 2 == 0) -> float:
    return GOOD_P if good(i) else 1 - GOOD_P


def metric_samples(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(base_url + "/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON


async def post_all(
    base_url: str, path: str, bodies: Sequence[dict], *, connections: int, timeout_s: float = 60.0
) -> list[Reply]:
    """POST every body concurrently over at most `connections` connections; the whole burst is bounded in time.

    aiohttp, like OpenRLHF: httpx.AsyncClient's pool costs several ms of client CPU per request at this
    concurrency, which in one process starves the server thread and hides its batching."""
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one(body: dict) -> Reply:
            async with session.post(path, json=body) as r:
                return Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, await r.json(content_type=None))

        return await asyncio.wait_for(asyncio.gather(*(one(b) for b in bodies)), timeout_s)


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def assert_reward_shape(answer: dict, n: int) -> None:
    """What OpenRLHF reads: `rewards`, `scores`, `extra_logs` lists aligned with `query`, plain finite floats."""
    assert len(answer["rewards"]) == n and len(answer["scores"]) == n
    assert isinstance(answer["extra_logs"], dict) and "judge_valid" in answer["extra_logs"]
    for name, values in [("rewards", answer["rewards"]), ("scores", answer["scores"]), *answer["extra_logs"].items()]:
        assert len(values) == n, name
        assert all(isinstance(x, float) and math.isfinite(x) for x in values), (name, values)
    assert all(0.0 <= x <= 1.0 for x in answer["scores"])
    assert set(answer["extra_logs"]["judge_valid"]) <= {0.0, 1.0}


# ----------------------------------------------------------------------------------------------------------------
# 1. OpenRLHF's own client, unmodified


@pytest.fixture(scope="module")
def openrlhf_agent():
    """openrlhf/utils/agent.py from the installed 0.11.2 wheel, loaded without executing openrlhf/utils/__init__.py
    (which imports torch, transformers, sympy): its one package import, logging_utils (stdlib only), is registered
    in sys.modules first, so `from openrlhf.utils.logging_utils import init_logger` resolves without the parents."""
    try:
        dist = importlib.metadata.distribution("openrlhf")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail('OpenRLHF\'s client is a test dependency: pip install "openrlhf==0.11.2" --no-deps aiohttp')
    assert dist.version == "0.11.2", f"these tests pin OpenRLHF's 0.11.2 client, found {dist.version}"
    root = Path(str(dist.locate_file("openrlhf")))
    names = ("openrlhf.utils.logging_utils", "_deltarubric_openrlhf_agent")
    saved = {name: sys.modules.get(name) for name in names}
    before = set(sys.modules)

    def load(name: str, path: Path):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before executing, as a normal import would
        spec.loader.exec_module(module)
        return module

    load(names[0], root / "utils" / "logging_utils.py")
    agent = load(names[1], root / "utils" / "agent.py")
    newly_imported = set(sys.modules) - before
    yield agent, newly_imported
    for name, module in saved.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module


def fetch_rewards(agent, url: str, queries: list[str], prompts: list[str], labels: list[str]) -> list[dict]:
    executor = agent.SingleTurnAgentExecutor(url + "/get_reward")
    return asyncio.run(asyncio.wait_for(executor._fetch_rewards_via_http(queries, prompts, labels), 60))


def test_openrlhf_client_against_the_tiny_model_server(openrlhf_agent, tiny_server):
    agent, newly_imported = openrlhf_agent
    # Loading agent.py did not run openrlhf/__init__.py or openrlhf/utils/__init__.py (torch, transformers, ...):
    # the only openrlhf module it brought in is the stdlib-only logging_utils registered by hand.
    assert newly_imported.isdisjoint({"openrlhf", "openrlhf.utils"}), sorted(newly_imported)
    assert [m for m in newly_imported if m.startswith("openrlhf")] == ["openrlhf.utils.logging_utils"]
    assert agent.SingleTurnAgentExecutor.__module__ == "_deltarubric_openrlhf_agent"
    body = reward_body([0])
    answers = fetch_rewards(agent, tiny_server.url, body["query"], body["prompts"], body["labels"])
    assert isinstance(answers, list) and len(answers) == 1  # one response dict per endpoint shard
    (answer,) = answers
    assert_reward_shape(answer, 1)
    # OpenRLHF 0.11 stores `scores` (falling back to `rewards`) per sample; both must be there and equal here.
    assert answer["scores"] == answer["rewards"]
    # The tiny model writes noise: either a verdict was parsed or the reward is neutral and flagged.
    if answer["extra_logs"]["judge_valid"] == [0.0]:
        assert answer["rewards"] == [0.5]


def test_openrlhf_client_gets_aligned_rewards_single_and_batched(openrlhf_agent):
    agent, _ = openrlhf_agent
    with LoopbackServer(scripted_app(Referee())) as server:
        # <=0.9.0 style: several samples in one request.
        body = reward_body(range(5))
        (answer,) = fetch_rewards(agent, server.url, body["query"], body["prompts"], body["labels"])
        assert_reward_shape(answer, 5)
        assert answer["rewards"] == pytest.approx([expected_reward(i) for i in range(5)])
        assert answer["extra_logs"]["judge_valid"] == [1.0] * 5

        # >=0.9.1 style: one request per rollout, many at once, one executor (round-robin over one endpoint).
        executor = agent.SingleTurnAgentExecutor(server.url + "/get_reward")

        async def rollouts():
            bodies = [reward_body([i]) for i in range(10, 22)]
            calls = [executor._fetch_rewards_via_http(b["query"], b["prompts"], b["labels"]) for b in bodies]
            return await asyncio.wait_for(asyncio.gather(*calls), 60)

        for i, (answer,) in zip(range(10, 22), asyncio.run(rollouts()), strict=True):
            assert answer["rewards"] == pytest.approx([expected_reward(i)])
            assert answer["extra_logs"]["judge_valid"] == [1.0]


class FailFirst:
    """ASGI wrapper: the first /get_reward is answered 503 before the app sees it; everything else passes."""

    def __init__(self, app: Any, status: int = 503) -> None:
        self.app, self.status, self.hits = app, status, 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/get_reward":
            self.hits += 1
            if self.hits == 1:
                error = {"message": "warming up", "type": "overloaded", "param": None, "code": self.status}
                body = json.dumps({"error": error}).encode()
                headers = [
                    (b"content-type", b"application/json"),
                    (b"retry-after", b"1"),
                    (b"content-length", str(len(body)).encode()),
                ]
                await send({"type": "http.response.start", "status": self.status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def test_openrlhf_client_retries_a_503_and_succeeds(openrlhf_agent):
    agent, _ = openrlhf_agent
    wrapped = FailFirst(scripted_app(Referee()))
    with LoopbackServer(wrapped) as server:
        body = reward_body([7], good=lambda i: True)
        t0 = time.monotonic()
        (answer,) = fetch_rewards(agent, server.url, body["query"], body["prompts"], body["labels"])
        elapsed = time.monotonic() - t0
    assert wrapped.hits == 2  # the 503, then the retry
    assert 1.0 <= elapsed < 10  # OpenRLHF sleeps 1 s between attempts
    assert answer["rewards"] == pytest.approx([GOOD_P]) and answer["extra_logs"]["judge_valid"] == [1.0]


def test_openrlhf_client_rides_out_a_saturated_queue(openrlhf_agent):
    """Queue of 2 pairs, slow backend, 6 rollouts at once: some are refused 503 at first, OpenRLHF retries them
    after 1 s, and every rollout ends with its own correct reward (none silently None)."""
    agent, _ = openrlhf_agent
    app = scripted_app(Referee(delay_s=0.1), max_queue=2, max_batch=2, batch_window_ms=0)
    with LoopbackServer(app) as server:
        executor = agent.SingleTurnAgentExecutor(server.url + "/get_reward")

        async def rollouts():
            bodies = [reward_body([i]) for i in range(6)]
            calls = [executor._fetch_rewards_via_http(b["query"], b["prompts"], b["labels"]) for b in bodies]
            return await asyncio.wait_for(asyncio.gather(*calls), 30)

        answers = asyncio.run(rollouts())
        samples = metric_samples(server.url)
    assert [r for (a,) in answers for r in a["rewards"]] == pytest.approx([expected_reward(i) for i in range(6)])
    assert metric(samples, "deltarubric_saturated_total") >= 1  # the queue really was full at some point
    assert metric(samples, "deltarubric_requests_total", route="/get_reward", status="200") == 6


# ----------------------------------------------------------------------------------------------------------------
# 2. Load


def test_hundreds_of_concurrent_single_item_requests_none_lost_and_batched():
    n = 400
    backend = Referee(delay_s=0.005)
    with LoopbackServer(scripted_app(backend)) as server:
        t0 = time.monotonic()
        bodies = [reward_body([i]) for i in range(n)]
        replies = asyncio.run(post_all(server.url, "/get_reward", bodies, connections=128))
        elapsed = time.monotonic() - t0
        samples = metric_samples(server.url)
    assert len(replies) == n  # every request answered
    statuses = {r.status for r in replies}
    assert statuses <= {200, 503}, sorted(statuses)  # no 5xx but the documented 503...
    assert all(r.headers.get("retry-after") for r in replies if r.status == 503)  # ...which says when to retry
    ok = [i for i, r in enumerate(replies) if r.status == 200]
    assert len(ok) == n  # the default queue (1024 pairs) is far from full here
    for i in ok:
        assert_reward_shape(replies[i].body, 1)
        assert replies[i].body["rewards"] == pytest.approx([expected_reward(i)]), i
        assert replies[i].body["extra_logs"]["judge_valid"] == [1.0]
    # Batching, seen in /metrics: every pair judged exactly once, in far fewer judge calls than pairs.
    batches = metric(samples, "deltarubric_batch_size_count")
    assert metric(samples, "deltarubric_batch_size_sum") == n
    assert 1 <= batches <= n / 4, batches
    assert len(backend.calls) == batches
    assert max(len(c) for c in backend.calls) >= 2 * 8  # some call carried 8+ pairs (2 conversations per pair)
    assert metric(samples, "deltarubric_requests_total", route="/get_reward", status="200") == n
    assert metric(samples, "deltarubric_queue_depth") == 0
    assert elapsed < 30


def test_concurrent_requests_on_the_tiny_model_are_batched(tiny_server):
    n = 12
    before = metric_samples(tiny_server.url)
    bodies = [reward_body([1000 + i]) for i in range(n)]  # ids unused elsewhere: no cache hits from other tests
    replies = asyncio.run(post_all(tiny_server.url, "/get_reward", bodies, connections=n))
    after = metric_samples(tiny_server.url)
    assert [r.status for r in replies] == [200] * n
    for r in replies:
        assert_reward_shape(r.body, 1)
    pairs = metric(after, "deltarubric_batch_size_sum") - metric(before, "deltarubric_batch_size_sum")
    batches = metric(after, "deltarubric_batch_size_count") - metric(before, "deltarubric_batch_size_count")
    assert pairs == n and 1 <= batches < n


def test_saturated_queue_answers_503_with_retry_after_and_serves_the_rest():
    n = 40
    app = scripted_app(Referee(delay_s=0.15), max_queue=4, max_batch=2, batch_window_ms=0)
    with LoopbackServer(app) as server:
        replies = asyncio.run(post_all(server.url, "/get_reward", [reward_body([i]) for i in range(n)], connections=n))
        samples = metric_samples(server.url)
        # Once the burst is over the server takes work again.
        after = httpx.post(server.url + "/get_reward", json=reward_body([99]), timeout=30)
    assert len(replies) == n
    refused = [r for r in replies if r.status == 503]
    served = [(i, r) for i, r in enumerate(replies) if r.status == 200]
    assert len(refused) + len(served) == n, sorted({r.status for r in replies})
    assert refused and len(served) >= 4
    for r in refused:
        assert r.headers["retry-after"] == "1"
        assert r.body["error"]["type"] == "overloaded" and r.body["error"]["code"] == 503
    for i, r in served:
        assert r.body["rewards"] == pytest.approx([expected_reward(i)])
    assert metric(samples, "deltarubric_saturated_total") == len(refused)
    assert metric(samples, "deltarubric_requests_total", route="/get_reward", status="503") == len(refused)
    assert after.status_code == 200 and after.json()["rewards"] == pytest.approx([expected_reward(99)])


# ----------------------------------------------------------------------------------------------------------------
# 3. Faults


def judge_body(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {
        "requests": [
            {"id": f"p{k}", "task_type": "text", "question": f"Which is right, #{k}?", "a": a, "b": b}
            for k, (a, b) in enumerate(pairs)
        ]
    }


class FailingCalls(Referee):
    """Raises on the given (1-based) backend calls: an engine crash for the whole batch."""

    def __init__(self, fail_calls: set[int]) -> None:
        super().__init__()
        self.fail_calls, self.n = fail_calls, 0

    async def before(self, conversations: Sequence[Conversation]) -> None:
        self.n += 1
        if self.n in self.fail_calls:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_backend_crash_on_a_batch_gives_neutral_rewards_and_error_verdicts_then_recovers():
    backend = FailingCalls({1, 2})
    with TestClient(scripted_app(backend, batch_window_ms=0)) as client:
        r = client.post("/get_reward", json=reward_body([0]))  # call 1 crashes
        assert r.status_code == 200
        answer = r.json()
        assert_reward_shape(answer, 1)
        assert answer["rewards"] == [0.5] and answer["extra_logs"]["judge_valid"] == [0.0]
        assert answer["extra_logs"]["judge_timeout"] == [0.0]

        pair = ("Answer #3: GOOD", "Answer #3: BAD")
        r = client.post("/v1/judge", json=judge_body([pair]))  # call 2 crashes
        assert r.status_code == 200
        (verdict,) = r.json()["results"]
        assert verdict["winner"] is None and "illegal memory access" in verdict["error"]

        # The failures were not cached: the same requests now get real verdicts.
        r = client.post("/get_reward", json=reward_body([0]))
        assert r.json()["rewards"] == pytest.approx([GOOD_P]) and r.json()["extra_logs"]["judge_valid"] == [1.0]
        (verdict,) = client.post("/v1/judge", json=judge_body([pair])).json()["results"]
        assert verdict["winner"] == "A" and verdict["error"] is None
        text = client.get("/metrics").text
    assert re.search(r"^deltarubric_judge_errors_total 2\.0$", text, re.M)


def poison_aware(conv: Conversation) -> str | Exception:
    """Generation(error=...) for conversations mentioning POISON (an engine failing some sequences of a batch)."""
    return RuntimeError("sequence aborted: KV cache exhausted") if "POISON" in all_text(conv) else referee(conv)


def test_some_conversations_failing_mid_batch_affect_only_their_items():
    backend = Referee(poison_aware)
    poisoned = {1, 4}
    with TestClient(scripted_app(backend, batch_window_ms=0)) as client:
        body = reward_body(range(6))
        for k in poisoned:
            body["labels"][k] = json.dumps({**label_for(k), "reference": f"Reference #{k}: POISON"})
        r = client.post("/get_reward", json=body)
        assert r.status_code == 200
        assert len(backend.calls) == 1 and len(backend.calls[0]) == 12  # one batch: 6 pairs x 2 orders
        answer = r.json()
        assert_reward_shape(answer, 6)
        for i in range(6):
            bad = i in poisoned
            assert answer["extra_logs"]["judge_valid"][i] == (0.0 if bad else 1.0)
            assert answer["rewards"][i] == pytest.approx(0.5 if bad else expected_reward(i))

        pairs = [
            ("Answer #0: GOOD", "Answer #0: x"),
            ("Answer #1: POISON", "Answer #1: GOOD"),
            ("Answer #2: BAD", "Answer #2: y"),
        ]
        r = client.post("/v1/judge", json=judge_body(pairs))
        assert r.status_code == 200
        results = r.json()["results"]
        assert [v["id"] for v in results] == ["p0", "p1", "p2"]
        assert [v["winner"] for v in results] == ["A", None, "B"]
        assert results[1]["error"] and "KV cache exhausted" in results[1]["error"]
        assert results[0]["error"] is None and results[2]["error"] is None

        items = [
            {"question": f"Colour #{k}?", "images": [IMAGE], "response": f"Answer #{k}: GOOD",
             "reference": f"Reference #{k}" + (" POISON" if k == 1 else "")}
            for k in range(3)
        ]  # fmt: skip
        r = client.post("/v1/rewards", json={"mode": "reference", "items": items})
        assert r.status_code == 200
        assert r.json()["valid"] == [True, False, True]
        assert r.json()["rewards"] == pytest.approx([GOOD_P, 0.5, GOOD_P])

        # Clean work after the failures is judged normally.
        r = client.post("/get_reward", json=reward_body([10, 11]))
        assert r.json()["rewards"] == pytest.approx([expected_reward(10), expected_reward(11)])


class SlowOnMarker(Referee):
    """Backend calls with a SLOW conversation take `slow_s`; others are instant."""

    def __init__(self, slow_s: float) -> None:
        super().__init__()
        self.slow_s = slow_s
        self.finished_slow = 0  # slow calls that ran to the end

    async def before(self, conversations: Sequence[Conversation]) -> None:
        if any("SLOW" in all_text(c) for c in conversations):
            await asyncio.sleep(self.slow_s)
            self.finished_slow += 1


def test_backend_slower_than_the_request_timeout():
    backend = SlowOnMarker(slow_s=0.8)
    app = scripted_app(backend, request_timeout_s=0.25, batch_window_ms=0)
    with LoopbackServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        body = reward_body([5], good=lambda i: True)
        body["labels"][0] = json.dumps({**label_for(5), "reference": "Reference #5: SLOW"})
        t0 = time.monotonic()
        r = client.post("/get_reward", json=body)
        assert time.monotonic() - t0 < 0.7  # answered at the deadline, not when the backend finishes
        assert r.status_code == 200
        answer = r.json()
        assert_reward_shape(answer, 1)
        assert answer["rewards"] == [0.5] and answer["extra_logs"]["judge_valid"] == [0.0]
        assert answer["extra_logs"]["judge_timeout"] == [1.0]

        wait_until(lambda: backend.active == 0, 5, "the slow call to end")
        slow_pair = ("Answer #6: GOOD SLOW", "Answer #6: BAD")
        r = client.post("/v1/judge", json=judge_body([slow_pair]))
        assert r.status_code == 504
        err = r.json()["error"]
        assert err["type"] == "timeout" and err["code"] == 504

        wait_until(lambda: backend.active == 0, 5, "the slow call to end")
        item = {"question": "q #7?", "images": [IMAGE], "response": "#7 SLOW GOOD", "reference": "#7 ref"}
        r = client.post("/v1/rewards", json={"items": [item]})
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout"

        # The server keeps serving: once the slow calls are over, new work is judged correctly...
        wait_until(lambda: backend.active == 0, 5, "the slow call to end")
        r = client.post("/get_reward", json=reward_body([8, 9]))
        assert r.status_code == 200
        assert r.json()["rewards"] == pytest.approx([expected_reward(8), expected_reward(9)])
        assert r.json()["extra_logs"]["judge_timeout"] == [0.0, 0.0]
        # ...and no judge call outlived its requests: each slow one was cancelled at the timeout, not finished for
        # nobody (a local engine would otherwise stay busy), and nothing it might have said was cached.
        assert metric(metric_samples(server.url), "deltarubric_cancelled_judge_calls_total") == 3
        assert backend.finished_slow == 0


class HangsOnce(Referee):
    """The first backend call never returns on its own (a wedged engine); it is released at the end of the test."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.n = 0

    async def before(self, conversations: Sequence[Conversation]) -> None:
        self.n += 1
        if self.n == 1:
            deadline = time.monotonic() + 20  # bounded, so a failing test cannot hang the suite
            while not self.release.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)


def test_a_wedged_backend_call_does_not_stop_later_requests_being_judged():
    backend = HangsOnce()
    app = scripted_app(backend, request_timeout_s=0.3, batch_window_ms=0)
    with LoopbackServer(app) as server:
        try:
            first = httpx.post(server.url + "/get_reward", json=reward_body([0]), timeout=10).json()
            assert first["extra_logs"]["judge_timeout"] == [1.0]
            later = httpx.post(server.url + "/get_reward", json=reward_body([1]), timeout=10).json()
        finally:
            backend.release.set()
    assert later["extra_logs"]["judge_timeout"] == [0.0]
    assert later["rewards"] == pytest.approx([expected_reward(1)])


def test_chat_completions_backend_crash_is_a_json_error():
    def crash(conv):
        raise RuntimeError("engine died")

    with TestClient(scripted_app(ScriptedBackend(crash)), raise_server_exceptions=False) as client:
        body = {"model": "judge", "messages": [{"role": "user", "content": "hi"}]}
        r = client.post("/v1/chat/completions", json=body)
        text = client.get("/metrics").text
    assert r.status_code >= 500
    assert r.headers["content-type"].startswith("application/json"), r.text
    assert r.json()["error"]["code"] == r.status_code
    assert 'route="/v1/chat/completions",status="500"' in text


# ----------------------------------------------------------------------------------------------------------------
# 4. Graceful shutdown


def test_graceful_shutdown_answers_every_request_in_flight():
    n = 6
    backend = Referee(delay_s=0.3)
    app = scripted_app(backend, max_batch=2, batch_window_ms=0)
    server = LoopbackServer(app)
    results: list[Any] = []
    with server:
        bodies = [reward_body([i]) for i in range(n)]
        burst = lambda: post_all(server.url, "/get_reward", bodies, connections=n, timeout_s=20)  # noqa: E731
        sender = threading.Thread(target=lambda: results.append(asyncio.run(burst())))
        sender.start()
        batcher = app.state.server.reward_batcher
        # Every pair accepted (waiting in the queue or being judged) and the first judge call under way.
        wait_until(lambda: len(batcher._inflight) == n and backend.active == 1, 10, "all requests to be in flight")
        server.server.should_exit = True
        shutdown_at = time.monotonic()
        sender.join(timeout=20)
        server.thread.join(timeout=20)
        assert not sender.is_alive() and not server.thread.is_alive()
    (replies,) = results
    assert [r.status for r in replies] == [200] * n
    assert [x for r in replies for x in r.body["rewards"]] == pytest.approx([expected_reward(i) for i in range(n)])
    assert sum(map(len, backend.calls)) == 2 * n  # each pair judged once, in both orders
    assert any(t > shutdown_at for t in backend.started)  # queued pairs were judged after shutdown began
    with pytest.raises(httpx.ConnectError):  # and the port is closed now
        httpx.post(server.url + "/get_reward", json=reward_body([0]), timeout=5)


# ----------------------------------------------------------------------------------------------------------------
# 5. Bad input: property-based fuzzing (never a 500) and explicit regressions

# Any code point, NUL and lone surrogates included: both once gave 500s (regressions below).
TEXT = st.text(st.characters(), max_size=16)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT  # floats include NaN and ±inf
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12
)
INTERESTING = st.sampled_from(
    [
        "", " ", "judge", "text", "image_generation", "video_understanding", "group", "reference", "bradley_terry",
        "data:image/png;base64,", "data:image/png;base64,AAAA", "data:image/png,abc", "data:,", IMAGE[:60],
        IMAGE, "file:///etc/passwd", "../../../etc/passwd", "/etc/hostname", "http://127.0.0.1:1/x.png",
        "https://example.invalid/a.png", "<|im_start|>assistant\n", "<|im_end|>", "<|vision_start|><|image_pad|>",
        "x" * 5000, '{"reference": "r"}', '{"reference": ""}', "[1, 2]", "null", "1e999", "NaN",
    ]
)
FIELD_NAMES = st.sampled_from(
    ["query", "prompts", "labels", "reference", "images", "task_type", "question", "requests", "id", "a", "b",
     "text", "image", "video", "videos", "items", "mode", "group_id", "response", "model", "messages", "role",
     "content", "type", "image_url", "url", "logprobs", "top_logprobs", "n", "stream", "max_tokens", "seed", "extra"]
)  # fmt: skip

UNDERSTANDING_PAIR = {
    "id": "s0", "task_type": "image_understanding", "question": "Which colour?", "images": [IMAGE],
    "a": "Answer #1: GOOD", "b": {"text": "Answer #1: BAD"}, "reference": "orange",
}  # fmt: skip
GENERATION_PAIR = {
    "id": "s1", "task_type": "image_generation", "question": "an orange ball",
    "a": {"image": IMAGE}, "b": {"image": IMAGE_2},
}  # fmt: skip
REFERENCE_ITEM = {
    "id": "r0", "question": "Colour #2?", "images": [IMAGE], "response": "Answer #2: GOOD", "reference": "Reference #2",
}  # fmt: skip
GROUP_ITEMS = [
    {"group_id": "g", "task_type": "text", "question": "Colour #3?", "response": f"Answer #3: {w}"}
    for w in ("GOOD", "BAD", "meh")
]
USER_TURN = {
    "role": "user",
    "content": [{"type": "image_url", "image_url": {"url": IMAGE}}, {"type": "text", "text": "Colour?"}],
}
VALID = {
    "/get_reward": [
        reward_body([0, 1]),
        {"query": [query_text(2, True)], "labels": [label_for(2, [IMAGE, IMAGE_2])]},  # labels as objects, no prompts
    ],
    "/v1/judge": [{"requests": [UNDERSTANDING_PAIR, GENERATION_PAIR]}],
    "/v1/rewards": [
        {"mode": "reference", "items": [REFERENCE_ITEM]},
        {"mode": "group", "group_scoring": "bradley_terry", "items": GROUP_ITEMS},
    ],
    "/v1/chat/completions": [
        {"model": "judge", "max_tokens": 16, "temperature": 0.0, "logprobs": True, "top_logprobs": 2,
         "messages": [{"role": "system", "content": "Be brief."}, USER_TURN]},
    ],
}  # fmt: skip
ROUTES = list(VALID)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, prefix + (i,))
    return out


def _get(value: Any, path: tuple) -> Any:
    for k in path:
        value = value[k]
    return value


@st.composite
def near_valid(draw, route: str) -> Any:
    """A valid body with one to three mutations: a value replaced (random JSON or an interesting string), a key
    deleted, an unknown or known key added, a list element duplicated or dropped."""
    body: Any = copy.deepcopy(draw(st.sampled_from(VALID[route])))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(body)
        path = draw(st.sampled_from(paths[1:])) if len(paths) > 1 and draw(st.integers(0, 9)) else ()  # root: 1 in 10
        op = draw(st.sampled_from(["replace", "interesting", "delete", "add", "duplicate"]))
        target = _get(body, path)
        if op in ("replace", "interesting"):
            new = draw(JSON if op == "replace" else INTERESTING)
            if not path:
                body = new
            else:
                _get(body, path[:-1])[path[-1]] = new
        elif op == "delete" and path:
            del _get(body, path[:-1])[path[-1]]
        elif op == "add" and isinstance(target, dict):
            target[draw(FIELD_NAMES | TEXT)] = draw(JSON | INTERESTING)
        elif op == "duplicate" and isinstance(target, list):
            if target and draw(st.booleans()):
                target.append(copy.deepcopy(draw(st.sampled_from(target))))
            elif target:
                target.pop()
    labels = body.get("labels") if isinstance(body, dict) and route == "/get_reward" else None
    if isinstance(labels, list) and draw(st.booleans()):
        # OpenRLHF sends labels as JSON strings: serialise (possibly mutated) label objects.
        body["labels"] = [json.dumps(x) if isinstance(x, dict) else x for x in labels]
    return body


@pytest.fixture(scope="module")
def fuzz_client():
    """A fast scripted judge behind the full app (lifespan running), sharing one cache across examples."""
    with TestClient(scripted_app(Referee(), batch_window_ms=0), raise_server_exceptions=False) as client:
        yield client


def post_raw(
    client: TestClient, route: str, content: bytes, content_type: str | None = "application/json"
) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return client.post(route, content=content, headers=headers)


def check_answer(route: str, body: Any, r: httpx.Response) -> None:
    """Never a 5xx (the backend is fast and never fails here); errors in the JSON shape; answers well-formed."""
    assert r.status_code < 500, (r.status_code, r.text[:500])
    data = r.json()
    if r.status_code >= 400:
        assert isinstance(data["error"]["message"], str) and data["error"]["code"] == r.status_code, data
        return
    assert r.status_code == 200
    if route == "/get_reward":
        assert_reward_shape(data, len(body["query"]))
    elif route == "/v1/judge":
        assert len(data["results"]) == len(body["requests"])
        assert all(v["p_a"] is None or 0.0 <= v["p_a"] <= 1.0 for v in data["results"])
    elif route == "/v1/rewards":
        assert len(data["rewards"]) == len(data["valid"]) == len(body["items"])
        assert all(isinstance(x, float) and math.isfinite(x) for x in data["rewards"])
    else:
        assert data["object"] == "chat.completion" and isinstance(data["choices"][0]["message"]["content"], str)


FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("route", ROUTES)
def test_valid_bodies_are_served(fuzz_client, route):
    for body in VALID[route]:
        r = post_raw(fuzz_client, route, json.dumps(body).encode())
        assert r.status_code == 200, r.text
        check_answer(route, body, r)


@pytest.mark.parametrize("route", ROUTES)
@FUZZ
@given(data=st.data())
def test_fuzz_random_json_is_never_a_500(fuzz_client, route, data):
    body = data.draw(JSON | st.dictionaries(FIELD_NAMES, JSON, max_size=5), label="body")
    check_answer(route, body, post_raw(fuzz_client, route, json.dumps(body).encode()))


@pytest.mark.parametrize("route", ROUTES)
@FUZZ
@given(data=st.data())
def test_fuzz_near_valid_bodies_are_never_a_500(fuzz_client, route, data):
    body = data.draw(near_valid(route), label="body")
    check_answer(route, body, post_raw(fuzz_client, route, json.dumps(body).encode()))


@pytest.mark.parametrize("route", ROUTES)
@settings(max_examples=30, deadline=None, database=None)
@given(content=st.binary(max_size=200), content_type=st.sampled_from(["application/json", "text/plain", None]))
def test_fuzz_arbitrary_bytes_are_never_a_500(fuzz_client, route, content, content_type):
    r = post_raw(fuzz_client, route, content, content_type)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.json()["error"]["code"] == r.status_code


FORM = b'--x\r\nContent-Disposition: form-data; name="query"\r\n\r\nx\r\n--x--\r\n'
NON_JSON = [
    b"", b"not json", b"{", b'{"query": ["x"]', b"\xff\xfe\x00{", b"null", b"[]", b'"a string"', b"1e999", b"NaN",
    b"[" * 50_000 + b"]" * 50_000, b"query=x&labels=y", FORM,
]  # fmt: skip
CONTENT_TYPES = [
    "application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/json; charset=latin-1", None,
]  # fmt: skip


@pytest.mark.parametrize("route", ROUTES)
def test_non_json_bodies_and_wrong_content_types_are_4xx(fuzz_client, route):
    for content in NON_JSON:
        for content_type in CONTENT_TYPES:
            r = post_raw(fuzz_client, route, content, content_type)
            assert 400 <= r.status_code < 500, (content[:40], content_type, r.status_code, r.text[:200])
            assert r.json()["error"]["code"] == r.status_code
    # A valid body under a non-JSON content type is refused, not guessed at.
    r = post_raw(fuzz_client, route, json.dumps(VALID[route][0]).encode(), "text/plain")
    assert 400 <= r.status_code < 500
    # The wrong method is a JSON 405.
    r = fuzz_client.get(route)
    assert r.status_code == 405 and r.json()["error"]["code"] == 405


@pytest.mark.parametrize(
    "route, body",
    [
        ("/get_reward", {"query": [query_text(0, True).replace("orange", "or\x00ange")], "labels": [label_for(0)]}),
        ("/get_reward", {"query": [query_text(0, True)], "labels": [{"reference": "a\x00b", "images": [IMAGE]}]}),
        ("/v1/judge", {"requests": [{"task_type": "text", "question": "q\x00", "a": "x", "b": "y"}]}),
        ("/v1/rewards", {"items": [{"question": "q", "images": [IMAGE], "response": "r\x00", "reference": "x"}]}),
    ],
)
def test_nul_in_text_fields_is_a_400(fuzz_client, route, body):
    r = post_raw(fuzz_client, route, json.dumps(body).encode())
    assert r.status_code == 400 and "NUL" in r.json()["error"]["message"], r.text


# Inputs that once gave 500s, found while fuzzing this server; each a minimal reproduction.
_IMAGE_REF_REWARD = '{"query": ["<|im_start|>assistant\\nx"], "labels": [{"reference": "r", "images": [%s]}]}'
BUG_500 = [
    pytest.param(
        "/get_reward", _IMAGE_REF_REWARD % '"a\\u0000b.png"', id="nul-in-image-path",
    ),
    pytest.param(
        "/get_reward", _IMAGE_REF_REWARD % '"file://[x/a.png"', id="bad-ipv6-file-url",
    ),
    pytest.param(
        "/get_reward", _IMAGE_REF_REWARD % '"\\ud800.png"', id="surrogate-in-image-path",
    ),
    pytest.param(
        "/v1/judge", '{"requests": [{"id": "\\ud800", "task_type": "text", "question": "q", "a": "x", "b": "y"}]}',
        id="surrogate-in-echoed-id",
    ),
]  # fmt: skip


@pytest.mark.parametrize("route, raw", BUG_500)
def test_known_inputs_that_gave_500(fuzz_client, route, raw):
    r = post_raw(fuzz_client, route, raw.encode())
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:200])


def test_image_only_user_turn_is_scored_not_refused(fuzz_client):
    prompt = (
        "<|im_start|>system\nDescribe the picture in one sentence.<|im_end|>\n"
        f"<|im_start|>user\n<|vision_start|>{IMAGE_PADS}<|vision_end|><|im_end|>\n<|im_start|>assistant\n"
    )
    query = prompt + "Answer #4: an orange ball. GOOD<|im_end|>"
    body = {"query": [query], "prompts": [prompt], "labels": [json.dumps(label_for(4))]}
    r = post_raw(fuzz_client, "/get_reward", json.dumps(body).encode())
    assert r.status_code == 200, r.text[:200]
    assert_reward_shape(r.json(), 1)


def test_streamed_body_over_the_limit_is_413():
    app = scripted_app(Referee(), max_body_bytes=2048)

    def chunks():
        for _ in range(10):
            yield b" " * 1024

    with TestClient(app, raise_server_exceptions=False) as client:
        declared = client.post("/v1/judge", content=b" " * 4096, headers={"content-type": "application/json"})
        assert declared.status_code == 413  # with Content-Length: refused before reading
        r = client.post("/v1/judge", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text


def test_group_mode_pair_limit_is_checked_before_building_pairs(monkeypatch):
    import app.server as server_module

    real, built = server_module.JudgeRequest, []

    def counting(*args: Any, **kwargs: Any):
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(server_module, "JudgeRequest", counting)
    items = [{"group_id": "g", "task_type": "text", "question": "q", "response": f"r{i}"} for i in range(250)]
    with TestClient(scripted_app(Referee()), raise_server_exceptions=False) as client:
        r = client.post("/v1/rewards", json={"mode": "group", "items": items})
    assert r.status_code == 413
    limit = ServerSettings().max_pairs_per_request
    assert len(built) <= limit, f"{len(built)} pairs built to refuse a request over the {limit}-pair limit"
