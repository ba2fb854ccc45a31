"""The reward server under real clients, load, faults, shutdown and hostile input.

- OpenRLHF 0.11.2's own `SingleTurnAgentExecutor._fetch_rewards_via_http`, unmodified, against real uvicorn on
  127.0.0.1 (integration.md §8: loaded from the installed wheel without importing `openrlhf.utils`, which pulls torch).
- Load: hundreds of concurrent single-item requests, none lost, batched (seen in /metrics); a saturated queue
  answers 503 + Retry-After and everything it accepted 200.
- Faults: a backend that raises, fails some conversations, or is slower than `request_timeout_s`.
- Graceful shutdown: requests in flight when uvicorn is told to exit are all answered.
- Property-based fuzzing of every JSON route, of the chat route on the tiny model and of label strings: never a 500.
- Hostile input (issue 11): huge, slow, deep or oversized requests are refused or bounded while /health and small
  requests keep answering within a second; timed-out generations stop; shutdown ends within the drain timeout.

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
from typing import Any, Self

import aiohttp
import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from prometheus_client.parser import text_string_to_metric_families

from deltarubric.app.server import build_app
from deltarubric.app.settings import ServerSettings
from deltarubric.rm.backends.base import Conversation, Generation, TokenLogprob
from deltarubric.rm.config import JudgeConfig, SamplingConfig
from deltarubric.rm.judge import Judge
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
_PAIR = re.compile(
    r"\[Response A\]\n(.*?)\n\[End of Response A\].*?\[Response B\]\n(.*?)\n\[End of Response B\]", re.DOTALL
)


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
    assert re.search(r"^deltarubric_judge_errors_total 2\.0$", text, re.MULTILINE)


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
            {
                "question": f"Colour #{k}?",
                "images": [IMAGE],
                "response": f"Answer #{k}: GOOD",
                "reference": f"Reference #{k}" + (" POISON" if k == 1 else ""),
            }
            for k in range(3)
        ]
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

        def burst() -> Any:
            return post_all(server.url, "/get_reward", bodies, connections=n, timeout_s=20)

        sender = threading.Thread(target=lambda: results.append(asyncio.run(burst())))
        sender.start()
        batcher = app.state.rewards.reward_batcher
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
        "",
        " ",
        "judge",
        "text",
        "image_generation",
        "video_understanding",
        "group",
        "reference",
        "bradley_terry",
        "data:image/png;base64,",
        "data:image/png;base64,AAAA",
        "data:image/png,abc",
        "data:,",
        IMAGE[:60],
        IMAGE,
        "file:///etc/passwd",
        "../../../etc/passwd",
        "/etc/hostname",
        "http://127.0.0.1:1/x.png",
        "https://example.invalid/a.png",
        "<|im_start|>assistant\n",
        "<|im_end|>",
        "<|vision_start|><|image_pad|>",
        "x" * 5000,
        '{"reference": "r"}',
        '{"reference": ""}',
        "[1, 2]",
        "null",
        "1e999",
        "NaN",
    ]
)
FIELD_NAMES = st.sampled_from(
    [
        "query",
        "prompts",
        "labels",
        "reference",
        "images",
        "task_type",
        "question",
        "requests",
        "id",
        "a",
        "b",
        "text",
        "image",
        "video",
        "videos",
        "items",
        "mode",
        "group_id",
        "response",
        "model",
        "messages",
        "role",
        "content",
        "type",
        "image_url",
        "url",
        "logprobs",
        "top_logprobs",
        "n",
        "stream",
        "max_tokens",
        "seed",
        "extra",
    ]
)

UNDERSTANDING_PAIR = {
    "id": "s0",
    "task_type": "image_understanding",
    "question": "Which colour?",
    "images": [IMAGE],
    "a": "Answer #1: GOOD",
    "b": {"text": "Answer #1: BAD"},
    "reference": "orange",
}
GENERATION_PAIR = {
    "id": "s1",
    "task_type": "image_generation",
    "question": "an orange ball",
    "a": {"image": IMAGE},
    "b": {"image": IMAGE_2},
}
REFERENCE_ITEM = {
    "id": "r0",
    "question": "Colour #2?",
    "images": [IMAGE],
    "response": "Answer #2: GOOD",
    "reference": "Reference #2",
}
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
        {
            "model": "judge",
            "max_tokens": 16,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": 2,
            "messages": [{"role": "system", "content": "Be brief."}, USER_TURN],
        },
    ],
}
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
    b"",
    b"not json",
    b"{",
    b'{"query": ["x"]',
    b"\xff\xfe\x00{",
    b"null",
    b"[]",
    b'"a string"',
    b"1e999",
    b"NaN",
    b"[" * 50_000 + b"]" * 50_000,
    b"query=x&labels=y",
    FORM,
]
CONTENT_TYPES = [
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/json; charset=latin-1",
    None,
]


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
        "/get_reward",
        _IMAGE_REF_REWARD % '"a\\u0000b.png"',
        id="nul-in-image-path",
    ),
    pytest.param(
        "/get_reward",
        _IMAGE_REF_REWARD % '"file://[x/a.png"',
        id="bad-ipv6-file-url",
    ),
    pytest.param(
        "/get_reward",
        _IMAGE_REF_REWARD % '"\\ud800.png"',
        id="surrogate-in-image-path",
    ),
    pytest.param(
        "/v1/judge",
        '{"requests": [{"id": "\\ud800", "task_type": "text", "question": "q", "a": "x", "b": "y"}]}',
        id="surrogate-in-echoed-id",
    ),
]


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
    import deltarubric.app.rewards as rewards_module

    real, built = rewards_module.JudgeRequest, []

    def counting(*args: Any, **kwargs: Any):
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rewards_module, "JudgeRequest", counting)
    items = [{"group_id": "g", "task_type": "text", "question": "q", "response": f"r{i}"} for i in range(250)]
    with TestClient(scripted_app(Referee()), raise_server_exceptions=False) as client:
        r = client.post("/v1/rewards", json={"mode": "group", "items": items})
    assert r.status_code == 413
    limit = ServerSettings().max_pairs_per_request
    assert len(built) <= limit, f"{len(built)} pairs built to refuse a request over the {limit}-pair limit"


# ----------------------------------------------------------------------------------------------------------------
# 6. Hostile input (issue 11): no request can freeze, wedge or exhaust the server. One regression per defect, each
#    against a real server on loopback; freeze and starvation cases check that /health and a small request keep
#    answering within a second while the bad request is in flight.


def keep_answering(url: str, busy: Callable[[], bool], *, rounds: int = 300, timeout_s: float = 60.0) -> list[dict]:
    """While `busy()`: GET /health and POST a small text pair (new each round, so it is judged, not cached); each
    must answer within a second. Returns the /health bodies seen. Bounded in rounds and time."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=5.0) as client:
        for k in range(rounds):
            if not busy() or time.monotonic() > deadline:
                break
            t0 = time.monotonic()
            health = client.get("/health")
            t1 = time.monotonic()
            small = client.post("/v1/judge", json=judge_body([(f"Answer #{k}: GOOD", f"Answer #{k}: BAD")]))
            t2 = time.monotonic()
            assert health.status_code == 200 and t1 - t0 < 1.0, f"/health took {t1 - t0:.2f} s"
            assert small.status_code == 200 and t2 - t1 < 1.0, (
                f"a small request took {t2 - t1:.2f} s: {small.text[:200]}"
            )
            seen.append(health.json())
    assert seen, "the bad requests were over before the server could be checked"
    return seen


