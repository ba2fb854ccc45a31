"""The `openai` backend against a real OpenAI-compatible endpoint on loopback that runs the tiny model.

The endpoint is our own app (app/server.py) under uvicorn; the official `openai` client checks its answers' schema.
"""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from fastapi import Request
from fastapi.responses import JSONResponse
from PIL import Image

from deltarubric.rm.backends.base import ImagePart, Message, TextPart
from deltarubric.rm.backends.openai_api import OpenAIBackend
from deltarubric.rm.config import JudgeConfig, SamplingConfig
from deltarubric.rm.judge import Judge
from deltarubric.rm.retry import RetryPolicy
from deltarubric.rm.types import JudgeRequest
from tests.conftest import LoopbackServer, free_port, tiny_app


def data_url(path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def test_official_client_accepts_our_responses(tiny_server, image_file):
    client = openai.OpenAI(base_url=tiny_server.url + "/v1", api_key="unused")
    assert [m.id for m in client.models.list().data] == ["tiny"]
    completion = client.chat.completions.create(
        model="tiny",
        messages=[
            {"role": "system", "content": "You are a judge."},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_url(image_file)}},
                    {"type": "text", "text": "How many shapes?"},
                ],
            },
        ],
        max_tokens=8,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert len(choice.logprobs.content) == completion.usage.completion_tokens
    assert all(len(t.top_logprobs) == 2 for t in choice.logprobs.content)
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_server_rejects_bad_input_with_one_error_shape(tiny_server):
    client = openai.OpenAI(base_url=tiny_server.url + "/v1", api_key="unused", max_retries=0)
    bad_image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"}}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [bad_image]}])
    assert "not a readable image" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=[{"role": "robot", "content": "hi"}])
    assert e.value.body["param"] == "messages.0.role"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])


def test_openai_backend_matches_transformers_backend(tiny_server, tiny_backend, tiny_config, image_file):
    """Greedy decoding through HTTP (image sent as a PNG data URL) gives exactly the local backend's output."""
    request = JudgeRequest(id="x", question="How many shapes?", images=[str(image_file)], a="Two.", b="Three.")
    local = Judge(tiny_config.model_copy(update={"judge": "deltarubric", "swap": True}), backend=tiny_backend)
    remote_config = tiny_config.model_copy(
        update={
            "judge": "deltarubric",
            "swap": True,
            "model": "tiny",
            "compute": tiny_config.compute.model_copy(
                update={"backend": "openai", "base_urls": [tiny_server.url + "/v1"]}
            ),
        }
    )
    remote = Judge(remote_config)
    assert isinstance(remote.backend, OpenAIBackend)
    a, b = local.judge(request), remote.judge(request)
    assert a.raw == b.raw and a.usage == b.usage
    assert a.model_dump(exclude={"latency_s"}) == b.model_dump(exclude={"latency_s"})

    conv = [Message("user", (ImagePart(Image.open(image_file).convert("RGB")), TextPart("Describe.")))]
    sampling = SamplingConfig(max_tokens=6, top_logprobs=3)
    (g_local,), (g_remote,) = tiny_backend.generate([conv], sampling), remote.backend.generate([conv], sampling)
    assert [t.token for t in g_local.tokens] == [t.token for t in g_remote.tokens]
    assert [t.logprob for t in g_local.tokens] == pytest.approx([t.logprob for t in g_remote.tokens], abs=1e-6)


def counting_app(tiny_backend, fail_first: int = 0):
    """Our real app, with a middleware that counts requests and answers the first `fail_first` with 503."""
    app = tiny_app(tiny_backend)
    app.state.hits = 0

    @app.middleware("http")
    async def flaky(request: Request, call_next):
        app.state.hits += 1
        if app.state.hits <= fail_first:
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        return await call_next(request)

    return app


def short_conv(text: str = "Hi.") -> list[Message]:
    return [Message.text("user", text)]


def test_retries_5xx_with_backoff_then_succeeds(tiny_backend):
    app = counting_app(tiny_backend, fail_first=2)
    with LoopbackServer(app) as server:
        backend = OpenAIBackend("tiny", [server.url + "/v1"], max_retries=3, backoff_s=0.01)
        (gen,) = backend.generate([short_conv()], SamplingConfig(max_tokens=4))
    assert gen.error is None and gen.usage.completion_tokens > 0
    assert app.state.hits == 3


