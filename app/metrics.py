"""Prometheus metrics, one registry per app so several apps (tests, workers) never share counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "deltarubric_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "deltarubric_request_latency_seconds",
            "Request latency by route",
            ["route"],
            registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 180),
        )
        self.queue_depth = Gauge("deltarubric_queue_depth", "Pairs waiting for a judge call", registry=self.registry)
        self.batch_size = Histogram(
            "deltarubric_batch_size",
            "Pairs per judge call",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.parse_failures = Counter(
            "deltarubric_parse_failures", "Verdicts with no parsable winner", registry=self.registry
        )
        self.judge_errors = Counter(
            "deltarubric_judge_errors", "Verdicts with an error (media, backend)", registry=self.registry
        )
        self.cache_hits = Counter(
            "deltarubric_cache_hits", "Pairs answered from the verdict cache", registry=self.registry
        )
        self.rejected = Counter(
            "deltarubric_saturated", "Requests refused with 503 because the queue was full", registry=self.registry
        )
        self.client_disconnects = Counter(
            "deltarubric_client_disconnects",
            "Requests whose client hung up before the answer (not counted in deltarubric_requests_total)",
            ["route"],
            registry=self.registry,
        )
        self.cancelled_calls = Counter(
            "deltarubric_cancelled_judge_calls", "Judge calls stopped past the request timeout", registry=self.registry
        )
        # Thread and download pools (see app/pools.py): a pool is saturated when busy == size.
        self.pool_size = Gauge("deltarubric_pool_size", "Slots of a pool", ["pool"], registry=self.registry)
        self.pool_busy = Gauge("deltarubric_pool_busy", "Slots in use", ["pool"], registry=self.registry)
        self.pool_waiting = Gauge(
            "deltarubric_pool_waiting", "Tasks waiting for a slot", ["pool"], registry=self.registry
        )
        # The decoded-pixel budget shared by all requests (see app/pools.py: PixelBudget).
        self.pixels_limit = Gauge(
            "deltarubric_decoded_pixels_limit", "Decoded image pixels all requests may hold", registry=self.registry
        )
        self.pixels_held = Gauge(
            "deltarubric_decoded_pixels_held", "Decoded image pixels held by requests", registry=self.registry
        )
        self.pixels_waiting = Gauge(
            "deltarubric_decoded_pixels_waiting", "Requests waiting for decoded-pixel budget", registry=self.registry
        )
        self.download_timeouts = Counter(
            "deltarubric_media_download_timeouts", "http(s) media downloads past their deadline", registry=self.registry
        )