def in_background(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(work()), daemon=True)
    thread.start()
    return thread, out


JSON_HEADERS = {"content-type": "application/json"}


def test_issue11_1_a_huge_request_of_undecided_items_is_refused_and_never_freezes_the_server():
    """20,000 rollouts with empty responses (1.5 MB) froze every route, /health included, for 40 s: empty responses
    count as decided, so they escaped the pair limit, and `details` did items x pairs work on the event loop."""
    n = 20_000
    reference = json.dumps({"items": [{"question": "q", "response": "", "reference": "r"}] * n}).encode()
    groups = json.dumps(
        {"mode": "group", "items": [{"group_id": str(i), "question": "q", "response": ""} for i in range(n)]}
    ).encode()
    queries = json.dumps({"query": ["<|im_start|>assistant\n"] * n, "labels": ['{"reference": "r"}'] * n}).encode()
    attacks = [("/v1/rewards", reference), ("/v1/rewards", groups), ("/get_reward", queries)] * 2

    with LoopbackServer(scripted_app(Referee(), batch_window_ms=0)) as server:

        def attack() -> list[httpx.Response]:
            with httpx.Client(base_url=server.url, timeout=120) as client:
                return [client.post(path, content=body, headers=JSON_HEADERS) for path, body in attacks]

        sender, replies = in_background(attack)
        keep_answering(server.url, sender.is_alive)
        sender.join(timeout=150)
        # The largest request the limits allow is answered, every rollout with its own counts.
        most = [{"question": "q", "response": "", "reference": "r"}] * 256
        allowed = httpx.post(server.url + "/v1/rewards", json={"items": most}, timeout=30)
    (replies,) = replies
    for r in replies:
        assert r.status_code == 413, r.text[:200]
        assert re.search(r"^20000 (items|queries) in one request; the limit is 256$", r.json()["error"]["message"])
    assert allowed.status_code == 200
    assert (
        allowed.json()["rewards"] == [0.0] * 256
        and allowed.json()["details"] == [{"comparisons": 1, "parsed": 1}] * 256
    )


