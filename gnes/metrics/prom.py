"""Prometheus metrics (prometheus-client) on a registry of their own.

A registry per Metrics object, not the global default: the tests run several apps in one
process, and two apps registering the same names on one registry would fail.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

from ..proto import pb
from ..service.message import BodyType, failed

# Per-hop times on loopback are tens of microseconds; a model batch takes up to seconds.
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("gnes_http_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.errors = Counter(
            "gnes_http_errors", "HTTP requests answered with 4xx/5xx", ["endpoint", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "gnes_http_request_seconds", "HTTP request time", ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("gnes_queue_depth", "requests waiting, per queue", ["queue"], registry=r)
        self.batch_size = Histogram("gnes_batch_size", "items per batch sent on", buckets=_BATCH_BUCKETS, registry=r)
        self.stage_seconds = Histogram(
            "gnes_stage_seconds",
            "time an answered request spent in each service (its route stamps: arrival to departure)",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.pipeline_seconds = Histogram(
            "gnes_pipeline_seconds",
            "first route stamp to last, per request kind",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.pipeline_answers = Counter(
            "gnes_pipeline_answers", "answers from the pipeline", ["kind", "status"], registry=r
        )
        self.shard_documents = Gauge(
            "gnes_shard_documents", "documents per shard and index", ["shard", "index"], registry=r
        )
        # The gRPC frontend's calls, by request kind (index, search, ...) and gRPC status code.
        self.grpc_requests = Counter("gnes_grpc_requests", "gRPC requests answered", ["kind", "code"], registry=r)
        self.grpc_seconds = Histogram(
            "gnes_grpc_request_seconds", "gRPC request time", ["kind"], buckets=_LATENCY_BUCKETS, registry=r
        )

    # ---- what the app calls ------------------------------------------------------------
    def observe_http(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
        self.request_seconds.labels(endpoint).observe(seconds)

    def observe_grpc(self, kind: str, code: str, seconds: float | None = None) -> None:
        """One gRPC request: its kind, its status code name (OK, RESOURCE_EXHAUSTED, ...), its time."""
        self.grpc_requests.labels(kind, code).inc()
        if seconds is not None:
            self.grpc_seconds.labels(kind).observe(seconds)

    def observe_answer(self, envelope: pb.Envelope, response: pb.Response | None = None) -> None:
        """One answered pipeline request: its per-stage times from the route stamps, and its
        outcome. Call it with the answer's envelope (the stamps travel there, not in the body)."""
        kind = BodyType.Name(envelope.body_type).lower()
        if response is not None:
            ok = not failed(response)
            self.pipeline_answers.labels(kind, "ok" if ok else "error").inc()
        routes = list(envelope.routes)
        for route in routes:
            spent = _seconds(route.end_time) - _seconds(route.start_time)
            if spent >= 0:  # clocks of two hosts may disagree; a negative time says nothing
                self.stage_seconds.labels(route.service or "?").observe(spent)
        if routes:
            total = _seconds(routes[-1].end_time) - _seconds(routes[0].start_time)
            if total >= 0:
                self.pipeline_seconds.labels(kind).observe(total)

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def set_queue_depth(self, queue: str, depth: int) -> None:
        self.queue_depth.labels(queue).set(depth)

    def observe_shards(self, shards: Iterable[Mapping[str, object]]) -> None:
        """Documents per shard and index, from a STATS admin answer's ``shards`` list or the
        shards' status_info (``indexes``: name -> count or name -> {"count": n})."""
        self.shard_documents.clear()  # a shard that is gone must not keep its last count
        for shard in shards:
            name = str(shard.get("shard_id") or shard.get("shard") or shard.get("identity") or "?")
            indexes = shard.get("indexes")
            if not isinstance(indexes, Mapping):
                continue
            for index, value in indexes.items():
                count = value.get("count", 0) if isinstance(value, Mapping) else value
                self.shard_documents.labels(name, str(index)).set(float(count or 0))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def serve(self, host: str, port: int) -> tuple[Any, int]:
        """Serve this registry at http://host:port/metrics from a thread of its own (the gRPC
        frontend, which has no HTTP server); returns the server (shut it down to stop) and its port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server, int(server.server_port)


def _seconds(stamp: object) -> float:
    return stamp.seconds + stamp.nanos / 1e9  # type: ignore[attr-defined]
