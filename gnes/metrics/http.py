"""An ASGI middleware that counts HTTP requests by endpoint and status (gnes.metrics.prom)."""

from __future__ import annotations

import time
from typing import Any

from .prom import Metrics


class MetricsMiddleware:
    """The endpoint label is the route's path template (``/apply/{model}``), never the raw
    path: one series per endpoint however many models or ids are asked for."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]  # what a handler that raises past every exception handler amounts to

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_http(endpoint, status[0], time.perf_counter() - started)
