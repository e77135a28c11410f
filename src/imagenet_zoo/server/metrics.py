"""Prometheus metrics of one app instance (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
_WAIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "imagenet_zoo_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "imagenet_zoo_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "imagenet_zoo_queue_depth", "requests waiting for or in inference", registry=self.registry
        )
        self.errors = Counter(
            "imagenet_zoo_errors", "error responses by error type", ["type"], registry=self.registry
        )
        self.batch_size = Histogram(
            "imagenet_zoo_batch_size",
            "images per engine call (dynamic batching across requests)",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_wait = Histogram(
            "imagenet_zoo_batch_queue_seconds",
            "time an image waited for its engine call",
            ["model"],
            buckets=_WAIT_BUCKETS,
            registry=self.registry,
        )

    def observe_batch(self, model: str, size: int, waits: list[float]) -> None:
        self.batch_size.labels(model).observe(size)
        wait = self.batch_wait.labels(model)
        for seconds in waits:
            wait.observe(seconds)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
