"""The FastAPI application: endpoints over the pipeline session and the embedding batcher."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response

from ..metrics.http import MetricsMiddleware
from ..metrics.prom import Metrics
from ..proto import pb
from . import models as m
from . import models_api, ops, page
from .auth import require_admin, require_read
from .batcher import PipelineError, QueueFull
from .calls import call
from .vectors_json import vectors_response

if TYPE_CHECKING:
    from .service import HttpService

_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": m.ErrorOut} for code in (400, 404, 413, 429, 502)}
_ERRORS[422] = {"model": m.InvalidOut}


def create_app(service: HttpService) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with service.lifespan(app):
            # The batcher exists once the service's lifespan has opened the session.
            if service.batcher is not None:
                service.batcher.on_batch = app.state.metrics.observe_batch
            yield

    app = FastAPI(title="gnes", lifespan=lifespan, responses=_ERRORS)
    app.state.service = service
    app.state.tokens = service.tokens
    app.state.session = service.session
    read = APIRouter(dependencies=[Depends(require_read)])
    admin = APIRouter(dependencies=[Depends(require_admin)])

    @read.post("/embed", response_model=m.EmbedOut)
    async def embed(body: m.EmbedIn, request: Request) -> Response:
        rows = await _embed(service, request, body.sentences)
        return vectors_response({"embeddings": rows})

    @read.post("/embed/batch", response_model=m.BatchOut)
    async def embed_batch(body: m.BatchIn, request: Request) -> Response:
        """The external-function format: every row answered, in the order given."""
        rows = await _embed(service, request, [text for _, text in body.data])
        return vectors_response({"data": [(row, vec) for (row, _), vec in zip(body.data, rows, strict=True)]})

    @read.post("/apply/{model}", response_model=m.ApplyOut)
    async def apply(model: str, body: m.TitleIn, request: Request) -> m.ApplyOut:
        if _named(service, model):  # a model added with `gnes model add` (gnes/http/models_api.py)
            rows = await models_api.embed_named(service, model, [_fit(service, body.title)])
            return m.ApplyOut(model=model, embedding=rows[0].tolist())
        rows = await _embed(service, request, [body.title])
        return m.ApplyOut(model=model, embedding=rows[0].tolist())

    @read.post("/searchwith/{model}", response_model=m.SearchWithOut)
    async def searchwith(model: str, body: m.TitleIn, top_k: int = 10, index: str = "") -> m.SearchWithOut:
        """index: another logical index than the model's own (one imported with `gnes model import-index`)."""
        top_k = max(1, min(top_k, 1000))
        if _named(service, model):
            hits = await models_api.search_named(service, model, _fit(service, body.title), top_k, index)
            return m.SearchWithOut(model=model, results=hits)
        search = m.SearchIn(text=body.title, top_k=top_k, index=index)
        return m.SearchWithOut(model=model, results=(await _search(service, search)).results)

    @read.post("/search", response_model=m.SearchOut)
    async def search(body: m.SearchIn) -> m.SearchOut:
        return await _search(service, body)

    @admin.post("/index", response_model=m.IndexOut)
    async def index(body: m.IndexIn) -> m.IndexOut:
        request = pb.Request(model_name="" if not _named(service, body.model) else body.model)
        request.index.index_name = body.index
        for doc in body.documents:
            meta = json.dumps(doc.metadata) if doc.metadata is not None else ""
            request.index.docs.add(doc_id=doc.id, raw_text=_fit(service, doc.text), meta_json=meta)
        response = await call(service, request)  # an unknown model is a 404, as on /apply/{model}
        return m.IndexOut(indexed=response.index.num_docs)

    @read.get("/flow")
    async def flow() -> dict[str, Any]:
        """The flow control's counters and settings."""
        return service.status_info()

    app.include_router(read)
    app.include_router(admin)
    app.include_router(models_api.router)  # named models: admin, keyterms, instruction pairs
    if importlib.util.find_spec("python_multipart") is not None:  # forms need python-multipart (gnes[http])
        from . import images

        app.include_router(images.router)  # image upload and search by image (gnes/http/images.py)
    app.state.metrics = Metrics()  # prometheus-client comes with gnes[http]
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # requests by endpoint and status
    # Per-stage latency from each answer's route stamps (only the session sees the envelope).
    service.session.on_answer = app.state.metrics.observe_answer
    app.include_router(ops.router)  # health, metrics, status
    app.include_router(page.router)  # the search page
    return app


def _named(service: HttpService, model: str) -> bool:
    """A named model (its own encoders and index), not the deployment's own one."""
    return bool(model) and model not in (service.config.model_name, "default")


def _fit(service: HttpService, text: str) -> str:
    """The text as the encoder will take it: within max_input_bytes (cut, or 413)."""
    if not text.strip():
        raise HTTPException(422, "a text is empty")
    limit = service.config.max_input_bytes
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    if not service.config.truncate:
        raise HTTPException(413, f"a text is {len(raw)} bytes; the limit is {limit} bytes")
    return raw[:limit].decode("utf-8", errors="ignore")  # never half a character


async def _embed(service: HttpService, request: Request, texts: list[str]) -> np.ndarray:
    texts = [_fit(service, t) for t in texts]
    batcher = service.batcher
    if len(texts) > batcher.capacity:
        raise HTTPException(413, f"{len(texts)} texts in one request; the queue holds {batcher.capacity}")
    try:
        future = batcher.offer(texts)
    except QueueFull as exc:
        raise HTTPException(429, str(exc), {"Retry-After": str(service.config.retry_after_s)}) from None
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({future, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        batcher.cancel(future)
        raise
    finally:
        gone.cancel()
    if not future.done():  # the caller went away: its place in the queue is given up
        batcher.cancel(future)
        raise HTTPException(499, "the client closed the connection")
    try:
        return future.result()
    except PipelineError as exc:
        raise HTTPException(502, f"the pipeline failed: {exc}") from None


async def _disconnected(request: Request) -> None:
    # The body is read already: the next ASGI message is the disconnect, when it comes.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _search(service: HttpService, body: m.SearchIn) -> m.SearchOut:
    request = pb.Request()
    search = request.search
    search.query.raw_text = _fit(service, body.text)
    search.top_k = body.top_k
    search.index_name = body.index
    if body.filter is not None:
        search.filter_field = body.filter.field
        search.filter_value_json = json.dumps(body.filter.value)
    response = await call(service, request)
    hits = [_hit(r) for r in response.search.topk_results]
    return m.SearchOut(results=hits, partial=response.search.partial)


def _hit(result: pb.Response.QueryResponse.ScoredResult) -> m.Hit:
    doc = result.doc
    meta = json.loads(doc.meta_json) if doc.meta_json else None
    return m.Hit(id=doc.doc_id, score=result.score.value, text=doc.raw_text, metadata=meta)
