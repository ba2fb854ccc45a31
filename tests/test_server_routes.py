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

from deltarubric.app.server import build_app
from deltarubric.app.settings import ServerSettings
from deltarubric.rm.config import JudgeConfig
from deltarubric.rm.judge import Judge
from deltarubric.rm.tasks import infer_task_type
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


PROMPT = (
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|image_pad|>"
    "<|vision_end|>How many cats are there?<|im_end|>\n<|im_start|>assistant\n"
)


def get_reward_body(responses: list[str], reference: str = "Three dogs.") -> dict:
    label = json.dumps({"reference": reference, "images": [png_data_url()]})
    return {
        "query": [PROMPT + r + "<|im_end|>" for r in responses],
        "prompts": [PROMPT] * len(responses),
        "labels": [label] * len(responses),
    }


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
        r = client.post(
            "/v1/judge",
            json={
                "requests": [pair | {"id": "x"}, pair | {"id": "y", "a": {"text": "None."}, "b": {"text": "A cat."}}]
            },
        )
    assert r.status_code == 200
    results = r.json()["results"]
    assert [(v["id"], v["winner"], v["consistent"]) for v in results] == [("x", "A", True), ("y", "B", True)]
    assert results[0]["p_a"] == pytest.approx(0.9) and results[1]["p_a"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    "request_, param",
    [
        (
            {"question": "Q?", "images": [], "a": {"text": "x"}, "b": {"text": "y"}, "colour": "red"},
            "requests.0.colour",
        ),
        ({"question": "Q?", "task_type": "audio", "a": {"text": "x"}, "b": {"text": "y"}}, "requests.0.task_type"),
        (
            {"question": "Q?", "a": {"text": "x"}, "b": {"text": "y"}},
            "requests.0",
        ),  # image_understanding without an image
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
        ref = client.post(
            "/v1/rewards",
            json={
                "mode": "reference",
                "items": [
                    base | {"response": "One cat.", "reference": "Nothing."},
                    base | {"response": "Nothing.", "reference": "One cat."},
                ],
            },
        )
        items = [base | {"group_id": "g", "response": r} for r in ("One cat.", "A dog.", "A bird.")]
        rate = client.post("/v1/rewards", json={"mode": "group", "items": items})
        bt = client.post("/v1/rewards", json={"mode": "group", "group_scoring": "bradley_terry", "items": items})
    assert ref.json()["rewards"] == pytest.approx([0.9, 0.1]) and ref.json()["valid"] == [True, True]
    # cat vs dog and cat vs bird: 0.9 each; dog vs bird: a positional tie-break, 0.5 after both orders
    assert rate.json()["rewards"] == pytest.approx([0.9, 0.3, 0.3])
    assert rate.json()["details"][0] == {"comparisons": 2, "parsed": 2}
    strengths = bt.json()["rewards"]
    assert (
        strengths[0] > 0 > strengths[1]
        and strengths[1] == pytest.approx(strengths[2])
        and sum(strengths) == pytest.approx(0, abs=1e-9)
    )


@pytest.mark.parametrize(
    "body, message",
    [
        ({"mode": "reference", "items": [{"question": "Q", "response": "r"}]}, "needs a non-empty 'reference'"),
        ({"mode": "group", "items": [{"question": "Q", "response": "r"}]}, "needs a 'group_id'"),
        ({"mode": "vote", "items": [{"question": "Q", "response": "r"}]}, "mode"),
        # a misspelt field: both problems named, so the answer says what to fix
        (
            {"itemz": [{"question": "Q", "response": "r"}]},
            "items: Field required; itemz: Extra inputs are not permitted",
        ),
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
    client, _ = make_client(
        max_body_bytes=4096, max_pairs_per_request=2, max_images_per_request=2, max_input_pixels=10_000
    )
    pair = {"question": "Q?", "images": [png_data_url()], "a": {"text": "x"}, "b": {"text": "y"}}
    with client:
        assert (
            client.post(
                "/v1/judge", content=b"{" + b" " * 5000 + b"}", headers={"content-type": "application/json"}
            ).status_code
            == 413
        )
        too_many = client.post("/v1/judge", json={"requests": [pair] * 3})
        assert too_many.status_code == 413 and "limit is 2" in too_many.json()["error"]["message"]
        images = client.post("/v1/judge", json={"requests": [pair | {"images": [png_data_url()] * 3}]})
        assert images.status_code == 413 and "images" in images.json()["error"]["message"]
        big = client.post("/v1/judge", json=one_pair(png_data_url(size=(200, 100))))
        assert big.status_code == 400 and "exceeds the limit of 10000" in big.json()["error"]["message"]
        corrupt = client.post(
            "/v1/judge", json=one_pair("data:image/png;base64," + base64.b64encode(b"\x89PNG garbage").decode())
        )
        assert corrupt.status_code == 400 and "requests[0].images[0]" in corrupt.json()["error"]["message"]
        assert (
            client.post("/v1/judge", content=b"not json", headers={"content-type": "application/json"}).status_code
            == 400
        )


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
    assert [o["shown_order"] for o in flipped["orders"]] == ["AB", "BA"]
    assert [o["winner"] for o in flipped["orders"]] == ["B", "B"]
    # The vote as read stays in the labels shown: the mirror's BA showed what the original's AB showed.
    assert [o["label"] for o in flipped["orders"]] == [o["label"] for o in reversed(first["orders"])]
    assert [o["label"] for o in first["orders"]] == ["A", "B"]
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
    assert (
        "deltarubric_batch_size_count" in metrics
        and 'deltarubric_requests_total{route="/get_reward",status="200"} 24.0' in metrics
    )


def test_chat_completions_still_served(tiny_server):
    import openai

    client = openai.OpenAI(base_url=tiny_server.url + "/v1", api_key="unused")
    completion = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=3
    )
    assert completion.choices[0].message.role == "assistant"


def test_serve_command_exposes_the_reward_routes(tiny_model_dir):
    """`deltarubric serve` as a user runs it, then /get_reward and /metrics over HTTP."""
    from tests.conftest import served

    limits = (
        "--max-input-tokens",
        "1500",
        "--max-completion-tokens",
        "8",
        "--max-request-pixels",
        "1000",
        "--no-access-log",
        "--max-chat-messages",
        "2",
        "--max-held-pixels",
        "5000",
    )
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
        chat["max_tokens"], chat["messages"] = 2, chat["messages"] * 3
        r = httpx.post(url + "/v1/chat/completions", json=chat, timeout=60)
        assert r.status_code == 413 and "--max-chat-messages" in r.json()["error"]["message"], r.text
        assert "5000" in httpx.get(url + "/health").text  # the held-pixel budget as given


def test_group_rewards_do_not_depend_on_other_groups():
    client, _ = make_client()
    base = {"question": "How many cats?", "task_type": "text"}
    alone = [base | {"group_id": "g", "response": r} for r in ("One cat.", "A dog.", "A bird.")]
    other = [base | {"group_id": "h", "response": r} for r in ("cat cat", "cat", "none", "x")]
    with client:
        for scoring in ("bradley_terry", "win_rate"):
            a = client.post("/v1/rewards", json={"mode": "group", "group_scoring": scoring, "items": alone}).json()[
                "rewards"
            ]
            b = client.post(
                "/v1/rewards", json={"mode": "group", "group_scoring": scoring, "items": alone + other}
            ).json()["rewards"]
            assert b[:3] == pytest.approx(a)


def test_bradley_terry_fits_the_prior_anchored_model():
    from deltarubric.app.rewards import bradley_terry

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
        for url in (
            "http://100.100.100.200/latest/meta-data.png",
            "http://169.254.169.254/x.png",
            "http://[::1]:80/a.png",
        ):
            r = client.post("/v1/judge", json=one_pair(url))
            assert r.status_code == 400 and "internal address" in r.json()["error"]["message"], url


def test_chat_route_counts_images_against_the_limit():
    client, _ = make_client(max_images_per_request=1)
    image = {"type": "image_url", "image_url": {"url": png_data_url()}}
    with client:
        r = client.post(
            "/v1/chat/completions", json={"model": "judge", "messages": [{"role": "user", "content": [image, image]}]}
        )
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
            ok = client.post(
                "/v1/judge", json=one_pair("data:image/x;base64," + base64.b64encode(buf.getvalue()).decode())
            )
            assert ok.status_code == 200, (fmt, ok.text[:200])
    assert r.status_code == 400 and "not a readable image" in r.json()["error"]["message"]
    assert ghostscript == []


def test_connections_that_never_finish_their_headers_are_closed():
    """300 of 300 slow-header connections were still held after 15 s; now each has `header_timeout_s`."""
    import socket

    from deltarubric.app.edge import server_config

    client, _ = make_client()
    server = LoopbackServer(client.app)  # its port and start-up wait, with the server `deltarubric serve` runs
    server.server = uvicorn.Server(
        server_config(
            client.app, host="127.0.0.1", port=server.port, header_timeout_s=0.5, drain_s=5, log_level="warning"
        )
    )
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
    assert body == {
        "status": "ok",
        "saturated": [],
        "queue": {"pairs": 0, "limit": 7},
        "pools": {
            "work": {"size": 3, "busy": 0, "waiting": 0},
            "decode": {"size": 1, "busy": 0, "waiting": 0},
            "downloads": {"size": 5, "busy": 0, "waiting": 0},
        },
        "pixels": {"limit": 2 * 128 * 1024 * 1024, "held": 0, "waiting": 0},
    }
    assert (
        'deltarubric_pool_size{pool="downloads"} 5.0' in metrics and 'deltarubric_pool_busy{pool="work"} 0.0' in metrics
    )


def test_access_log_has_one_line_per_request_and_never_bodies_or_tokens(caplog):
    client, _ = make_client(api_key="s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    with caplog.at_level(logging.INFO, logger="deltarubric.access"), client:
        client.post("/get_reward", json=get_reward_body(["Two cats.", ""]), headers=auth)
        client.post("/v1/judge", json={"requests": []}, headers=auth)
        client.get("/private/path?token=abc")
    lines = [r.getMessage() for r in caplog.records if r.name == "deltarubric.access"]
    assert len(lines) == 3
    assert re.fullmatch(r'testclient "POST /get_reward" 200 \d+\.\d{3}s pairs=1', lines[0]), lines[
        0
    ]  # the empty one is not judged
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
    pairs = [
        {"id": str(k), "question": f"How many cats? ({k})", "images": [image], "a": {"text": "x"}, "b": {"text": "y"}}
        for k in range(5)
    ]
    with TestClient(build_app(judge, ServerSettings(max_batch_pixels=1600, batch_window_ms=50))) as client:
        r = client.post("/v1/judge", json={"requests": pairs})
    assert r.status_code == 200 and [v["id"] for v in r.json()["results"]] == ["0", "1", "2", "3", "4"]
    assert sorted(len(call) for call in backend.calls) == [1, 2, 2]  # 2 pairs of 800 pixels per call at most


# ---------------------------------------------------------------------------------------------------- review fixes


def test_a_group_sharing_one_image_counts_it_once_against_the_image_limit():
    """--max-images-per-request counts distinct media of the request: a GRPO group's one image, shown in every pair
    (6 here), is one image; a second distinct image makes two."""
    client, _ = make_client(max_images_per_request=1)
    image = png_data_url()
    group = [
        {"group_id": "g", "question": "How many cats?", "images": [image], "response": f"{i} cats"} for i in range(4)
    ]
    with client:
        r = client.post("/v1/rewards", json={"mode": "group", "items": group})
        assert r.status_code == 200 and r.json()["valid"] == [True] * 4, r.text[:300]
        twice = [group[0] | {"images": [image] * 2}, group[1]]
        repeated = client.post("/v1/rewards", json={"mode": "group", "items": twice})
        group[0]["images"] = [png_data_url(color=(1, 2, 3))]  # a pair shows its first rollout's prompt images
        r = client.post("/v1/rewards", json={"mode": "group", "items": group})
    assert r.status_code == 413 and "2 images in one request; the limit is 1" in r.json()["error"]["message"]
    # within one pair every occurrence is shown to the judge, so it counts
    assert repeated.status_code == 413 and "2 images in one pair; the limit is 1" in repeated.json()["error"]["message"]


def test_chat_message_count_is_limited_before_templating():
    judge = Judge(JudgeConfig(model="scripted", judge="direct"), backend=ScriptedBackend(lambda conv: "Hello."))
    client = TestClient(build_app(judge, ServerSettings(served_model_name="judge", max_chat_messages=3)))
    messages = [{"role": "user", "content": "Hi"}] * 3
    with client:
        ok = client.post("/v1/chat/completions", json={"model": "judge", "max_tokens": 4, "messages": messages})
        over = client.post("/v1/chat/completions", json={"model": "judge", "max_tokens": 4, "messages": messages * 2})
    assert ok.status_code == 200, ok.text[:300]
    assert over.status_code == 413
    assert over.json()["error"]["message"] == "6 messages in one request; the limit is 3 (--max-chat-messages)"


def test_the_per_message_token_bound_never_exceeds_a_real_count(tiny_model_dir):
    """The chat precheck refuses n messages when n x tokens_per_message is over the limit, without templating: a
    lower bound, so it may never refuse a conversation that fits. Checked against real counts of empty and short
    messages in every role order."""
    import types

    from deltarubric.app.limits import TokenCounter
    from deltarubric.rm.backends import Message
    from deltarubric.rm.hf_compat import load_processor

    counter = TokenCounter(types.SimpleNamespace(processor=load_processor(str(tiny_model_dir))))
    per = counter.tokens_per_message
    assert per >= 1
    for roles in (["user"] * 7, ["system", "user", "assistant", "user"], ["user", "assistant"] * 5):
        for text in ("", "a", "hello there"):
            conv = [Message.text(r, text) for r in roles]  # type: ignore[arg-type]
            exact = next(n for n in range(1, 10_000) if counter.excess(conv, n) is None)  # the smallest limit it fits
            assert len(conv) * per <= exact, (roles, text, per, exact)


def test_pixel_budget_is_first_come_first_served_and_gives_back_what_waiters_leave():
    from deltarubric.app.metrics import Metrics
    from deltarubric.app.pools import PixelBudget

    async def scenario() -> None:
        budget = PixelBudget(100, Metrics())
        assert await budget.take(60) == 60
        big = asyncio.create_task(budget.take(80))  # must wait: 60 held
        await asyncio.sleep(0)
        small = asyncio.create_task(budget.take(10))  # would fit, but waits behind the earlier, larger taker
        await asyncio.sleep(0)
        assert budget.snapshot() == {"limit": 100, "held": 60, "waiting": 2} and not small.done()
        big.cancel()  # the head gives up: the small one behind it is served at once
        assert await asyncio.wait_for(small, 1) == 10 and budget.held == 70 and big.cancelled()
        whole = asyncio.create_task(budget.take(1000))  # a share over the budget waits for all of it
        await asyncio.sleep(0)
        budget.release(70)
        assert await whole == 100 and budget.held == 100
        budget.release(100)
        assert budget.snapshot() == {"limit": 100, "held": 0, "waiting": 0}

    asyncio.run(scenario())


def test_a_request_that_waits_past_its_timeout_for_pixel_budget_is_503_with_retry_after():
    from deltarubric.app.batcher import Saturated
    from deltarubric.app.context import ServerContext

    backend = ScriptedBackend(cat_lover)
    judge = Judge(JudgeConfig(model="scripted", judge="direct"), backend=backend)

    async def scenario() -> None:
        state = ServerContext(judge.backend, ServerSettings(request_timeout_s=0.2, max_held_pixels=1000))
        async with state.policy.lease() as other:  # another request's decoded images fill the budget
            await other.take(1000)
            with pytest.raises(Saturated, match="--max-held-pixels"):
                async with state.deadline() as lease:
                    await lease.take(10)
            assert state.policy.pixels.snapshot() == {"limit": 1000, "held": 1000, "waiting": 0}
            with pytest.raises(TimeoutError):  # out of time for anything else: a plain timeout (504)
                async with state.deadline():
                    await asyncio.sleep(1)
        assert state.policy.pixels.held == 0
        await state.close()

    asyncio.run(scenario())
    client, _ = make_client()
    with client:
        r = client.get("/health").json()
    assert r["pixels"] == {"limit": 2 * 128 * 1024 * 1024, "held": 0, "waiting": 0}  # the documented default


class HeldBackend(ScriptedBackend):
    """Answers at once, except conversations mentioning HOLD, which wait until released (a busy engine); counts the
    calls that were cancelled."""

    def __init__(self) -> None:
        super().__init__(lambda conv: "Winner: [[A]]")
        self.release = asyncio.Event()
        self.cancelled = 0

    async def agenerate(self, conversations, sampling):
        if any("HOLD" in all_text(c) for c in conversations):
            self.calls.append(list(conversations))
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            self.calls.pop()
        return await super().agenerate(conversations, sampling)


def test_work_nobody_waits_for_is_dropped_from_the_queue_and_cancelled_when_running():
    from deltarubric.app.batcher import MicroBatcher
    from deltarubric.app.metrics import Metrics
    from deltarubric.rm.types import JudgeRequest

    def req(question: str) -> JudgeRequest:
        return JudgeRequest(id=question, task_type="text", question=question, a="one", b="two")

    async def scenario() -> None:
        backend = HeldBackend()
        judge = Judge(JudgeConfig(model="scripted", judge="direct"), backend=backend)
        batcher = MicroBatcher(
            judge,
            Metrics(),
            max_batch=1,
            window_s=0,
            max_queue=10,
            concurrent_batches=1,
            cache_size=0,
            call_timeout_s=60,
        )
        batcher.start()
        first = asyncio.create_task(batcher.submit([req("HOLD 1")]))
        shared = asyncio.create_task(batcher.submit([req("HOLD 1")]))  # a second request waiting for the same pair
        while not backend.calls:
            await asyncio.sleep(0.01)
        queued = asyncio.create_task(batcher.submit([req("HOLD 2")]))
        await asyncio.sleep(0.05)
        assert batcher.queued == 1
        queued.cancel()  # its request gave up: the pair leaves the queue, never judged
        await asyncio.sleep(0.05)
        assert batcher.queued == 0 and len(backend.calls) == 1
        first.cancel()  # one of the two waiting for the running call gives up: it keeps running for the other
        await asyncio.sleep(0.05)
        assert backend.cancelled == 0
        shared.cancel()  # and now nobody waits: the call is cancelled, the engine free
        await asyncio.sleep(0.05)
        assert backend.cancelled == 1
        after = await asyncio.wait_for(batcher.submit([req("plain")]), 5)  # the next pair is judged at once
        assert after[0].winner == "A"
        again = asyncio.create_task(batcher.submit([req("HOLD 1")]))  # asking again later judges it afresh
        await asyncio.sleep(0.05)
        backend.release.set()
        assert (await asyncio.wait_for(again, 5))[0].winner == "A"
        await batcher.close(1)

    asyncio.run(scenario())


def test_a_client_that_hangs_up_mid_body_never_reaches_the_app_and_is_not_a_500():
    client, backend = make_client()
    app = client.app

    async def scenario() -> list[dict]:
        sent: list[dict] = []
        messages = iter(
            [{"type": "http.request", "body": b'{"requests": [', "more_body": True}, {"type": "http.disconnect"}]
        )

        async def receive() -> dict:
            return next(messages)

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/judge",
            "raw_path": b"/v1/judge",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "scheme": "http",
            "http_version": "1.1",
            "root_path": "",
            "state": {},
        }
        await app(scope, receive, send)
        return sent

    assert asyncio.run(scenario()) == []  # nothing answered: nobody is there
    with client:
        metrics = client.get("/metrics").text
    assert 'deltarubric_client_disconnects_total{route="/v1/judge"} 1.0' in metrics
    assert 'route="/v1/judge",status="500"' not in metrics and backend.calls == []


def test_mpo_jpegs_shrink_while_decoding_like_jpegs(monkeypatch):
    """Cameras write MPO (a JPEG with more frames); Pillow opens such a file as MPO, not JPEG, and it must still be
    decoded straight at a reduced scale rather than at full size first."""
    from PIL import JpegImagePlugin

    from deltarubric.rm.media import SOURCE_FORMAT, decode_image, open_image

    frames = [Image.new("RGB", (1600, 1200), (200, 30, 30)), Image.new("RGB", (1600, 1200), (30, 30, 200))]
    buf = io.BytesIO()
    frames[0].save(buf, format="MPO", save_all=True, append_images=frames[1:])
    data = buf.getvalue()
    assert open_image(data, "mpo", 10**8).format == "MPO"
    drafted: list[tuple] = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):  # type: ignore[no-untyped-def]
        drafted.append(size)
        return draft(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    img = decode_image(data, "mpo", max_input_pixels=10**8, max_pixels=400 * 300)
    assert drafted == [(400, 300)]
    assert img.size == (400, 300) and img.getpixel((10, 10))[0] > 150  # the first frame, shrunk
    assert img.info[SOURCE_FORMAT] == "JPEG"


def test_prompts_within_the_limit_in_bytes_are_not_tokenized(tiny_model_dir):
    """Byte-level BPE (Qwen's) never has more tokens than bytes: a prompt of fewer bytes than the limit fits without
    tokenizing it; one near the limit is still counted exactly."""
    import types

    from deltarubric.app.limits import TokenCounter
    from deltarubric.rm.backends import Message
    from deltarubric.rm.hf_compat import load_processor

    counter = TokenCounter(types.SimpleNamespace(processor=load_processor(str(tiny_model_dir))))
    conv = [Message.text("user", "How many cats are on the sofa? " * 20)]
    real = counter.tokenizer
    messages = [{"role": "user", "content": [{"type": "text", "text": conv[0].content[0].text}]}]
    text = real.apply_chat_template(
        messages, chat_template=counter.chat_template, tokenize=False, add_generation_prompt=True
    )
    exact = len(real(text, add_special_tokens=False)["input_ids"])
    size = len(text.encode())
    assert exact < size
    calls: list[str] = []

    class Counting:
        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(real, name)

        def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append("tokenized")
            return real(*args, **kwargs)

    assert counter.tokens_per_message  # measured once, at start
    counter.tokenizer = Counting()
    assert counter.excess(conv, size + 1) is None and calls == []
    assert counter.excess(conv, exact) is None and counter.excess(conv, exact - 1) == f"{exact} tokens"
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("candidate", "images", "videos", "require_media", "task"),
    [
        ("text", ["x.png"], [], False, "image_understanding"),  # a rollout with its prompt's image
        ("text", [], [], False, "text"),  # the reward routes: no media, a text task
        ("text", [], [], True, "image_understanding"),  # the CLI: a forgotten --image fails validation, named
        ("text", ["x.png"], ["v.mp4"], False, "video_understanding"),
        ("image", ["src.png"], [], False, "image_editing"),
        ("image", [], [], False, "image_generation"),
        ("video", [], [], False, "video_generation"),
    ],
)
def test_task_type_is_inferred_from_what_the_pair_holds(candidate, images, videos, require_media, task):
    assert infer_task_type(candidate, images, videos, require_media=require_media) == task
