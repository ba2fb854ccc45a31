"""Reward-server routes on a judge with known answers: semantics, limits, media policy, auth, cache, batching."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import re
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from app.server import build_app
from app.settings import ServerSettings
from rm.config import JudgeConfig
from rm.judge import Judge
from tests.conftest import LoopbackServer
from tests.scripted import ScriptedBackend, all_text


def cat_lover(conv) -> str:
    """Prefers the candidate mentioning more cats; on a tie, the one shown first (a position-biased tie-break)."""
    text = all_text(conv)
    first = text.split("[Response A]\n", 1)[1].split("\n[End of Response A]", 1)[0]
    second = text.split("[Response B]\n", 1)[1].split("\n[End of Response B]", 1)[0]
    return "Winner: [[B]]" if second.count("cat") > first.count("cat") else "Winner: [[A]]"


def make_client(swap: bool = True, **settings) -> tuple[TestClient, ScriptedBackend]:
    backend = ScriptedBackend(cat_lover, confidence=0.9)
    judge = Judge(JudgeConfig(model="scripted", judge="direct", swap=swap), backend=backend)
    return TestClient(build_app(judge, ServerSettings(served_model_name="judge", **settings))), backend


def png_data_url(size=(32, 24), color=(200, 80, 40)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


PROMPT = ("<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|image_pad|>"
          "<|vision_end|>How many cats are there?<|im_end|>\n<|im_start|>assistant\n")  # fmt: skip


def get_reward_body(responses: list[str], reference: str = "Three dogs.") -> dict:
    label = json.dumps({"reference": reference, "images": [png_data_url()]})
    return {"query": [PROMPT + r + "<|im_end|>" for r in responses], "prompts": [PROMPT] * len(responses),
            "labels": [label] * len(responses)}  # fmt: skip


def test_get_reward_scores_responses_against_the_reference():
    client, backend = make_client()
    with client:
        r = client.post("/get_reward", json=get_reward_body(["Two cats.", "Three dogs, I think.", ""]))
    assert r.status_code == 200
    body = r.json()
    # 'Two cats.' beats the reference in both orders with P=0.9; the dog answer ties and the tie-break follows the
    # position, so the two orders cancel to 0.5; the empty response loses without a judge call.
    assert body["rewards"] == pytest.approx([0.9, 0.5, 0.0])
    assert body["scores"] == body["rewards"]
    assert body["extra_logs"]["judge_valid"] == [1.0, 1.0, 1.0] and body["extra_logs"]["judge_timeout"] == [0.0] * 3
    question = [p for conv in backend.calls[0] for m in conv for p in m.content if hasattr(p, "text")]
    assert any("Question: How many cats are there?" in p.text for p in question)  # vision placeholders removed


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b: b.pop("labels"), "labels are required"),
        (lambda b: b.update(labels=["{not json"]), "is not JSON"),
        (lambda b: b.update(labels=[json.dumps({"images": []})]), "non-empty 'reference'"),
        (lambda b: b.update(labels=[json.dumps({"reference": "x", "images": "a.png"})]), "must be a list of strings"),
        (lambda b: b.update(prompts=[PROMPT, PROMPT]), "prompts has 2 entries but query has 1"),
        (lambda b: b.update(labels=[json.dumps({"reference": "x", "task_type": "poetry"})]), "task_type"),
    ],
)
def test_get_reward_refuses_malformed_payloads(change, message):
    client, _ = make_client()
    body = get_reward_body(["Two cats."])
    change(body)
    with client:
        r = client.post("/get_reward", json=body)
    assert r.status_code == 400 and message in r.json()["error"]["message"]


def test_judge_route_returns_verdicts_in_order():
    client, _ = make_client()
    pair = {"question": "How many cats?", "images": [png_data_url()], "a": {"text": "A cat."}, "b": {"text": "None."}}
    with client:
        r = client.post("/v1/judge", json={"requests": [pair | {"id": "x"}, pair | {"id": "y", "a": {"text": "None."}, "b": {"text": "A cat."}}]})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [(v["id"], v["winner"], v["consistent"]) for v in results] == [("x", "A", True), ("y", "B", True)]
    assert results[0]["p_a"] == pytest.approx(0.9) and results[1]["p_a"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    "request_, param",
    [
        ({"question": "Q?", "images": [], "a": {"text": "x"}, "b": {"text": "y"}, "colour": "red"}, "requests.0.colour"),
        ({"question": "Q?", "task_type": "audio", "a": {"text": "x"}, "b": {"text": "y"}}, "requests.0.task_type"),
        ({"question": "Q?", "a": {"text": "x"}, "b": {"text": "y"}}, "requests.0"),  # image_understanding without an image
    ],
)
def test_judge_route_rejects_unknown_fields_and_task_types(request_, param):
    client, _ = make_client()
    with client:
        r = client.post("/v1/judge", json={"requests": [request_]})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith(param)


def test_rewards_reference_and_group_modes():
    client, _ = make_client()
    base = {"question": "How many cats?", "images": [png_data_url()]}
    with client:
        ref = client.post("/v1/rewards", json={"mode": "reference", "items": [
            base | {"response": "One cat.", "reference": "Nothing."}, base | {"response": "Nothing.", "reference": "One cat."}]})  # fmt: skip
        items = [base | {"group_id": "g", "response": r} for r in ("One cat.", "A dog.", "A bird.")]
        rate = client.post("/v1/rewards", json={"mode": "group", "items": items})
        bt = client.post("/v1/rewards", json={"mode": "group", "group_scoring": "bradley_terry", "items": items})
    assert ref.json()["rewards"] == pytest.approx([0.9, 0.1]) and ref.json()["valid"] == [True, True]
    # cat vs dog and cat vs bird: 0.9 each; dog vs bird: a positional tie-break, 0.5 after both orders
    assert rate.json()["rewards"] == pytest.approx([0.9, 0.3, 0.3])
    assert rate.json()["details"][0] == {"comparisons": 2, "parsed": 2}
    strengths = bt.json()["rewards"]
    assert strengths[0] > 0 > strengths[1] and strengths[1] == pytest.approx(strengths[2]) and sum(strengths) == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize(
    "body, message",
    [
        ({"mode": "reference", "items": [{"question": "Q", "response": "r"}]}, "needs a non-empty 'reference'"),
        ({"mode": "group", "items": [{"question": "Q", "response": "r"}]}, "needs a 'group_id'"),
        ({"mode": "vote", "items": [{"question": "Q", "response": "r"}]}, "mode"),
    ],
)
def test_rewards_mode_fields_are_checked(body, message):
    client, _ = make_client()
    with client:
        r = client.post("/v1/rewards", json=body)
    assert r.status_code == 400 and message in r.json()["error"]["message"]


def one_pair(image: str) -> dict:
    return {"requests": [{"question": "Q?", "images": [image], "a": {"text": "x"}, "b": {"text": "y"}}]}


def test_limits_answer_clear_4xx():
    client, _ = make_client(max_body_bytes=4096, max_pairs_per_request=2, max_images_per_request=2, max_input_pixels=10_000)
    pair = {"question": "Q?", "images": [png_data_url()], "a": {"text": "x"}, "b": {"text": "y"}}
    with client:
        assert client.post("/v1/judge", content=b"{" + b" " * 5000 + b"}", headers={"content-type": "application/json"}).status_code == 413
        too_many = client.post("/v1/judge", json={"requests": [pair] * 3})
        assert too_many.status_code == 413 and "limit is 2" in too_many.json()["error"]["message"]
        images = client.post("/v1/judge", json={"requests": [pair | {"images": [png_data_url()] * 3}]})
        assert images.status_code == 413 and "images" in images.json()["error"]["message"]
        big = client.post("/v1/judge", json=one_pair(png_data_url(size=(200, 100))))
        assert big.status_code == 400 and "exceeds the limit of 10000" in big.json()["error"]["message"]
        corrupt = client.post("/v1/judge", json=one_pair("data:image/png;base64," + base64.b64encode(b"\x89PNG garbage").decode()))
        assert corrupt.status_code == 400 and "requests[0].images[0]" in corrupt.json()["error"]["message"]
        assert client.post("/v1/judge", content=b"not json", headers={"content-type": "application/json"}).status_code == 400


def test_media_policy(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    Image.new("RGB", (30, 30)).save(allowed / "ok.png")
    Image.new("RGB", (30, 30)).save(tmp_path / "secret.png")
    client, _ = make_client(allowed_media_dirs=[allowed])
    with client:
        assert client.post("/v1/judge", json=one_pair(str(allowed / "ok.png"))).status_code == 200
        assert client.post("/v1/judge", json=one_pair(f"file://{allowed / 'ok.png'}")).status_code == 200
        for outside in (str(tmp_path / "secret.png"), str(allowed / ".." / "secret.png"), "/etc/passwd"):
            r = client.post("/v1/judge", json=one_pair(outside))
            assert r.status_code == 400 and "outside the allowed media folders" in r.json()["error"]["message"]
        r = client.post("/v1/judge", json=one_pair("https://example.com/cat.png"))
        assert r.status_code == 400 and "http(s) media is disabled" in r.json()["error"]["message"]
    closed, _ = make_client()
    with closed:
        r = closed.post("/v1/judge", json=one_pair(str(allowed / "ok.png")))
        assert r.status_code == 400 and "no media folders are allowed" in r.json()["error"]["message"]


def test_http_media_never_reaches_internal_addresses_unless_allowed(tmp_path):
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    buf = io.BytesIO()
    Image.new("RGB", (20, 20), (1, 2, 3)).save(buf, format="PNG")

    async def image(request):
        return Response(buf.getvalue(), media_type="image/png")

    with LoopbackServer(Starlette(routes=[Route("/cat.png", image)])) as media:
        url = media.url + "/cat.png"
        client, _ = make_client(allow_http_media=True)
        with client:
            r = client.post("/v1/judge", json=one_pair(url))
            assert r.status_code == 400 and "internal address" in r.json()["error"]["message"]
        trusting, _ = make_client(allow_http_media=True, allow_private_addresses=True)
        with trusting:
            assert trusting.post("/v1/judge", json=one_pair(url)).status_code == 200


def test_bearer_token():
    client, _ = make_client(api_key="s3cret")
    body = {"requests": [{"question": "Q?", "task_type": "text", "a": {"text": "x"}, "b": {"text": "y"}}]}
    with client:
        assert client.get("/health").status_code == 200
        assert client.post("/v1/judge", json=body).status_code == 401
        assert client.post("/v1/judge", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/v1/models").status_code == 401
        assert client.post("/v1/judge", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_cache_and_mirrored_pairs_share_work():
    client, backend = make_client()
    pair = {"question": "How many cats?", "task_type": "text", "a": {"text": "A cat."}, "b": {"text": "None."}}
    mirror = pair | {"a": {"text": "None."}, "b": {"text": "A cat."}}
    with client:
        first = client.post("/v1/judge", json={"requests": [pair | {"id": "1"}]}).json()["results"][0]
        calls = len(backend.calls)
        again = client.post("/v1/judge", json={"requests": [pair | {"id": "2"}]}).json()["results"][0]
        flipped = client.post("/v1/judge", json={"requests": [mirror | {"id": "3"}]}).json()["results"][0]
        metrics = client.get("/metrics").text
    assert len(backend.calls) == calls  # neither the repeat nor the mirror reached the backend
    assert again | {"id": "1"} == first and again["id"] == "2"
    assert (flipped["winner"], flipped["p_a"], flipped["id"]) == ("B", pytest.approx(1 - first["p_a"]), "3")
    assert [o["order"] for o in flipped["orders"]] == ["AB", "BA"] and [o["winner"] for o in flipped["orders"]] == ["B", "B"]
    assert "deltarubric_cache_hits_total 2.0" in metrics


def test_concurrent_single_requests_are_batched():
    backend = ScriptedBackend(cat_lover, confidence=0.9)
    judge = Judge(JudgeConfig(model="scripted", judge="direct", swap=True), backend=backend)
    app = build_app(judge, ServerSettings(batch_window_ms=50, cache_size=0))

    async def hammer(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            bodies = [get_reward_body([f"{i} cats."]) for i in range(24)]
            return await asyncio.gather(*(client.post("/get_reward", json=b) for b in bodies))

    with LoopbackServer(app) as server:
        responses = asyncio.run(hammer(server.url))
        metrics = httpx.get(server.url + "/metrics").text
    assert all(r.status_code == 200 for r in responses)
    assert len(backend.calls) < 24  # 24 single-pair requests, fewer judge calls
    assert "deltarubric_batch_size_count" in metrics and 'deltarubric_requests_total{route="/get_reward",status="200"} 24.0' in metrics


def test_chat_completions_still_served(tiny_server):
    import openai

    client = openai.OpenAI(base_url=tiny_server.url + "/v1", api_key="unused")
    completion = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    assert completion.choices[0].message.role == "assistant"


def test_serve_command_exposes_the_reward_routes(tiny_model_dir):
    """`deltarubric serve` as a user runs it, then /get_reward and /metrics over HTTP."""
    from tests.conftest import served

    limits = ("--max-input-tokens", "1500", "--max-completion-tokens", "8", "--max-request-pixels", "1000", "--no-access-log")
    with served("-m", str(tiny_model_dir), "--judge", "direct", "--max-tokens", "6", *limits) as url:
        r = httpx.post(url + "/get_reward", json=get_reward_body(["Two cats."]), timeout=60)
        assert r.status_code == 200 and len(r.json()["rewards"]) == 1
        assert "deltarubric_batch_size" in httpx.get(url + "/metrics").text
        # the limit flags reach the server
        r = httpx.post(url + "/get_reward", json=get_reward_body(["cats " * 3000]), timeout=60)
        assert r.status_code == 413 and "the limit is 1500 (--max-input-tokens)" in r.json()["error"]["message"]
        chat = {"model": str(tiny_model_dir), "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}
        assert "at most 8" in httpx.post(url + "/v1/chat/completions", json=chat, timeout=60).json()["error"]["message"]
        r = httpx.post(url + "/v1/judge", json=one_pair(png_data_url(size=(40, 30))), timeout=60)
        assert r.status_code == 413 and "the limit is 1000" in r.json()["error"]["message"]


def test_group_rewards_do_not_depend_on_other_groups():
    client, _ = make_client()
    base = {"question": "How many cats?", "task_type": "text"}
    alone = [base | {"group_id": "g", "response": r} for r in ("One cat.", "A dog.", "A bird.")]
    other = [base | {"group_id": "h", "response": r} for r in ("cat cat", "cat", "none", "x")]
    with client:
        for scoring in ("bradley_terry", "win_rate"):
            a = client.post("/v1/rewards", json={"mode": "group", "group_scoring": scoring, "items": alone}).json()["rewards"]
            b = client.post("/v1/rewards", json={"mode": "group", "group_scoring": scoring, "items": alone + other}).json()["rewards"]
            assert b[:3] == pytest.approx(a)


def test_bradley_terry_fits_the_prior_anchored_model():
    from app.rewards import bradley_terry

    # One decisive comparison between two players: symmetric strengths around the centre, the winner above it.
    (x, y) = bradley_terry(2, [(0, 1, 1.0)])
    assert x == pytest.approx(-y) and x > 0
    (a, b, c) = bradley_terry(3, [(0, 1, 1.0), (1, 2, 1.0), (0, 2, 1.0)])
    assert a > b > c and a + b + c == pytest.approx(0.0, abs=1e-9)
    assert bradley_terry(3, [(0, 1, None)]) == [None, None, None]


def test_image_only_rollouts_are_judged_with_a_neutral_question():
    client, backend = make_client()
    items = [{"question": "", "images": [png_data_url()], "response": "A cat.", "reference": "Nothing."}]
    with client:
        r = client.post("/v1/rewards", json={"mode": "reference", "items": items})
    assert r.status_code == 200 and r.json()["rewards"] == pytest.approx([0.9])
    assert "Respond to the image." in all_text(backend.calls[-1][0])


def test_shared_address_space_and_metadata_hosts_are_refused():
    client, _ = make_client(allow_http_media=True)
    with client:
        for url in ("http://100.100.100.200/latest/meta-data.png", "http://169.254.169.254/x.png", "http://[::1]:80/a.png"):
            r = client.post("/v1/judge", json=one_pair(url))
            assert r.status_code == 400 and "internal address" in r.json()["error"]["message"], url


def test_chat_route_counts_images_against_the_limit():
    client, _ = make_client(max_images_per_request=1)
    image = {"type": "image_url", "image_url": {"url": png_data_url()}}
    with client:
        r = client.post("/v1/chat/completions", json={"model": "judge", "messages": [{"role": "user", "content": [image, image]}]})
    assert r.status_code == 413 and "images" in r.json()["error"]["message"]


# ---------------------------------------------------------------------------------------------------- issue 11, "Also"


def test_only_accepted_image_formats_are_decoded(monkeypatch):
    """EPS bytes once reached Pillow's EPS plugin, which runs Ghostscript; only PNG, JPEG, WebP, GIF and BMP open."""
    from PIL import EpsImagePlugin

    ghostscript = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: ghostscript.append(1))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\nshowpage\n%%EOF\n"
    client, _ = make_client()
    with client:
        r = client.post("/v1/judge", json=one_pair("data:image/png;base64," + base64.b64encode(eps).decode()))
        for fmt in ("JPEG", "WEBP", "GIF", "BMP"):  # the accepted ones still load
            buf = io.BytesIO()
            Image.new("RGB", (16, 12), (1, 2, 3)).save(buf, format=fmt)
            ok = client.post("/v1/judge", json=one_pair("data:image/x;base64," + base64.b64encode(buf.getvalue()).decode()))
            assert ok.status_code == 200, (fmt, ok.text[:200])
    assert r.status_code == 400 and "not a readable image" in r.json()["error"]["message"]
    assert ghostscript == []