def test_gives_up_after_max_retries_and_does_not_retry_4xx(tiny_backend):
    app = counting_app(tiny_backend, fail_first=100)
    with LoopbackServer(app) as server:
        backend = OpenAIBackend("tiny", [server.url + "/v1"], max_retries=2, backoff_s=0.01)
        (gen,) = backend.generate([short_conv()], SamplingConfig(max_tokens=4))
        assert "HTTP 503" in gen.error and app.state.hits == 3
        wrong_model = OpenAIBackend("nope", [server.url + "/v1"], max_retries=5, backoff_s=0.01)
        app.state.hits = 100  # past the failures: the request reaches the handler, which answers 404
        (gen,) = wrong_model.generate([short_conv()], SamplingConfig(max_tokens=4))
        assert "HTTP 404" in gen.error and app.state.hits == 101


@pytest.mark.parametrize(
    ("outcome", "retried"),
    [
        (httpx.Response(503), True),  # overloaded: later may work
        (httpx.Response(429), True),
        (httpx.Response(408), True),
        (httpx.Response(400), False),  # a malformed request stays malformed
        (httpx.Response(404), False),
        (httpx.Response(501), False),  # not implemented: no retry will implement it
        (httpx.ConnectError("refused"), True),  # never reached the server: safe to send again
        (httpx.RemoteProtocolError("dropped"), True),
        (httpx.ReadTimeout("slow"), False),  # waited the whole timeout already: retrying multiplies the wait
    ],
)
def test_retry_policy_retries_what_later_may_fix(outcome, retried):
    assert RetryPolicy().retryable(outcome) is retried


def test_retry_policy_waits_as_the_server_says_else_backs_off():
    policy = RetryPolicy(backoff_s=1.0, max_retry_after_s=30.0)
    assert policy.delay_s(1, httpx.Response(503, headers={"Retry-After": "2"})) == 2.0
    assert policy.delay_s(1, httpx.Response(503, headers={"Retry-After": "3600"})) == 30.0  # a bad header is capped
    assert 0.5 <= policy.delay_s(1, httpx.Response(503)) <= 1.5  # jittered around backoff_s
    assert 2.0 <= policy.delay_s(3, httpx.ConnectError("refused")) <= 6.0  # doubled per retry
    dated = httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert 0.5 <= policy.delay_s(1, dated) <= 1.5  # an HTTP-date falls back to the backoff


def test_round_robin_over_replicas_and_failover(tiny_backend):
    app1, app2 = counting_app(tiny_backend), counting_app(tiny_backend)
    with LoopbackServer(app1) as s1, LoopbackServer(app2) as s2:
        backend = OpenAIBackend("tiny", [s1.url + "/v1", s2.url + "/v1"], concurrency=4)
        gens = backend.generate([short_conv(f"Hi {i}.") for i in range(6)], SamplingConfig(max_tokens=3))
        assert all(g.error is None for g in gens)
        assert (app1.state.hits, app2.state.hits) == (3, 3)
        dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
        backend = OpenAIBackend("tiny", [dead, s1.url + "/v1"], max_retries=1, backoff_s=0.01)
        (gen,) = backend.generate([short_conv()], SamplingConfig(max_tokens=3))
        assert gen.error is None  # the retry went to the live replica


def test_unreachable_server_is_an_error_verdict_not_an_exception(image_file):
    compute = {"backend": "openai", "base_urls": [f"http://127.0.0.1:{free_port()}/v1"], "max_retries": 0}
    config = JudgeConfig(model="tiny", judge="direct", compute=compute)
    v = Judge(config).judge(JudgeRequest(question="How many?", images=[str(image_file)], a="1", b="2"))
    assert v.winner is None and "ConnectError" in v.error


