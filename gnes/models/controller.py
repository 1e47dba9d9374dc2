"""The model controller: list, start, stop and report on the services of named models.

A backend runs a model's encoder services: `LocalBackend` asks the running `gnes stack` (its control
channel, found through $GNES_STACK_WORKDIR), `SwarmBackend` (gnes/models/swarm.py) creates Docker
services on the stack's network. The controller adds what the pipeline needs on top: once the
services are ready it embeds a probe text through the pipeline, under the model's name, until the
model answers (which gives its dimension), and creates the model's logical index (named after it,
with that dimension) on every shard. A removed model's index is kept: its documents stay on disk
and are searchable again once a model of that name is added back.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any, Protocol

from ..proto import nd_to_array, pb
from ..service.message import failed
from .plugin import check_model_name

SOURCES = ("path", "plugin", "package", "yaml_path")
PROBE_TIMEOUT_S = 60.0


class ModelError(ValueError):
    """A model request the controller refused; `status` is the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Backend(Protocol):
    kind: str

    def add(self, name: str, source: dict[str, str], replicas: int) -> dict[str, Any]: ...

    def remove(self, name: str) -> None: ...

    def list(self) -> dict[str, dict[str, Any]]: ...


class LocalBackend:
    """Models as services of the `gnes stack` running in `workdir` (gnes/models/stack_ops.py)."""

    kind = "local"

    def __init__(self, workdir: str | Path) -> None:
        self.workdir = Path(workdir)

    def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        from ..stack.control import ControlError, request

        try:
            return request(self.workdir, message, timeout=None)  # a model may load for minutes
        except ControlError as exc:
            text = str(exc)
            status = 409 if "did not answer" in text or "no running stack" in text else 400
            raise ModelError(text, status) from None

    def add(self, name: str, source: dict[str, str], replicas: int) -> dict[str, Any]:
        return self._ask({"op": "model_add", "name": name, "source": source, "replicas": replicas})["models"][name]

    def remove(self, name: str) -> None:
        self._ask({"op": "model_remove", "name": name})

    def list(self) -> dict[str, dict[str, Any]]:
        return dict(self._ask({"op": "model_list"})["models"])


def backend_from_env(environ: dict[str, str] | None = None) -> Backend | None:
    """$GNES_MODEL_BACKEND: local (the stack of $GNES_STACK_WORKDIR), swarm (stack $GNES_STACK_NAME,
    through the Docker socket) or none; unset: local where a stack runs, else none."""
    env = os.environ if environ is None else environ
    kind = env.get("GNES_MODEL_BACKEND", "").lower()
    if kind == "swarm":
        from .swarm import SwarmBackend

        return SwarmBackend(env.get("GNES_STACK_NAME", "gnes"), env.get("GNES_DOCKER_SOCKET", "/var/run/docker.sock"))
    workdir = env.get("GNES_STACK_WORKDIR", "")
    if kind in ("", "local") and workdir and (Path(workdir) / "stack.json").exists():
        return LocalBackend(workdir)
    return None


class Controller:
    """`session`: an open PipelineSession of this process (the HTTP service's)."""

    def __init__(self, session: Any, backend: Backend | None, probe_timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.session = session
        self.backend = backend
        self.probe_timeout_s = probe_timeout_s
        self.dims: dict[str, int] = {}

    def _backend(self) -> Backend:
        if self.backend is None:
            raise ModelError(
                "no model backend: run under `gnes stack` (local) or set GNES_MODEL_BACKEND=swarm", status=409
            )
        return self.backend

    async def add(self, name: str, source: dict[str, str], replicas: int = 1) -> dict[str, Any]:
        """Start the model's services, wait until it answers through the pipeline, create its index."""
        try:
            check_model_name(name)
        except ValueError as exc:
            raise ModelError(str(exc), 422) from None
        given = {key: str(value) for key, value in source.items() if key in SOURCES and value}
        if len(given) != 1:
            raise ModelError(f"model {name!r}: give exactly one of {', '.join(SOURCES)}", 422)
        backend = self._backend()
        if name in await asyncio.to_thread(backend.list):
            raise ModelError(f"model {name!r} is already served; remove it first", 409)
        started = time.monotonic()
        info = await asyncio.to_thread(backend.add, name, given, replicas)
        services_ready = time.monotonic() - started
        dim = await self.probe(name, self.probe_timeout_s)
        await self._create_index(name, dim)
        return {
            "name": name,
            "dim": dim,
            "index": name,
            "backend": backend.kind,
            "replicas": info.get("replicas", replicas),
            "services_ready_s": round(services_ready, 3),
            "answers_after_s": round(time.monotonic() - started, 3),
        }

    async def remove(self, name: str) -> dict[str, Any]:
        backend = self._backend()
        if name not in await asyncio.to_thread(backend.list):
            raise ModelError(f"no model named {name!r} is served", 404)
        await asyncio.to_thread(backend.remove, name)
        self.dims.pop(name, None)
        return {"name": name, "removed": True, "index_kept": name}

    async def list(self) -> dict[str, Any]:
        models = await asyncio.to_thread(self._backend().list)
        listed = {name: {**info, "dim": self.dims.get(name)} for name, info in models.items()}
        return {"backend": self._backend().kind, "models": listed}

    async def status(self, name: str) -> dict[str, Any]:
        models = await asyncio.to_thread(self._backend().list)
        if name not in models:
            raise ModelError(f"no model named {name!r} is served", 404)
        try:
            dim = await self.probe(name, 10.0, wait_for_encoders=False)
            answering, error = True, ""
        except ModelError as exc:
            dim, answering, error = self.dims.get(name), False, str(exc)
        return {"name": name, **models[name], "dim": dim, "answering": answering, "error": error}

    async def probe(self, name: str, timeout_s: float, wait_for_encoders: bool = True) -> int:
        """Embed a probe text with the model until it answers; its dimension. `wait_for_encoders`:
        a model that no encoder serves (yet) is waited for; otherwise it is a 404 at once."""
        deadline = time.monotonic() + timeout_s
        while True:
            request = pb.Request(model_name=name)
            request.embed.docs.add(doc_id=0, raw_text="model probe")
            response = await (await self.session.submit(request, timeout_s=min(10.0, timeout_s)))
            if not failed(response):
                dim = int(nd_to_array(response.embed.embeddings).shape[1])
                self.dims[name] = dim
                return dim
            if not wait_for_encoders and "no encoder serves" in response.error:
                raise ModelError(response.error, 404)
            if time.monotonic() > deadline:
                raise ModelError(f"model {name!r} did not answer within {timeout_s:g}s: {response.error}", 504)
            await asyncio.sleep(0.2)  # the map proxy has not heard the new encoders' HELLO yet

    async def _create_index(self, name: str, dim: int) -> None:
        request = pb.Request()
        admin = request.admin
        admin.command = pb.Request.AdminRequest.CREATE
        admin.index_name = name
        admin.config_json = json.dumps({"dim": dim, "metric": "ip", "index_type": "flat"})
        admin.exist_ok = True
        response = await (await self.session.submit(request))
        if failed(response):
            # An index of that name with another dimension (an older model): the caller must decide.
            raise ModelError(f"model {name!r} answers, but its index could not be created: {response.error}", 409)