def test_connections_that_never_finish_their_headers_are_closed():
    """300 of 300 slow-header connections were still held after 15 s; now each has `header_timeout_s`."""
    import socket

    from app.edge import server_config

    client, _ = make_client()
    server = LoopbackServer(client.app)  # its port and start-up wait, with the server `deltarubric serve` runs
    server.server = uvicorn.Server(server_config(client.app, host="127.0.0.1", port=server.port, header_timeout_s=0.5,
                                                 drain_s=5, log_level="warning"))  # fmt: skip
    server.thread = threading.Thread(target=server.server.run, daemon=True)
    with server:
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(20)]
        for s in socks:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        open_ = set(range(len(socks)))
        for _ in range(50):  # trickle one header line every 0.1 s, for 5 s at most
            for k in list(open_):
                try:
                    socks[k].sendall(b"X-Slow: 1\r\n")
                    socks[k].settimeout(0.01)
                    if socks[k].recv(1) == b"":
                        open_.discard(k)
                except (TimeoutError, BlockingIOError):
                    pass
                except OSError:  # reset by the server
                    open_.discard(k)
            if not open_:
                break
            time.sleep(0.1)
        health = httpx.get(server.url + "/health", timeout=5)  # a well-behaved client is served meanwhile
        for s in socks:
            s.close()
    assert open_ == set(), f"{len(open_)} of {len(socks)} slow-header connections still open"
    assert health.status_code == 200


