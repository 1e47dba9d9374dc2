"""Is the pipeline answering? One LIST admin request through it, bounded in time.

LIST goes from the entry point through the encoders' proxies and the middleman to every shard
and back through the reducer, so a SUCCESS says that every hop and every shard the middleman
knows answers; a shard that is down makes the answer an error, and a broken hop makes it time
out. The same round trip backs HTTP /readyz and the frontend's gRPC health status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..proto import pb
from ..service.message import failed

log = logging.getLogger("gnes.health")


class Submits(Protocol):
    """What the probe needs of a PipelineSession."""

    async def submit(self, request: pb.Request, timeout_s: float | None = None) -> asyncio.Future[pb.Response]: ...


@dataclass(slots=True)
class Probe:
    ready: bool
    reason: str
    seconds: float
    indexes: list[str] = field(default_factory=list)


def list_request() -> pb.Request:
    request = pb.Request(request_id=0)
    request.admin.command = pb.Request.AdminRequest.LIST
    return request


async def probe_pipeline(session: Submits, timeout: float = 3.0) -> Probe:
    started = time.monotonic()
    try:
        future = await asyncio.wait_for(session.submit(list_request(), timeout_s=timeout), timeout)
        response = await asyncio.wait_for(future, timeout + 1.0)
    except TimeoutError:
        return Probe(False, f"no answer from the pipeline within {timeout:g}s", time.monotonic() - started)
    seconds = time.monotonic() - started
    if failed(response):
        return Probe(False, response.error or "the pipeline answered with an error", seconds)
    return Probe(True, "every shard answered", seconds, sorted(_index_names(response)))


def _index_names(response: pb.Response) -> set[str]:
    info: dict[str, Any] = json.loads(response.admin.info_json or "{}")
    return {str(name) for shard in info.get("shards", []) for name in shard.get("indexes", [])}


class HealthWatcher:
    """Keeps the frontend's standard gRPC health status (grpc.health.v1) in step with the
    pipeline: SERVING while the probe succeeds, NOT_SERVING otherwise."""

    SERVICES = ("", "gnes.GnesRPC")

    def __init__(self, session: Submits, interval: float = 2.0, timeout: float = 3.0) -> None:
        from grpc_health.v1 import health

        self.servicer = health.aio.HealthServicer()
        self.session = session
        self.interval = interval
        self.timeout = timeout
        self.last: Probe | None = None
        self._task: asyncio.Task[None] | None = None

    def add_to(self, server: object) -> None:
        from grpc_health.v1 import health_pb2_grpc

        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        await self._set(False)  # until the first probe says otherwise
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.servicer.enter_graceful_shutdown()

    async def _run(self) -> None:
        while True:
            probe = await probe_pipeline(self.session, self.timeout)
            if self.last is None or probe.ready != self.last.ready:
                log.info("pipeline %s: %s", "ready" if probe.ready else "not ready", probe.reason)
            self.last = probe
            await self._set(probe.ready)
            await asyncio.sleep(self.interval)

    async def _set(self, serving: bool) -> None:
        from grpc_health.v1 import health_pb2

        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in self.SERVICES:
            await self.servicer.set(name, status)
