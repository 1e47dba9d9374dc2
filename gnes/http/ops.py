"""Operations endpoints of the HTTP service: health, readiness, metrics, the deployment status.

The app provides, on `app.state`: `session` (an open PipelineSession), `metrics` (a
gnes.metrics.prom.Metrics) and optionally `tokens` (gnes.auth.TokenStore; see auth.py).
`/healthz` and `/readyz` are open (probes carry no token); `/metrics`, `/status` and `/indexes`
need a read token when tokens are configured.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from ..metrics.deployment import collect, known_addresses, overview
from ..metrics.readiness import probe_pipeline
from ..proto import pb
from ..service.message import failed
from .auth import require_read

router = APIRouter(tags=["operations"])
READY_TIMEOUT_S = 3.0
STATUS_TIMEOUT_S = 2.0


@router.get("/healthz", summary="the process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="ready when a LIST round trip through the pipeline reaches every shard",
    responses={503: {"description": "not ready: the pipeline did not answer, or a shard is missing"}},
)
async def readyz(request: Request) -> JSONResponse:
    probe = await probe_pipeline(request.app.state.session, READY_TIMEOUT_S)
    body = {"ready": probe.ready, "reason": probe.reason, "seconds": round(probe.seconds, 4)}
    return JSONResponse(body, status_code=200 if probe.ready else 503)


# PlainTextResponse: the schema says text/plain (Prometheus' exposition format), not JSON.
@router.get(
    "/metrics", summary="Prometheus metrics", dependencies=[Depends(require_read)], response_class=PlainTextResponse
)
async def metrics(request: Request) -> Response:
    state = request.app.state
    state.metrics.set_queue_depth("pipeline", state.session.in_flight)
    batcher = getattr(getattr(state, "service", None), "batcher", None)
    if batcher is not None:  # texts held by the embedding queue (the 429 threshold is its capacity)
        state.metrics.set_queue_depth("embed", batcher.held)
    stats = await admin(state.session, pb.Request.AdminRequest.STATS)
    if stats is not None:  # a scrape while the shards do not answer keeps the other series
        state.metrics.observe_shards(stats.get("shards", []))
    body, content_type = state.metrics.render()
    return Response(body, media_type=content_type)


@router.get(
    "/status", summary="every service, its readiness, model and documents", dependencies=[Depends(require_read)]
)
async def status(request: Request) -> dict[str, Any]:
    state = request.app.state
    stats = await admin(state.session, pb.Request.AdminRequest.STATS)
    addresses, problems = await asyncio.to_thread(known_addresses)
    services = await asyncio.to_thread(collect, addresses, STATUS_TIMEOUT_S)
    if stats is None:
        problems.append("the pipeline did not answer STATS: documents come from the shards' own status")
    own = {"kind": "http", "in_flight": state.session.in_flight, "client_id": state.session.client_id}
    return overview(own, stats, services, problems)


@router.get("/indexes", summary="the logical indexes of the shards (LIST)", dependencies=[Depends(require_read)])
async def indexes(request: Request) -> dict[str, list[str]]:
    listed = await admin(request.app.state.session, pb.Request.AdminRequest.LIST)
    names = {str(n) for shard in (listed or {}).get("shards", []) for n in shard.get("indexes", [])}
    return {"indexes": sorted(names)}


async def admin(session: Any, command: int, timeout: float = STATUS_TIMEOUT_S) -> dict[str, Any] | None:
    """One admin request through the pipeline; its merged info, or None on an error or timeout."""
    request = pb.Request(request_id=int(time.monotonic_ns() & 0x7FFFFFFF))
    request.admin.command = command
    future = await session.submit(request, timeout_s=timeout)
    response: pb.Response = await future
    if failed(response):
        return None
    return json.loads(response.admin.info_json or "{}")