def test_issue11_1_rewards_answer_is_linear_in_the_pairs():
    """The scoring step on its own: one pass over the pairs, not a scan of every pair for every item."""
    from deltarubric.app.rewards import rewards_answer, rewards_plan
    from deltarubric.rm.reward_protocol import RewardDetail, RewardsRequest

    items = [{"group_id": f"g{i // 3}", "question": "q", "response": f"r{i}"} for i in range(192)]  # 64 groups of 3
    body = RewardsRequest.model_validate({"mode": "group", "items": items})
    plan = rewards_plan(body, ServerSettings().max_pairs_per_request)
    seen = []

    class CountingPairs(list):
        def __iter__(self):
            seen.append(1)
            return super().__iter__()

    plan.pairs = CountingPairs(plan.pairs)
    answer = rewards_answer(plan, body, [0.75] * len(plan.pairs))
    assert len(seen) <= 2  # a constant number of passes, not one per item
    assert answer.details == [RewardDetail(comparisons=2, parsed=2)] * 192
    assert answer.rewards[:3] == pytest.approx([0.75, 0.5, 0.25])  # P(first wins) = 0.75 in every pair


def test_issue11_2_prompts_over_the_token_limit_are_refused_with_the_numbers(tiny_backend):
    """A 1 MB question kept the local backend busy for over 15 minutes. Prompts are counted after the chat template
    with the model's own tokenizer; text that cannot fit is refused without being tokenized at all."""
    from tests.conftest import tiny_app

    huge = "word " * 200_000  # 1 MB
    long = "word " * 5_000  # tokenized: the count is exact
    with (
        LoopbackServer(tiny_app(tiny_backend, max_input_tokens=4096)) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        for text, count in ((huge, r"over \d+ tokens \(\d+ characters\)"), (long, r"\d+ tokens")):
            label = {"reference": "r", "question": text}
            refused = {
                "/v1/judge": {"requests": [{"task_type": "text", "question": text, "a": "x", "b": "y"}]},
                "/get_reward": {"query": ["<|im_start|>assistant\nx"], "labels": [json.dumps(label)]},
                "/v1/rewards": {"items": [{"question": "q", "response": text, "reference": "r"}]},
                "/v1/chat/completions": {
                    "model": "tiny",
                    "max_tokens": 2,
                    "messages": [{"role": "user", "content": text}],
                },
            }
            for path, body in refused.items():
                r = client.post(path, json=body)
                assert r.status_code == 413, (path, r.status_code, r.text[:200])
                message = r.json()["error"]["message"]
                assert re.search(f"the prompt is {count} after the chat template; the limit is 4096", message), message
                if count == r"\d+ tokens":
                    assert int(re.search(r"is (\d+) tokens", message).group(1)) > 4096
        # max_tokens is capped, with the numbers
        r = client.post(
            "/v1/chat/completions",
            json={"model": "tiny", "max_tokens": 5000, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert (
            r.status_code == 400
            and "max_tokens is 5000; this server allows at most 4096" in r.json()["error"]["message"]
        )
        # what fits is served
        r = client.post(
            "/v1/chat/completions",
            json={"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "word " * 200}]},
        )
        assert r.status_code == 200, r.text[:200]


def test_issue11_2_a_timed_out_local_generation_stops_and_frees_the_backend(tiny_backend):
    """A generation past the request timeout ran on, so every later request timed out too: now the request's
    cancellation reaches the engine (a stopping criterion checks it at every token) and the backend is free again."""
    judge = Judge(JudgeConfig(model="tiny", judge="direct", sampling={"max_tokens": 3000}), backend=tiny_backend)
    settings = ServerSettings(
        served_model_name="tiny", request_timeout_s=1.0, max_completion_tokens=3000, batch_window_ms=0
    )
    engine = tiny_backend._lock  # held while the model generates
    small = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    with LoopbackServer(build_app(judge, settings)) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        # ~3000 tokens take the tiny model on a CPU far longer than the 1 s timeout
        long = {"model": "tiny", "messages": [{"role": "user", "content": "Tell me everything."}], "max_tokens": 3000}
        assert client.post("/v1/chat/completions", json=long).status_code == 504
        wait_until(lambda: not engine.locked(), 5, "the timed-out chat generation to stop")
        assert client.post("/v1/chat/completions", json=small).status_code == 200
        # a judge call past the timeout (the batcher's) is stopped the same way
        assert client.post("/v1/judge", json=judge_body([("Answer #1: one", "Answer #1: two")])).status_code == 504
        wait_until(lambda: not engine.locked(), 5, "the timed-out judge call to stop")
        assert client.post("/v1/chat/completions", json=small).status_code == 200
        samples = metric_samples(server.url)
    assert metric(samples, "deltarubric_cancelled_judge_calls_total") == 1


WEDGED_SERVER = """
import sys, time
from deltarubric.app.server import build_app, run_server
from deltarubric.app.settings import ServerSettings
from deltarubric.rm.backends.base import Generation, ThreadedBackend
from deltarubric.rm.config import JudgeConfig
from deltarubric.rm.judge import Judge

class Wedged(ThreadedBackend):
    name = "wedged"

    def generate_blocking(self, conversations, sampling):  # a hung engine: never returns in time, ignores cancelling
        time.sleep(300)
        return [Generation() for _ in conversations]

settings = ServerSettings(request_timeout_s=60, drain_timeout_s=1, access_log=False)
app = build_app(Judge(JudgeConfig(model="x", judge="direct"), backend=Wedged()), settings)
run_server(app, host="127.0.0.1", port=int(sys.argv[1]))
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_issue11_2_shutdown_finishes_within_the_drain_timeout_even_with_a_wedged_backend(sig):
    """SIGTERM hung until SIGKILL while the backend was busy: the drain waited for it forever. Now requests still in
    flight at the drain timeout are answered 503 and the process exits whatever the engine thread does (after
    SIGINT, Python would wait for that thread at exit: a watchdog ends the process)."""
    import signal
    import subprocess

    from tests.conftest import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-c", WEDGED_SERVER, str(port)],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: _healthy(url) or proc.poll() is not None, 60, "the server to start")
        assert proc.poll() is None, proc.stderr.read()
        sender, replies = in_background(
            lambda: httpx.post(url + "/v1/judge", json=judge_body([("a", "b")]), timeout=60)
        )
        wait_until(
            lambda: metric(metric_samples(url), "deltarubric_batch_size_count") == 1, 10, "the judge call to start"
        )
        proc.send_signal(getattr(signal, sig))
        try:
            proc.wait(
                timeout=30
            )  # the drain timeout is 1 s and the request timeout 60 s: only a bounded drain ends here
        except subprocess.TimeoutExpired:
            pytest.fail("the server did not exit after SIGTERM")
        sender.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (reply,) = replies
    assert reply.status_code == 503 and reply.json()["error"]["type"] == "overloaded"  # answered, not dropped
    # The call is stopped either when its request is cancelled at the drain deadline (nobody waits for it any more)
    # or, failing that, when the batcher's own drain gives up on it.
    err = proc.stderr.read()
    assert (
        "a judge call of 1 pairs: every request waiting for it has gone; cancelling it" in err
        or "1 running pairs not judged within 0.5 s; answering them with errors" in err
    ), err[-2000:]


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def png_url(size: tuple[int, int], colour: tuple[int, int, int], fmt: str = "PNG") -> str:
    """A solid image of any size: a few kB as PNG however many pixels it claims."""
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt, **({"compress_level": 1} if fmt == "PNG" else {}))
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def images_pair(urls: Sequence[str], k: int = 0) -> dict[str, Any]:
    return {
        "requests": [
            {
                "id": f"img{k}",
                "question": f"Which fits #{k}?",
                "images": list(urls),
                "a": f"Answer #{k}: GOOD",
                "b": f"Answer #{k}: BAD",
            }
        ]
    }


def test_issue11_3_decoded_pixels_are_budgeted_per_request_before_any_decoding(monkeypatch):
    """16 plain 7000x7000 PNGs in one 3.4 MB request took the server to 9.7 GB. Each image now counts with the size
    it will have once downscaled to max_pixels, summed from the headers before anything is decoded; JPEGs are
    decoded straight at the reduced size."""
    from PIL import ImageFile

    loaded: list[tuple[str, tuple[int, int]]] = []
    real_load = ImageFile.ImageFile.load

    def recording(self):  # what was really decoded, at what size (after any decode-time scaling)
        decoding = bool(self.tile)  # later calls on a loaded image decode nothing
        out = real_load(self)
        if decoding:
            loaded.append((self.format, self.size))
        return out

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording)
    pngs = [png_url((2000, 2000), (10 * k, 100, 200)) for k in range(5)]  # 4 Mpx each, 1 Mpx once downscaled
    backend = Referee()
    app = scripted_app(backend, max_pixels=1_000_000, max_request_pixels=4_000_000, batch_window_ms=0)
    with LoopbackServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        over = client.post("/v1/judge", json=images_pair(pngs, 1))
        assert over.status_code == 413, over.text[:300]
        message = over.json()["error"]["message"]
        assert "5 images decode to 5000000 pixels" in message and "the limit is 4000000" in message
        assert loaded == []  # refused from the headers alone
        within = client.post("/v1/judge", json=images_pair(pngs[:4], 2))
        assert within.status_code == 200 and within.json()["results"][0]["winner"] == "A"
        jpeg = client.post("/v1/judge", json=images_pair([png_url((4000, 4000), (1, 2, 3), "JPEG")], 3))
        assert jpeg.status_code == 200
    assert sorted(loaded) == [("JPEG", (1000, 1000))] + [("PNG", (2000, 2000))] * 4  # the JPEG never at 4000x4000
    shown = [
        p.image
        for conv in backend.calls[-2] + backend.calls[-1]
        for m in conv
        for p in m.content
        if hasattr(p, "image")
    ]
    assert shown and all(img.width * img.height <= 1_000_000 for img in shown)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads resident memory from /proc")
def test_issue11_3_memory_returns_to_baseline_after_a_burst_of_large_images():
    """4.4 GB stayed held after the burst. Images are shrunk as they are decoded, a few at a time in the work pool,
    and memory freed after large decodes goes back to the system."""
    import ctypes
    import gc

    urls = [png_url((3000, 3000), (k, 255 - k, 7 * k % 256)) for k in range(16)]  # 9 Mpx each, 16 distinct
    bodies = [images_pair(urls[4 * k : 4 * k + 4], k) for k in range(4)]
    app = scripted_app(Referee(), max_pixels=250_000, batch_window_ms=0)
    with LoopbackServer(app) as server:
        httpx.post(server.url + "/v1/judge", json=images_pair([IMAGE], 99), timeout=30)  # warm the code paths
        gc.collect()
        ctypes.CDLL(None).malloc_trim(0)
        baseline = peak = _rss()
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.01):
                peak = max(peak, _rss())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        replies = asyncio.run(post_all(server.url, "/v1/judge", bodies, connections=4, timeout_s=60))
        done.set()
        sampler.join(timeout=5)
        gc.collect()
        after = _rss()
    assert [r.status for r in replies] == [200] * 4
    mb = 1024 * 1024
    # 16 images of 27 MB each as RGB: holding them at once would be 430 MB, and glibc kept such bursts resident. What
    # may stay is bounded by the decoding threads, whatever the size of the burst (and the judged 500x500 copies).
    assert (peak - baseline) / mb < 300, f"peak {(peak - baseline) / mb:.0f} MB over the baseline"
    # About two decoded images' worth (measured 30-63 MB on a loaded 2-core box), far below the 430 MB of the burst.
    assert (after - baseline) / mb < 120, f"{(after - baseline) / mb:.0f} MB still held after the burst"


class SlowImageHost:
    """An HTTP server on 127.0.0.1 that answers every GET with an image's headers, then one byte every `every_s`
    for at most `max_s`; it counts connections and how many the client closed."""

    def __init__(self, every_s: float = 0.3, max_s: float = 20.0) -> None:
        import socket

        self.every_s, self.max_s = every_s, max_s
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.opened = self.hung_up = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]

    def __enter__(self) -> Self:
        self.threads[0].start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)
        self.sock.close()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.opened += 1
            t = threading.Thread(target=self._trickle, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _trickle(self, conn: Any) -> None:
        with conn:
            conn.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                head += conn.recv(4096) or b"\r\n\r\n"
            deadline = time.monotonic() + self.max_s
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1000000\r\n\r\n")
                while not self.stop.is_set() and time.monotonic() < deadline:
                    conn.sendall(b"\x89")
                    time.sleep(self.every_s)
            except OSError:
                self.hung_up += 1


def test_issue11_4_slow_image_hosts_cannot_starve_other_requests():
    """Six downloads sending 1 byte every 5 s made every other request 504 for 120 s while /health said ok: the
    30 s timeout was per read, the thread ran on after its request timed out, and downloads shared the default
    pool with decoding and the backend. Now: one total deadline, their own slots, cancelled, saturation reported."""
    settings = {
        "allow_http_media": True,
        "allow_private_addresses": True,
        "media_timeout_s": 1.5,
        "media_downloads": 2,
        "request_timeout_s": 20,
        "batch_window_ms": 0,
    }
    with SlowImageHost() as host, LoopbackServer(scripted_app(Referee(), **settings)) as server:
        bodies = [images_pair([f"{host.url}/cat{k}.png"], k) for k in range(6)]
        sender, replies = in_background(
            lambda: asyncio.run(post_all(server.url, "/v1/judge", bodies, connections=6, timeout_s=30))
        )
        seen = keep_answering(server.url, sender.is_alive)
        sender.join(timeout=40)
        # every download the server started was cancelled (connection closed) at its deadline, none left running
        wait_until(lambda: host.hung_up == host.opened, 10, "the slow downloads to be closed by the server")
        samples = metric_samples(server.url)
        health = httpx.get(server.url + "/health", timeout=5).json()
    (replies,) = replies
    assert [r.status for r in replies] == [400] * 6
    assert all("did not finish within 1.5 s" in r.body["error"]["message"] for r in replies)
    assert (
        1 <= host.opened <= 6
    )  # at most two at a time; those still waiting for a slot at their deadline never connect
    assert any(
        h["status"] == "saturated" and h["pools"]["downloads"] == {"size": 2, "busy": 2, "waiting": 4} for h in seen
    )
    assert metric(samples, "deltarubric_media_download_timeouts_total") == 6
    assert metric(samples, "deltarubric_pool_size", pool="downloads") == 2
    assert metric(samples, "deltarubric_pool_busy", pool="downloads") == 0 and health["status"] == "ok"


NESTED_LABEL = json.dumps({"query": ["<|im_start|>assistant\nx"], "labels": ["[" * 5000 + "]" * 5000]})
CHAT = '{"model": "tiny", "max_tokens": 2, "temperature": 0.7, %s, "messages": [{"role": "user", "content": %s}]}'


@pytest.mark.parametrize(
    "path, raw",
    [
        pytest.param("/get_reward", NESTED_LABEL, id="label-nested-5000-deep"),
        pytest.param("/v1/chat/completions", CHAT % (f'"seed": {2**70}', '"hi"'), id="seed-2**70"),
        pytest.param("/v1/chat/completions", CHAT % ('"seed": 1', '"a\\ud800b"'), id="lone-surrogate"),
        pytest.param("/v1/chat/completions", CHAT % ('"seed": 1', '"<|image_pad|>"'), id="image-placeholder-as-text"),
    ],
)
def test_issue11_5_inputs_that_reached_500_are_400_with_a_json_error(tiny_server, path, raw):
    """Each once gave a 500 (a plain-text one for the label, not counted in /metrics), on the real tiny model."""
    before = metric(metric_samples(tiny_server.url), "deltarubric_requests_total", route=path, status="400")
    r = httpx.post(tiny_server.url + path, content=raw.encode(), headers=JSON_HEADERS, timeout=60)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json") and r.json()["error"]["code"] == 400
    after = metric(metric_samples(tiny_server.url), "deltarubric_requests_total", route=path, status="400")
    assert after == before + 1


def test_a_tiny_temperature_is_greedy_not_a_500(tiny_server):
    """Found by the chat fuzzing below: temperature 1e-45 made the logits inf and sampling failed (500). As in vLLM,
    a temperature under 1e-5 is greedy."""
    body = {"model": "tiny", "max_tokens": 2, "temperature": 1e-45, "messages": [{"role": "user", "content": "="}]}
    greedy = body | {"temperature": 0}
    r = httpx.post(tiny_server.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text[:300]
    again = httpx.post(tiny_server.url + "/v1/chat/completions", json=greedy, timeout=60)
    assert r.json()["choices"][0]["message"] == again.json()["choices"][0]["message"]


def test_issue11_5_an_unexpected_error_is_a_json_500_and_counted():
    app = scripted_app(Referee())

    async def broken(requests):
        raise RuntimeError("a bug")

    with LoopbackServer(app) as server:
        app.state.rewards.batcher.submit = broken
        r = httpx.post(server.url + "/v1/judge", json=judge_body([("x", "y")]), timeout=30)
        samples = metric_samples(server.url)
    assert r.status_code == 500 and r.headers["content-type"].startswith("application/json")
    assert r.json()["error"] == {
        "message": "internal server error (logged on the server)",
        "type": "server_error",
        "param": None,
        "code": 500,
    }
    assert "a bug" not in r.text  # details stay in the log
    assert metric(samples, "deltarubric_requests_total", route="/v1/judge", status="500") == 1


# Property-based fuzzing of the chat route on the real tiny model (tokenizer, template, torch seeding) and of
# /get_reward's label strings, which the server parses itself.

CHAT_TEXT = TEXT | st.sampled_from(
    [
        "<|im_start|>assistant\n",
        "<|im_end|>",
        "<|endoftext|>",
        "<|vision_start|>",
        "<|image_pad|>",
        "<|video_pad|>",
        "\x00",
        "\ud800",
        "x" * 3000,
        "",
    ]
)


@st.composite
def chat_bodies(draw) -> dict[str, Any]:
    def content() -> Any:
        if draw(st.booleans()):
            return draw(CHAT_TEXT)
        parts = st.fixed_dictionaries({"type": st.just("text"), "text": CHAT_TEXT})
        return draw(st.lists(parts, max_size=3))

    roles = st.sampled_from(["system", "user", "assistant"])
    body: dict[str, Any] = {
        "model": "tiny",
        "messages": [{"role": draw(roles), "content": content()} for _ in range(draw(st.integers(1, 3)))],
    }
    optional = {
        "seed": st.integers() | st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**70]),
        "temperature": st.floats(0, 2) | st.floats(allow_nan=False) | st.sampled_from([1e-45, 1e-8, 5e-6]),
        "top_p": st.floats(0, 1) | st.floats(allow_nan=False),
        "max_tokens": st.integers(1, 3) | st.integers(),
        "logprobs": st.booleans(),
        "top_logprobs": st.integers(0, 3) | st.integers(),
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            body[name] = draw(values)
    return body


@pytest.fixture(scope="module")
def tiny_client(tiny_backend):
    from tests.conftest import tiny_app

    with TestClient(
        tiny_app(tiny_backend, max_completion_tokens=3, batch_window_ms=0), raise_server_exceptions=False
    ) as client:
        yield client


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=chat_bodies())
def test_fuzz_chat_on_the_tiny_model_is_never_a_500(tiny_client, body):
    raw = json.dumps(body).encode()  # lone surrogates travel as \ud800 escapes, as a JSON client sends them
    r = post_raw(tiny_client, "/v1/chat/completions", raw)
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code == 200:
        assert r.json()["choices"][0]["finish_reason"] in ("stop", "length")
    else:
        assert r.json()["error"]["code"] == r.status_code


NESTED = st.builds(
    lambda n, opener, closer: opener * n + closer * n,
    st.integers(1, 20_000),
    st.sampled_from(["[", '{"a":', '[{"r":']),
    st.sampled_from(["]", "}", "}]"]),
)
LABEL_OBJECTS = st.fixed_dictionaries(
    {"reference": TEXT | INTERESTING},
    optional={
        "images": JSON | st.lists(INTERESTING, max_size=2),
        "question": JSON | TEXT,
        "task_type": JSON | INTERESTING,
    },
)
LABEL_STRINGS = TEXT | JSON.map(json.dumps) | NESTED | LABEL_OBJECTS.map(json.dumps)


@FUZZ
@given(labels=st.lists(LABEL_STRINGS, min_size=1, max_size=3))
def test_fuzz_label_strings_are_never_a_500(fuzz_client, labels):
    body = {"query": [query_text(i, True) for i in range(len(labels))], "labels": labels}
    check_answer("/get_reward", body, post_raw(fuzz_client, "/get_reward", json.dumps(body).encode()))
