"""A small HTTP app around the ops and page routers, served by uvicorn on 127.0.0.1 in a
thread: what the tests of ops.py, auth.py and page.py run against (gnes http adds the rest)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator

import uvicorn
import zmq
from fastapi import Depends, FastAPI

from gnes.auth import TokenStore
from gnes.http import ops, page
from gnes.http.auth import require_admin
from gnes.metrics.http import MetricsMiddleware
from gnes.metrics.prom import Metrics
from gnes.pipeline import PipelineSession
from gnes.service.config import ServiceConfig


def make_app(ports: dict[str, int], tokens: TokenStore | None = None) -> FastAPI:
    config = ServiceConfig(
        name="http-test",
        port_in=ports["out_out"],
        port_out=ports["income_in"],
        socket_in="SUB_CONNECT",
        socket_out="PUSH_CONNECT",
    )
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = zmq.Context()
        session = PipelineSession(config, f"http-test-{id(app)}")
        session.open(ctx)
        app.state.session = session
        try:
            yield
        finally:
            await session.close()
            ctx.term()

    app = FastAPI(lifespan=lifespan)
    app.state.metrics = metrics
    app.state.tokens = tokens
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(ops.router)
    app.include_router(page.router)

    @app.post("/admin-only", dependencies=[Depends(require_admin)])
    async def admin_only() -> dict[str, bool]:
        return {"ok": True}

    return app


@contextlib.contextmanager
def serve(app: FastAPI, port: int) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        assert not thread.is_alive(), "uvicorn did not stop"
