"""Reward server vs direct batched judge calls, measured in the same run.

    python benchmarks/server_throughput.py                          # tiny random checkpoint, CPU
    python benchmarks/server_throughput.py -m /path/to/Qwen3-VL-4B --device cuda --pairs 256 --clients 32 64

Baseline: `Judge.judge_batch` on the pairs in batches of the server's max batch (the best a caller can do by hand).
Server: `deltarubric serve` in its own process (as next to a trainer), sent the same pairs as concurrent single-pair
/v1/judge requests over loopback HTTP, which it micro-batches. The load comes from this process, with aiohttp. Prints
pairs/s and p50/p99 latency, and the server's overhead relative to the baseline (target: under 10% at 32+ clients).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

from deltarubric.rm import Judge, JudgeConfig, JudgeRequest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def data_url(i: int) -> str:
    img = Image.new("RGB", (96 + 8 * (i % 5), 72), (37 * i % 255, 120, 200))
    ImageDraw.Draw(img).ellipse([10, 10, 50, 50], fill=(250, 160, 40))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def pair(i: int) -> dict:
    return {
        "id": str(i),
        "question": f"How many shapes are there? ({i})",
        "images": [data_url(i)],
        "a": {"text": f"{i % 3 + 1} shapes."},
        "b": {"text": "One orange circle."},
    }


async def drive(url: str, bodies: list[dict], clients: int) -> tuple[float, list[float]]:
    import aiohttp

    latencies: list[float] = []
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)

    async def client(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            t0 = time.perf_counter()
            async with http.post(url + "/v1/judge", json={"requests": [body]}) as r:
                r.raise_for_status()
                await r.read()
            latencies.append(time.perf_counter() - t0)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return time.perf_counter() - t0, latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", help="checkpoint; default: build the tiny random one")
    ap.add_argument("--judge", default="direct")
    ap.add_argument("--pairs", type=int, default=128)
    ap.add_argument("--clients", type=int, nargs="+", default=[8, 32, 64])
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    if args.model is None:
        from deltarubric.rm.tiny import make_tiny_model

        args.model = str(make_tiny_model(Path(tempfile.mkdtemp()) / "tiny"))
    config = JudgeConfig(
        model=args.model,
        judge=args.judge,
        compute={"device": args.device, "batch_size": args.max_batch},
        sampling={"max_tokens": args.max_tokens},
    )
    judge = Judge(config)
    bodies = [pair(i) for i in range(args.pairs)]
    requests = [JudgeRequest.model_validate(b) for b in bodies]
    judge.judge_batch(requests[:4])  # warm-up

    def direct_seconds() -> float:
        t0 = time.perf_counter()
        for start in range(0, len(requests), args.max_batch):  # direct, in batches of the server's max batch
            judge.judge_batch(requests[start : start + args.max_batch])
        return time.perf_counter() - t0

    before = direct_seconds()
    print(
        f"model={args.model} judge={args.judge} pairs={args.pairs} max_tokens={args.max_tokens}"
        f" max_batch={args.max_batch}"
    )
    print(f"direct batched:            {args.pairs / before:8.2f} pairs/s")

    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "deltarubric.cli",
        "serve",
        "-m",
        args.model,
        "--judge",
        args.judge,
        "--device",
        args.device,
        "--max-tokens",
        str(args.max_tokens),
        "--max-batch",
        str(args.max_batch),
        "--batch-size",
        str(args.max_batch),
        "--cache-size",
        "0",
        "--max-queue",
        "100000",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # access log included
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600  # loading a full-size model can take minutes
    while True:
        try:
            if httpx.get(url + "/health").status_code == 200:
                break
        except httpx.ConnectError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start: {' '.join(cmd)}") from None
            time.sleep(0.2)
    asyncio.run(drive(url, bodies[:8], 8))  # warm-up
    results = []
    for clients in args.clients:
        results.append((clients, *asyncio.run(drive(url, bodies, clients))))
    server.terminate()
    server.wait()
    after = direct_seconds()
    # The baseline is measured before and after the server runs; a large gap means the machine was busy.
    direct = (before + after) / 2
    print(f"direct batched, again:     {args.pairs / after:8.2f} pairs/s   (baseline = mean of both)")
    for clients, elapsed, lat in results:
        p50, p99 = statistics.median(lat), statistics.quantiles(lat, n=100)[98]
        overhead = elapsed / direct - 1
        print(
            f"server, {clients:3d} clients:     {args.pairs / elapsed:8.2f} pairs/s   p50 {p50 * 1000:7.1f} ms   "
            f"p99 {p99 * 1000:7.1f} ms   overhead vs direct {overhead * 100:+6.1f}%"
        )


if __name__ == "__main__":
    main()
