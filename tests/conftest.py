"""Shared fixtures: offline settings, the tiny checkpoint (built once per session), generated images, a loopback
server."""

from __future__ import annotations

import os
import tempfile

# Before anything imports huggingface_hub/transformers: tests never touch a hub, and caches (evaluate copies metric
# modules into one) go to a temporary folder, not the user's home.
os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", HF_DATASETS_OFFLINE="1")
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="deltarubric-tests-hf-")

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from PIL import Image, ImageDraw

from deltarubric.rm.config import JudgeConfig


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from deltarubric.rm.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-qwen3-vl"))


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_dir: Path):
    from deltarubric.rm.backends.hf import TransformersBackend

    return TransformersBackend(str(tiny_model_dir), device="cpu", batch_size=8)


@pytest.fixture
def tiny_config(tiny_model_dir: Path) -> JudgeConfig:
    return JudgeConfig(model=str(tiny_model_dir), sampling={"max_tokens": 12})


def make_image(path: Path, size: tuple[int, int] = (96, 64), seed: int = 0) -> Path:
    """A small placeholder picture: coloured shapes that differ with the seed."""
    img = Image.new("RGB", size, (30 + 40 * seed % 200, 120, 200))
    d = ImageDraw.Draw(img)
    d.ellipse([size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2], fill=(250, 160, 40))
    d.rectangle([size[0] // 2, size[1] // 2, size[0] - 4, size[1] - 4], fill=(20, 200 - 10 * seed % 150, 60))
    img.save(path)
    return path


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    return make_image(tmp_path / "scene.png")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackServer:
    """An ASGI app under real uvicorn on 127.0.0.1, in a thread, for clients that need a socket."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def tiny_app(tiny_backend, **settings):
    """The server app over the tiny model (judge: deltarubric, short outputs), served as model 'tiny'."""
    from deltarubric.app.server import build_app
    from deltarubric.app.settings import ServerSettings
    from deltarubric.rm.judge import Judge

    config = JudgeConfig(model="tiny", judge="deltarubric", sampling={"max_tokens": 8})
    return build_app(Judge(config, backend=tiny_backend), ServerSettings(served_model_name="tiny", **settings))


@pytest.fixture(scope="session")
def tiny_server(tiny_backend) -> Iterator[LoopbackServer]:
    """The server app with the tiny model on a real loopback port."""
    with LoopbackServer(tiny_app(tiny_backend)) as server:
        yield server


@contextmanager
def served(*args: str) -> Iterator[str]:
    """`deltarubric serve ARGS` as a user starts it, on a free loopback port; yields its base URL once healthy."""
    import httpx

    port = free_port()
    # stderr into a file, not a pipe: nobody reads it while the server runs, and the access log (on by default)
    # would fill a pipe's buffer after a few hundred requests and block the server.
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "deltarubric.cli", "serve", *args, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.ConnectError:
                pass
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"deltarubric serve exited: {log.read()}")
            if time.monotonic() > deadline:
                raise RuntimeError("deltarubric serve did not become healthy in 90 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
