"""Independent review of the reward server's hardening (issue 11), against real `deltarubric serve` processes.

Two shared servers, on 127.0.0.1 and started as a user starts them (`python -m deltarubric.cli serve ...`), stderr to
a file so the access log can be read:

- `tiny`: the tiny random-weight Qwen3-VL on the transformers backend (the local engine: token counting with its own
  tokenizer, generations that run past the request timeout, cancellation, shutdown).
- `remote`: `--backend openai` in front of a fake vLLM on loopback that answers every chat completion at once (the
  production path), with `--auth-token`: limits exactly at and just past their values, accepted image formats,
  errors as JSON and counted, the access log, HEAD /health.

One more openai-backend server, with a fake engine that holds its calls, measures what concurrent requests hold.

The seven bugs this review found (each once an xfail(strict=True) naming it) are fixed; their tests now pass.
Every request loop is bounded in count and time; the only timed assertions are liveness bounds (a request that
must not wait behind another's work), generous for a slow shared machine.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
from PIL import Image, ImageDraw
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "tok-SECRET-4f1c9a"  # the remote server's bearer token: must never reach the access log
JSON_HEADERS = {"content-type": "application/json"}

# ----------------------------------------------------------------------------------------------------------------
# Servers


@dataclass
class Served:
    proc: subprocess.Popen
    url: str
    log_path: Path
    headers: dict[str, str]

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(self.url + "/metrics", headers=self.headers, timeout=10).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)


@contextmanager
def serve(tmp: Path, *args: str, headers: dict[str, str] | None = None) -> Iterator[Served]:
    """`deltarubric serve ARGS` on a free loopback port, once /health answers; killed at the end if still running."""
    port = free_port()
    log_path = tmp / f"serve-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deltarubric.cli", "serve", *args, "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"deltarubric serve exited: {log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("deltarubric serve did not become healthy in 120 s")
            time.sleep(0.2)
        yield Served(proc, url, log_path, headers or {})
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class FakeVLLM:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 that reads each request and answers 'A wins': at once, or
    after `hold_s` for a conversation containing 'HOLD' (an engine that is busy for a while)."""

    REPLY = "Analysis: the first answer fits.\nJustification: it matches.\nWinner: [[A]]"

    def __init__(self, hold_s: float = 0.0) -> None:
        fake = self
        self.calls = 0
        self.hold_s = hold_s
        self.stop = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                fake.calls += 1
                if b"HOLD" in body:
                    fake.stop.wait(fake.hold_s)
                out = json.dumps(
                    {
                        "id": "c",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "judge",
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": FakeVLLM.REPLY},
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


# Tiny server: judge calls generate up to 3000 tokens (far past the 4 s request timeout on a CPU); chat may ask up to
# 3000; prompts up to 2000 tokens; headers within 1 s; shutdown drains for 1 s.
TINY_REQUEST_TIMEOUT = 4.0
TINY_MAX_INPUT_TOKENS = 2000
TINY_CAP = 3000


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    args = [
        "-m",
        str(tiny_model_dir),
        "--backend",
        "transformers",
        "--device",
        "cpu",
        "--judge",
        "direct",
        "--served-model-name",
        "tiny",
        "--max-tokens",
        "3000",
        "--max-completion-tokens",
        str(TINY_CAP),
        "--max-input-tokens",
        str(TINY_MAX_INPUT_TOKENS),
        "--request-timeout",
        str(TINY_REQUEST_TIMEOUT),
        "--drain-timeout",
        "1",
        "--header-timeout",
        "1",
        "--batch-window-ms",
        "0",
    ]
    with serve(tmp_path_factory.mktemp("tiny-serve"), *args) as server:
        yield server


# Remote server: limits small enough to reach cheaply, the rest at their defaults.
REMOTE_MAX_BODY = 4_000_000
REMOTE_MAX_PAIRS = 66  # a group of 12 rollouts: 12 * 11 / 2
REMOTE_MAX_ITEMS = 66
REMOTE_MAX_REQUEST_PIXELS = 4096 * 4096  # exactly one image at the default --max-pixels


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with FakeVLLM() as fake:
        args = [
            "-m",
            "judge",
            "--backend",
            "openai",
            "--base-url",
            fake.url,
            "--judge",
            "direct",
            "--batch-window-ms",
            "0",
            "--auth-token",
            TOKEN,
            "--max-body-bytes",
            str(REMOTE_MAX_BODY),
            "--max-pairs-per-request",
            str(REMOTE_MAX_PAIRS),
            "--max-items-per-request",
            str(REMOTE_MAX_ITEMS),
            "--max-request-pixels",
            str(REMOTE_MAX_REQUEST_PIXELS),
            "--request-timeout",
            "60",
        ]
        with serve(
            tmp_path_factory.mktemp("remote-serve"), *args, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as server:
            yield server


# ----------------------------------------------------------------------------------------------------------------
# Helpers


def image_url(size: tuple[int, int], fmt: str = "PNG", mode: str = "RGB", seed: int = 0, **save: Any) -> str:
    img = Image.new("RGB", size, (40 + 37 * seed % 200, 120, 200))
    ImageDraw.Draw(img).ellipse([size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2], fill=(250, 160, 40))
    img = img.convert(mode) if mode != "RGB" else img
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def textured_jpeg_url(side: int) -> str:
    """A photo-like picture (smoothed noise): a few MB as JPEG, slow to re-encode as PNG."""
    import numpy as np

    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    img = Image.fromarray(noise).resize((side, side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def pair(k: Any, images: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "id": str(k),
        "task_type": "text" if not images else "image_understanding",
        "question": f"Which is right, #{k}?",
        "images": images or [],
        "a": f"Answer #{k}: one",
        "b": f"Answer #{k}: two",
        **fields,
    }


def chat(text: str = "Hi", max_tokens: int = 2, **fields: Any) -> dict[str, Any]:
    return {"model": "tiny", "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}], **fields}


def in_background(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(work())
        except Exception as e:  # (reported by the test that reads `out`)
            out.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def worst_health_latency(
    url: str, busy: Callable[[], bool], *, rounds: int = 200, timeout_s: float = 90.0, require_probe: bool = True
) -> float:
    """GET /health every 0.1 s while `busy()`; the longest answer time seen (0 if none was). Bounded in rounds and
    time."""
    worst, seen = 0.0, 0
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(rounds):
            if not busy() or time.monotonic() > deadline:
                break
            t0 = time.monotonic()
            assert client.get("/health").status_code == 200
            worst = max(worst, time.monotonic() - t0)
            seen += 1
            time.sleep(0.1)
    assert seen or not require_probe, "the request was over before /health could be probed"
    return worst


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def assert_json_error(r: httpx.Response, status: int, *message_parts: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json"), r.headers
    error = r.json()["error"]
    assert error["code"] == status and set(error) == {"message", "type", "param", "code"}
    for part in message_parts:
        assert part in error["message"], error["message"]
    return error


def closed_by_peer(sock: socket.socket, within_s: float, trickle: bytes | None = None) -> float | None:
    """Seconds until the server closes `sock` (optionally sending `trickle` every 0.2 s meanwhile); None if it is
    still open after `within_s`."""
    t0 = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - t0 < within_s:
        try:
            if trickle:
                sock.sendall(trickle)
            data = sock.recv(65536)
            if data == b"":
                return time.monotonic() - t0
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - t0
    return None


def raw_exchange(url: str, head: bytes, body_chunks: list[bytes], pause_s: float) -> tuple[int, bytes]:
    """One HTTP/1.1 request over a raw socket (Connection: close), its body sent in chunks `pause_s` apart."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            time.sleep(pause_s)
            sock.sendall(chunk)
        data = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            part = sock.recv(65536)
            if not part:
                break
            data += part
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, data.partition(b"\r\n\r\n")[2]


# ----------------------------------------------------------------------------------------------------------------
# The serve CLI: every limit of docs/server.md's table has its flag, and --help shows the documented default.

DOC_DEFAULTS = {  # flag -> default as docs/server.md's limits table states it (typer prints floats with a '.0')
    "--header-timeout": "10.0",
    "--max-body-bytes": "67108864",
    "--request-timeout": "170.0",
    "--max-items-per-request": "256",
    "--max-pairs-per-request": "256",
    "--max-images-per-request": "64",
    "--max-request-pixels": "67108864",
    "--max-batch-pixels": "134217728",
    "--max-input-tokens": "32768",
    "--max-completion-tokens": "4096",
    "--media-timeout": "30.0",
    "--media-downloads": "8",
    "--work-threads": "4",
    "--decode-threads": "2",
    "--max-queue": "1024",
    "--cache-size": "4096",
    "--max-chat-messages": "1024",
}


@pytest.fixture(scope="module")
def serve_help() -> dict[str, str]:
    """`deltarubric serve --help`, wide, as {flag: its whole entry}."""
    env = {**os.environ, "COLUMNS": "300", "TERM": "dumb", "NO_COLOR": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "deltarubric.cli", "serve", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    entries: dict[str, str] = {}
    current = None
    for line in out.splitlines():
        m = re.match(r"^\W*(--[a-z0-9-]+)", line)
        if m:
            current = m.group(1)
            entries[current] = line
        elif current:
            entries[current] += " " + line
    return entries


def test_help_lists_every_limit_flag_with_the_documented_default(serve_help):
    docs = (ROOT / "docs/server.md").read_text()
    for flag, default in DOC_DEFAULTS.items():
        assert flag in serve_help, f"{flag} missing from serve --help"
        assert f"[default: {default}]" in serve_help[flag], (flag, serve_help[flag])
        if flag != "--cache-size":
            assert f"`{flag}`" in docs, f"{flag} is not in docs/server.md"
    assert "--drain-timeout" in serve_help and "--request-timeout" in serve_help["--drain-timeout"]
    assert (
        "--no-access-log" in serve_help.get("--access-log", "")
        and "[default: access-log]" in serve_help["--access-log"]
    )


def test_help_shows_the_pixel_limits_defaults(serve_help):
    assert "64000000" in serve_help["--max-input-pixels"], serve_help["--max-input-pixels"]
    assert "16777216" in serve_help["--max-pixels"], serve_help["--max-pixels"]


# ----------------------------------------------------------------------------------------------------------------
# Remote server (--backend openai): limits exactly at their value are served, one past is refused with the numbers.


def test_body_exactly_at_the_limit_is_served_and_one_byte_more_is_413(remote):
    items = [{"question": "q", "response": "", "reference": "r"}]
    core = json.dumps({"items": items}).encode()
    exact = core + b" " * (REMOTE_MAX_BODY - len(core))  # trailing whitespace: still valid JSON
    with remote.client() as client:
        r = client.post("/v1/rewards", content=exact, headers=JSON_HEADERS)
        assert r.status_code == 200, r.text[:300]
        assert r.json()["rewards"] == [0.0]
        over = client.post("/v1/rewards", content=exact + b" ", headers=JSON_HEADERS)
        assert_json_error(over, 413, f"request body is over {REMOTE_MAX_BODY} bytes")

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted while streaming
            for start in range(0, len(exact) + 1, 1 << 20):
                yield (exact + b" ")[start : start + (1 << 20)]

        streamed = client.post("/v1/rewards", content=chunked(), headers=JSON_HEADERS)
        assert_json_error(streamed, 413, f"request body is over {REMOTE_MAX_BODY} bytes")


def test_items_exactly_at_the_limit_are_served(remote):
    item = {"question": "q", "response": "", "reference": "r"}
    n = REMOTE_MAX_ITEMS
    with remote.client() as client:
        r = client.post("/v1/rewards", json={"items": [item] * n})
        assert r.status_code == 200 and r.json()["rewards"] == [0.0] * n, r.text[:300]
        over = client.post("/v1/rewards", json={"items": [item] * (n + 1)})
        assert_json_error(over, 413, f"{n + 1} items in one request; the limit is {n}")
        queries = {"query": ["<|im_start|>assistant\n"] * (n + 1), "labels": ['{"reference": "r"}'] * (n + 1)}
        assert_json_error(
            client.post("/get_reward", json=queries), 413, f"{n + 1} queries in one request; the limit is {n}"
        )
        queries = {k: v[:n] for k, v in queries.items()}
        r = client.post("/get_reward", json=queries)
        assert r.status_code == 200 and r.json()["rewards"] == [0.0] * n, r.text[:300]


def test_pairs_exactly_at_the_limit_are_served(remote):
    group = [{"group_id": "g", "question": "Which answer is right?", "response": f"Answer {i}"} for i in range(12)]
    with remote.client() as client:
        r = client.post("/v1/rewards", json={"mode": "group", "items": group})
        assert r.status_code == 200, r.text[:300]
        answer = r.json()
        assert answer["valid"] == [True] * 12 and answer["details"] == [{"comparisons": 11, "parsed": 11}] * 12
        # the fake judge always prefers the answer shown first: both orders judged, so every pair is a 50/50 draw
        assert answer["rewards"] == pytest.approx([0.5] * 12)
        extra = group + [{"group_id": "g", "question": "Which answer is right?", "response": "Answer 12"}]
        assert_json_error(
            client.post("/v1/rewards", json={"mode": "group", "items": extra}),
            413,
            "78 pairs in one request; the limit is 66",
        )
        judge = [pair(k) for k in range(REMOTE_MAX_PAIRS + 1)]
        assert_json_error(
            client.post("/v1/judge", json={"requests": judge}), 413, "67 pairs in one request; the limit is 66"
        )


def test_images_exactly_at_the_default_limit_are_served(remote):
    urls = [image_url((8, 8), seed=k) for k in range(65)]
    with remote.client() as client:
        r = client.post("/v1/judge", json={"requests": [pair("img64", urls[:64])]})
        assert r.status_code == 200 and r.json()["results"][0]["winner"] == "A", r.text[:300]
        assert_json_error(
            client.post("/v1/judge", json={"requests": [pair("img65", urls)]}),
            413,
            "65 images in one request; the limit is 64",
        )


def test_request_pixels_exactly_at_the_limit_are_served(remote):
    """One image of exactly --max-request-pixels (4096 x 4096, also the default --max-pixels) is judged; one pixel more
    in the request is refused from the headers."""
    full = image_url((4096, 4096), compress_level=1)  # a solid picture: small as PNG
    with remote.client() as client:
        r = client.post("/v1/judge", json={"requests": [pair("px", [full])]})
        assert r.status_code == 200 and r.json()["results"][0]["winner"] == "A", r.text[:300]
        over = client.post("/v1/judge", json={"requests": [pair("px1", [full, image_url((1, 1))])]})
        assert_json_error(
            over, 413, f"decode to {REMOTE_MAX_REQUEST_PIXELS + 1} pixels", f"the limit is {REMOTE_MAX_REQUEST_PIXELS}"
        )


def test_normal_images_of_every_accepted_format_are_served(remote):
    """Not over-refused: ordinary pictures in each documented format and the modes cameras and editors write."""
    urls = {
        "png-rgba": image_url((640, 480), "PNG", "RGBA"),
        "png-palette": image_url((640, 480), "PNG", "P", transparency=0),
        "png-16bit-grey": image_url((320, 240), "PNG", "I;16"),
        "jpeg": image_url((800, 600), "JPEG", quality=90),
        "jpeg-progressive": image_url((800, 600), "JPEG", progressive=True),
        "jpeg-cmyk": image_url((640, 480), "JPEG", "CMYK"),
        "jpeg-grey": image_url((640, 480), "JPEG", "L"),
        "webp": image_url((640, 480), "WEBP", quality=80),
        "webp-lossless-rgba": image_url((320, 240), "WEBP", "RGBA", lossless=True),
        "gif": image_url((320, 240), "GIF"),
        "bmp": image_url((320, 240), "BMP"),
    }
    with remote.client() as client:
        for name, url in urls.items():
            r = client.post("/v1/judge", json={"requests": [pair(name, [url])]})
            assert r.status_code == 200 and r.json()["results"][0]["error"] is None, (name, r.text[:300])
        tiff = image_url((64, 64), "TIFF")  # not an accepted format: refused, not decoded
        assert_json_error(
            client.post("/v1/judge", json={"requests": [pair("tiff", [tiff])]}), 400, "not a readable image"
        )


def test_a_group_of_eight_rollouts_sharing_one_image_is_served(remote):
    image = image_url((64, 48))
    group = [
        {"group_id": "p1", "question": "How many balls?", "images": [image], "response": f"{i} balls"} for i in range(8)
    ]
    with remote.client() as client:
        r = client.post("/v1/rewards", json={"mode": "group", "items": group})
    assert r.status_code == 200 and r.json()["valid"] == [True] * 8, r.text[:300]


def test_a_group_of_twelve_rollouts_sharing_one_image_is_served(remote):
    image = image_url((64, 48))
    group = [
        {"group_id": "p1", "question": "How many balls?", "images": [image], "response": f"{i} balls"}
        for i in range(12)
    ]
    with remote.client() as client:
        r = client.post("/v1/rewards", json={"mode": "group", "items": group})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["valid"] == [True] * 12


def test_remote_backend_image_encoding_does_not_freeze_health(remote):
    photo = textured_jpeg_url(3072)  # under --max-pixels: sent to the engine as is
    with remote.client() as client:
        sender, replies = in_background(lambda: client.post("/v1/judge", json={"requests": [pair("photo", [photo])]}))
        worst = worst_health_latency(remote.url, sender.is_alive)
        sender.join(timeout=90)
    (reply,) = replies
    assert isinstance(reply, httpx.Response) and reply.status_code == 200, reply
    assert worst < 1.0, f"/health took {worst:.1f} s while one image was sent to the engine"


# ----------------------------------------------------------------------------------------------------------------
# Remote server: every error is JSON and counted; HEAD /health; the access log never holds bodies or tokens.


def test_every_error_is_json_and_counted(remote):
    cases = [
        ("/v1/judge", "POST", b"{not json", JSON_HEADERS, 400, None),
        ("/v1/judge", "POST", b'{"requests": []}', JSON_HEADERS, 400, None),
        ("/v1/judge", "POST", b"{}", {"content-type": "text/plain"}, 415, None),
        ("/v1/judge", "GET", b"", {}, 405, None),
        ("/v1/models", "GET", b"", {"Authorization": "Bearer wrong"}, 401, None),
        ("/metrics", "GET", b"", {"Authorization": ""}, 401, None),
        ("/v1/rewards", "POST", b"{}", {**JSON_HEADERS, "content-length": str(REMOTE_MAX_BODY + 1)}, 413, "declared"),
        ("/nothing/here", "GET", b"", {}, 404, "other"),
    ]
    before = remote.metrics()
    with remote.client() as client:
        for path, method, body, headers, status, note in cases:
            if note == "declared":  # a Content-Length over the limit is refused before the body is read
                head = (
                    f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {REMOTE_MAX_BODY + 1}\r\n"
                    "Connection: close\r\n\r\n"
                ).encode()
                got, raw = raw_exchange(remote.url, head, [], 0)
                assert got == 413 and json.loads(raw)["error"]["code"] == 413, raw[:300]
                continue
            r = client.request(method, path, content=body, headers=headers)
            assert_json_error(r, status)
    after = remote.metrics()
    for path, _, _, _, status, note in cases:
        route = "other" if note == "other" else path
        key = ("deltarubric_requests_total", tuple(sorted({"route": route, "status": str(status)}.items())))
        expected = sum(1 for p, _, _, _, s, n in cases if (("other" if n == "other" else p), s) == (route, status))
        assert after.get(key, 0) - before.get(key, 0) == expected, (route, status)


def test_head_health_answers_without_a_token_and_without_a_body(remote):
    r = httpx.head(remote.url + "/health", timeout=10)
    assert r.status_code == 200 and r.content == b""
    assert httpx.get(remote.url + "/health", timeout=10).json()["status"] in ("ok", "saturated")
    head = httpx.head(remote.url + "/metrics", timeout=10)  # other routes still need the token; HEAD has no body
    assert head.status_code == 401 and head.content == b""


def test_access_log_has_a_line_per_request_and_never_bodies_queries_or_tokens(remote):
    secret = f"BODY-SECRET-{uuid.uuid4().hex}"
    query = f"QUERY-SECRET-{uuid.uuid4().hex}"
    path = f"/PATH-SECRET-{uuid.uuid4().hex}"
    with remote.client() as client:
        ok = client.post(f"/v1/judge?key={query}", json={"requests": [pair(secret, a=secret, b=secret + "!")]})
        assert ok.status_code == 200
        bad = client.post(
            "/v1/judge", content=json.dumps({"requests": [{"question": secret}]}).encode(), headers=JSON_HEADERS
        )
        assert bad.status_code == 400
        assert client.get(path).status_code == 404
    assert (
        httpx.post(remote.url + "/v1/judge", headers={"Authorization": f"Bearer {secret}"}, json={}).status_code == 401
    )

    def logged() -> str:
        return remote.log()

    wait_until(lambda: '"GET other" 404' in logged() and '"POST /v1/judge" 401' in logged(), 10, "the access log lines")
    log = logged()
    assert re.search(r'127\.0\.0\.1 "POST /v1/judge" 200 \d+\.\d{3}s pairs=1', log), log[-2000:]
    assert re.search(r'"POST /v1/judge" 400 \d+\.\d{3}s pairs=-', log)
    for leaked in (secret, query, path.lstrip("/"), TOKEN):
        assert leaked not in log, f"{leaked} reached the server's stderr"


def test_a_client_that_hangs_up_mid_body_is_not_a_counted_500(remote):
    before = remote.metric("deltarubric_requests_total", route="/v1/judge", status="500")
    head = (
        f"POST /v1/judge HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        'Content-Length: 1000\r\n\r\n{"requests": ['
    ).encode()
    host, port = remote.url.removeprefix("http://").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(head)
            time.sleep(0.2)
    deadline = time.monotonic() + 3  # a hang-up is never answered; give a wrong 500 time to show up
    while (
        time.monotonic() < deadline
        and remote.metric("deltarubric_requests_total", route="/v1/judge", status="500") == before
    ):
        time.sleep(0.1)
    assert remote.metric("deltarubric_requests_total", route="/v1/judge", status="500") == before
    assert "ClientDisconnect" not in remote.log()


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from /proc")
def test_concurrent_small_requests_cannot_multiply_decoded_memory(tmp_path):
    def plain_png(colour: tuple[int, int, int]) -> str:
        buf = io.BytesIO()
        Image.new("RGB", (4096, 4096), colour).save(buf, format="PNG", compress_level=9)  # ~60 kB, 16.7 Mpx
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

    image = plain_png((20, 100, 7))
    bodies = [{"requests": [pair(f"HOLD{k}", [image])]} for k in range(10)]  # 10 different pairs on one picture
    with FakeVLLM(hold_s=30) as fake:
        # Budgets of one such picture per request and per judge call: 50 MB of pixels each.
        args = [
            "-m",
            "judge",
            "--backend",
            "openai",
            "--base-url",
            fake.url,
            "--judge",
            "direct",
            "--batch-window-ms",
            "0",
            "--max-request-pixels",
            str(4096 * 4096),
            "--max-batch-pixels",
            str(4096 * 4096),
            "--drain-timeout",
            "1",
            "--no-access-log",
        ]
        with serve(tmp_path, *args) as server:
            baseline = peak = _rss_mb(server.proc.pid)
            senders = [
                in_background(lambda b=b: httpx.post(server.url + "/v1/judge", json=b, timeout=60))[0] for b in bodies
            ]

            # the engine holds the first pair's call (as a busy GPU would) while the other nine wait: queued with
            # their images decoded, or (once the decoded-pixel budget shared by all requests is held) for that budget
            def waiting() -> int:
                health = httpx.get(server.url + "/health", timeout=10).json()
                return health["queue"]["pairs"] + health["pixels"]["waiting"]

            wait_until(lambda: waiting() == 9, 90, "the other nine requests to be queued or waiting for pixels")
            for _ in range(5):
                peak = max(peak, _rss_mb(server.proc.pid))
                time.sleep(0.1)
            fake.stop.set()
        for t in senders:
            t.join(timeout=30)
    # each request and each judge call may hold 16.7 Mpx (50 MB as RGB); ten requests hold 500 MB between them
    assert peak - baseline < 250, f"10 requests of 80 kB took the server from {baseline:.0f} MB to {peak:.0f} MB"


# ----------------------------------------------------------------------------------------------------------------
# Tiny server (transformers backend): token and max_tokens limits, timeouts that free the engine, connections.


@pytest.fixture(scope="module")
def token_counter(tiny_model_dir: Path):
    """The server's own counting (app.limits.TokenCounter) over the tiny model's processor, without loading weights."""
    from deltarubric.app.limits import TokenCounter
    from deltarubric.rm.hf_compat import load_processor

    return TokenCounter(types.SimpleNamespace(processor=load_processor(str(tiny_model_dir))))


def text_of_exactly(counter: Any, limit: int) -> str:
    """A chat message whose prompt is exactly `limit` tokens after the chat template."""
    from deltarubric.rm.backends import Message

    def fits(text: str, n: int) -> bool:
        return counter.excess([Message.text("user", text)], n) is None

    lo, hi = 0, limit  # words of "word ": each adds at least one token
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits("word " * mid, limit) else (lo, mid - 1)
    for tail in ("", "a", "ab", "abc", " x", " xy"):
        text = "word " * lo + tail
        if fits(text, limit) and not fits(text, limit - 1):
            return text
    raise AssertionError("no text of exactly the limit found")


def test_prompt_exactly_at_the_token_limit_is_served(tiny, token_counter):
    exact = text_of_exactly(token_counter, TINY_MAX_INPUT_TOKENS)
    with tiny.client() as client:
        r = client.post("/v1/chat/completions", json=chat(exact))
        assert r.status_code == 200, r.text[:300]
        assert r.json()["usage"]["prompt_tokens"] == TINY_MAX_INPUT_TOKENS
        over = client.post("/v1/chat/completions", json=chat(exact + " word word"))
        error = assert_json_error(over, 413, f"the limit is {TINY_MAX_INPUT_TOKENS} (--max-input-tokens)")
        assert int(re.search(r"the prompt is (\d+) tokens", error["message"]).group(1)) > TINY_MAX_INPUT_TOKENS


def test_chat_max_tokens_cap_with_the_numbers(tiny):
    with tiny.client() as client:
        r = client.post("/v1/chat/completions", json=chat(max_tokens=TINY_CAP + 1))
        error = assert_json_error(r, 400, f"max_tokens is {TINY_CAP + 1}; this server allows at most {TINY_CAP}")
        assert error["param"] == "max_tokens"
        body = chat(max_tokens=2) | {"max_completion_tokens": TINY_CAP + 1}
        error = assert_json_error(client.post("/v1/chat/completions", json=body), 400, f"at most {TINY_CAP}")
        assert error["param"] == "max_completion_tokens"
        assert_json_error(client.post("/v1/chat/completions", json=chat(max_tokens=0)), 400)
        r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "Hi"}]})
        assert r.status_code in (200, 504), r.text[:300]  # absent: 1024 tokens, within the cap (not refused)


def test_a_generation_at_the_cap_past_the_timeout_is_504_and_frees_the_engine(tiny):
    """max_tokens exactly at the cap is allowed; generating it takes the tiny model far past the 4 s timeout, so the
    answer is a JSON 504, and the next request is served at once (the generation was stopped, not left running)."""
    with tiny.client() as client:
        before = tiny.metric("deltarubric_requests_total", route="/v1/chat/completions", status="504")
        long = client.post("/v1/chat/completions", json=chat("Tell me everything.", max_tokens=TINY_CAP))
        assert_json_error(long, 504, f"no answer within {TINY_REQUEST_TIMEOUT:g} s")
        t0 = time.monotonic()
        small = client.post("/v1/chat/completions", json=chat("Hi"))
        waited = time.monotonic() - t0
    assert small.status_code == 200, small.text[:300]
    assert waited < 2.0, f"the next request waited {waited:.1f} s behind a timed-out generation"
    assert tiny.metric("deltarubric_requests_total", route="/v1/chat/completions", status="504") == before + 1


def test_a_judge_call_nobody_waits_for_any_more_is_stopped(tiny):
    tag = uuid.uuid4().hex[:8]
    started = tiny.metric("deltarubric_batch_size_count")
    with tiny.client() as first, tiny.client() as second, tiny.client() as third:
        x, _ = in_background(lambda: first.post("/v1/judge", json={"requests": [pair(f"x{tag}")]}))
        wait_until(
            lambda: tiny.metric("deltarubric_batch_size_count") == started + 1, 10, "the first judge call to start"
        )
        time.sleep(0.5)
        y, y_reply = in_background(lambda: second.post("/v1/judge", json={"requests": [pair(f"y{tag}")]}))
        y.join(timeout=30)
        (gave_up,) = y_reply
        assert_json_error(gave_up, 504)  # the queued pair's request timed out: nobody waits for that pair any more
        t0 = time.monotonic()
        small = third.post("/v1/chat/completions", json=chat("Hi"))
        waited = time.monotonic() - t0
        x.join(timeout=30)
    assert small.status_code == 200, small.text[:300]
    assert waited < 2.0, (
        f"a small chat request waited {waited:.1f} s for the engine after every judge request had timed out"
    )


def test_a_chat_of_many_empty_messages_does_not_freeze_health(tiny):
    body = json.dumps(chat() | {"messages": [{"role": "user", "content": ""}] * 40_000}).encode()
    took: list[float] = []

    def send() -> httpx.Response:
        t0 = time.monotonic()
        r = client.post("/v1/chat/completions", content=body, headers=JSON_HEADERS)
        took.append(time.monotonic() - t0)
        return r

    with tiny.client() as client:
        sender, replies = in_background(send)
        # A refusal can come before /health is first probed; then its own answer time bounds any freeze.
        worst = worst_health_latency(tiny.url, sender.is_alive, require_probe=False)
        sender.join(timeout=90)
    (reply,) = replies
    assert_json_error(reply, 413, f"the limit is {TINY_MAX_INPUT_TOKENS}")
    assert worst < 1.0, f"/health took {worst:.1f} s while one chat request was checked"
    assert worst > 0 or took[0] < 1.0, f"the request took {took[0]:.1f} s and /health was never probed meanwhile"


def test_slow_or_silent_header_senders_are_disconnected(tiny):
    host, port = tiny.url.removeprefix("http://").split(":")
    socks = [socket.create_connection((host, int(port)), timeout=5) for _ in range(22)]
    try:
        trickling, keepalive, *silent = socks
        trickling.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        keepalive.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        keepalive.settimeout(5)
        first = keepalive.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first[:100]
        keepalive.sendall(b"GET /health HTTP/1.1\r\n")  # the next request on the connection trickles in
        # --header-timeout is 1 s: each is closed soon after (8 s is a generous bound on a slow machine)
        t0 = time.monotonic()  # 20 connections that send nothing: all closed at the deadline, none kept
        assert all(closed_by_peer(sock, max(0.5, 8 - (time.monotonic() - t0))) is not None for sock in silent), (
            "a connection that sent nothing was kept"
        )
        assert closed_by_peer(trickling, 8, trickle=b"X-Slow: 1\r\n") is not None, "a trickling header sender was kept"
        assert closed_by_peer(keepalive, 8, trickle=b"X-Slow: 1\r\n") is not None, (
            "a trickling keep-alive request was kept"
        )
    finally:
        for s in socks:
            s.close()


def test_a_slow_body_after_prompt_headers_is_not_cut_by_the_header_deadline(tiny):
    body = json.dumps({"items": [{"question": "q", "response": "", "reference": "r"}]}).encode()
    head = (
        f"POST /v1/rewards HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    chunks = [body[k : k + len(body) // 4 + 1] for k in range(0, len(body), len(body) // 4 + 1)]
    status, raw = raw_exchange(tiny.url, head, chunks, pause_s=0.6)  # 2.4 s for the body, over the 1 s header deadline
    assert status == 200 and json.loads(raw)["rewards"] == [0.0], raw[:300]


def test_a_body_that_never_arrives_is_408_json_and_counted(tiny):
    before = tiny.metric("deltarubric_requests_total", route="/v1/rewards", status="408")
    head = (
        b"POST /v1/rewards HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
        b'Connection: close\r\n\r\n{"items"'
    )
    status, raw = raw_exchange(tiny.url, head, [], 0)
    assert status == 408, raw[:300]
    assert json.loads(raw)["error"]["code"] == 408
    assert tiny.metric("deltarubric_requests_total", route="/v1/rewards", status="408") == before + 1


# Last, because it stops the tiny server.
def test_zz_sigterm_during_a_generation_exits_within_the_drain_timeout(tiny):
    """--drain-timeout 1 (request timeout 4 s): a generation in flight is answered 503 + Retry-After at the drain
    deadline, and the process exits soon after, an idle keep-alive and a silent connection notwithstanding."""
    host, port = tiny.url.removeprefix("http://").split(":")
    idle = socket.create_connection((host, int(port)), timeout=5)
    try:
        with tiny.client() as client:
            assert client.get("/health").status_code == 200  # an idle keep-alive connection stays open meanwhile
            sender, replies = in_background(
                lambda: httpx.post(
                    tiny.url + "/v1/chat/completions", json=chat("Tell me everything.", max_tokens=TINY_CAP), timeout=30
                )
            )
            time.sleep(1.0)  # the generation is running
            t0 = time.monotonic()
            tiny.proc.send_signal(signal.SIGTERM)
            try:
                code = tiny.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pytest.fail("the server did not exit within 20 s of SIGTERM with a 1 s drain timeout")
            took = time.monotonic() - t0
            sender.join(timeout=10)
    finally:
        idle.close()
    (reply,) = replies
    assert isinstance(reply, httpx.Response), reply
    assert_json_error(reply, 503, "shutting down")
    assert reply.headers["retry-after"] == "1"
    # uvicorn re-raises the SIGTERM it caught once it has shut down (exit status -15); the watchdog would exit 1
    assert code in (0, -signal.SIGTERM), (code, tiny.log()[-2000:])
    assert "Application shutdown complete" in tiny.log() and "did not finish within the drain timeout" not in tiny.log()
    # the drain (1 s) plus the watchdog's grace (5 s) is the most it may take; it should not need the watchdog
    assert took < 6.0, f"exit took {took:.1f} s"