def test_request_body_carries_sampling_and_pixel_limits(image_file):
    backend = OpenAIBackend("judge", ["http://unused/v1"], min_pixels=1024, max_pixels=4096)
    img = Image.open(image_file).convert("RGB")
    conv = [Message.text("system", "s"), Message("user", (ImagePart(img), TextPart("q")))]
    body = backend.body(conv, SamplingConfig(temperature=0.0, max_tokens=99, seed=5, top_logprobs=4), {})
    assert body["messages"][0] == {"role": "system", "content": "s"}
    image_part, text_part = body["messages"][1]["content"]
    assert image_part["image_url"]["url"].startswith("data:image/png;base64,") and text_part == {
        "type": "text",
        "text": "q",
    }
    decoded = Image.open(io.BytesIO(base64.b64decode(image_part["image_url"]["url"].split(",", 1)[1])))
    assert decoded.size == img.size
    assert body | {"messages": None} == {
        "model": "judge",
        "messages": None,
        "temperature": 0.0,
        "top_p": 1.0,
        "max_tokens": 99,
        "seed": 5,
        "logprobs": True,
        "top_logprobs": 4,
        "mm_processor_kwargs": {"min_pixels": 1024, "max_pixels": 4096},
    }


@pytest.mark.parametrize(
    "body",
    [b"<html>502 from a proxy</html>", b'{"choices": []}', b'{"id": "x"}'],
)
def test_malformed_success_responses_are_item_errors(body):
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def handler(request):
        return Response(body, media_type="application/json")

    app = Starlette(routes=[Route("/v1/chat/completions", handler, methods=["POST"])])
    with LoopbackServer(app) as server:
        backend = OpenAIBackend("tiny", [server.url + "/v1"], max_retries=0)
        gens = backend.generate([short_conv("a"), short_conv("b")], SamplingConfig(max_tokens=3))
    assert all("malformed chat.completion response" in g.error for g in gens)


def test_server_edge_cases(tiny_server):
    client = openai.OpenAI(base_url=tiny_server.url + "/v1", api_key="unused", max_retries=0)
    msgs = [{"role": "user", "content": "Hi."}]
    plain = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=3, logprobs=True)
    assert len(plain.choices[0].logprobs.content) == plain.usage.completion_tokens  # logprobs without top_logprobs
    assert all(t.top_logprobs == [] for t in plain.choices[0].logprobs.content)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=msgs, max_tokens=40000)
    video = {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}}
    with pytest.raises(openai.BadRequestError, match="video input is not supported"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [video]}])


def test_images_are_encoded_once_per_image_and_off_the_event_loop(monkeypatch, image_file):
    """A multi-stage judge sends the same images with every stage (and both orders): each is encoded once, in a
    thread, so a server's event loop keeps answering while a large photo is encoded."""
    import threading

    import deltarubric.rm.backends.openai_api as api
    from deltarubric.rm.backends.base import Generation

    encoded: list[str] = []
    real = api.image_to_engine_url

    def spy(img):  # type: ignore[no-untyped-def]
        encoded.append(threading.current_thread().name)
        return real(img)

    sent: list[bytes] = []

    async def post(self, client, payload):  # type: ignore[no-untyped-def]
        sent.append(payload)
        return Generation(text="ok")

    monkeypatch.setattr(api, "image_to_engine_url", spy)
    monkeypatch.setattr(OpenAIBackend, "_post", post)
    backend = OpenAIBackend("judge", ["http://unused/v1"])
    img = Image.open(image_file).convert("RGB")
    conv = [Message("user", (ImagePart(img), TextPart("q")))]
    for _stage in range(3):
        backend.generate([conv, conv], SamplingConfig(max_tokens=4))
    assert len(sent) == 6 and len(encoded) == 1 and encoded[0] != threading.main_thread().name
    assert len(backend._encoded) == 1
    del conv, img
    import gc

    gc.collect()
    assert len(backend._encoded) == 0  # dropped with the image: only images still in use are held


def test_pictures_from_jpegs_are_sent_as_jpeg_and_others_as_exact_png():
    from deltarubric.rm.media import decode_image, image_to_engine_url

    def encoded(fmt: str) -> tuple[Image.Image, str]:
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, format=fmt)
        img = decode_image(buf.getvalue(), fmt, max_input_pixels=10**8)
        return img, image_to_engine_url(img)

    _, jpeg_url = encoded("JPEG")
    assert jpeg_url.startswith("data:image/jpeg;base64,")
    png, png_url = encoded("PNG")
    assert png_url.startswith("data:image/png;base64,")
    back = Image.open(io.BytesIO(base64.b64decode(png_url.split(",", 1)[1])))
    assert back.convert("RGB").tobytes() == png.tobytes()