def test_health_answers_head_and_reports_pools_and_queue():
    client, _ = make_client(work_threads=3, decode_threads=1, media_downloads=5, max_queue=7)
    with client:
        head = client.head("/health")
        body = client.get("/health").json()
        metrics = client.get("/metrics").text
    assert head.status_code == 200 and head.content == b""
    assert body == {"status": "ok", "saturated": [], "queue": {"pairs": 0, "limit": 7},
                    "pools": {"work": {"size": 3, "busy": 0, "waiting": 0}, "decode": {"size": 1, "busy": 0, "waiting": 0},
                              "downloads": {"size": 5, "busy": 0, "waiting": 0}}}  # fmt: skip
    assert 'deltarubric_pool_size{pool="downloads"} 5.0' in metrics and 'deltarubric_pool_busy{pool="work"} 0.0' in metrics


def test_access_log_has_one_line_per_request_and_never_bodies_or_tokens(caplog):
    client, _ = make_client(api_key="s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    with caplog.at_level(logging.INFO, logger="deltarubric.access"), client:
        client.post("/get_reward", json=get_reward_body(["Two cats.", ""]), headers=auth)
        client.post("/v1/judge", json={"requests": []}, headers=auth)
        client.get("/private/path?token=abc")
    lines = [r.getMessage() for r in caplog.records if r.name == "deltarubric.access"]
    assert len(lines) == 3
    assert re.fullmatch(r'testclient "POST /get_reward" 200 \d+\.\d{3}s pairs=1', lines[0]), lines[0]  # the empty one is not judged
    assert re.fullmatch(r'testclient "POST /v1/judge" 400 \d+\.\d{3}s pairs=-', lines[1]), lines[1]
    assert re.fullmatch(r'testclient "GET other" 401 \d+\.\d{3}s pairs=-', lines[2]), lines[2]
    assert not any(secret in "\n".join(lines) for secret in ("s3cret", "cats", "Three dogs", "private", "token"))
    caplog.clear()
    quiet, _ = make_client(access_log=False)
    with caplog.at_level(logging.INFO, logger="deltarubric.access"), quiet:
        quiet.get("/health")
    assert [r for r in caplog.records if r.name == "deltarubric.access"] == []


def test_judge_calls_hold_at_most_max_batch_pixels():
    backend = ScriptedBackend(cat_lover, confidence=0.9)
    judge = Judge(JudgeConfig(model="scripted", judge="direct"), backend=backend)
    image = png_data_url(size=(40, 20))  # 800 pixels
    pairs = [{"id": str(k), "question": f"How many cats? ({k})", "images": [image], "a": {"text": "x"}, "b": {"text": "y"}}
             for k in range(5)]  # fmt: skip
    with TestClient(build_app(judge, ServerSettings(max_batch_pixels=1600, batch_window_ms=50))) as client:
        r = client.post("/v1/judge", json={"requests": pairs})
    assert r.status_code == 200 and [v["id"] for v in r.json()["results"]] == ["0", "1", "2", "3", "4"]
    assert sorted(len(call) for call in backend.calls) == [1, 2, 2]  # 2 pairs of 800 pixels per call at most
