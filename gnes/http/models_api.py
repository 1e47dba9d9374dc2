"""The HTTP side of named models: model admin (add, list, status, remove), keyterms, instruction
pairs, and the calls that /apply/{model}, /searchwith/{model} and /index make for a named model.

A named model's requests go through the same pipeline session as everything else, with
`Request.model_name` set: the map proxy hands them to that model's encoders, and a model that no
encoder serves is answered at once with an error (404 here).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from ..models.controller import Controller, ModelError, backend_from_env
from ..proto import array_to_nd, nd_to_array, pb
from ..service.message import failed
from . import models as m
from .auth import require_admin, require_read
from .calls import call

_CHUNK = 256  # texts per EMBED request when keyterms embed their candidates
_IMPORT_BATCH = 1000  # documents per INDEX request of an imported faiss index


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelIn(_Body):
    name: StrictStr = Field(min_length=1, max_length=64)
    path: StrictStr = Field("", description="a local sentence-transformers model directory")
    plugin: StrictStr = Field("", description="a Python file defining get_embed_fn()")
    package: StrictStr = Field("", description="an importable package defining get_embed_fn()")
    replicas: int = Field(1, ge=1, le=32)


class KeytermsIn(_Body):
    sentences: list[StrictStr] = Field(min_length=1, max_length=64)
    model: StrictStr = "default"
    top_n: int = Field(5, ge=1, le=50)
    diversity: float = Field(0.5, ge=0.0, le=1.0)
    max_ngram: int = Field(2, ge=1, le=3)


class Term(BaseModel):
    term: str
    score: float


class KeytermsOut(BaseModel):
    model: str
    keyterms: list[list[Term]]


class EmbedWithIn(_Body):
    sentences: list[StrictStr | tuple[StrictStr, StrictStr]] = Field(
        min_length=1, description="texts, or [instruction, text] pairs for a model that takes them"
    )


class ImportIn(_Body):
    name: StrictStr = Field(min_length=1, max_length=64, description="the logical index to create")
    faiss_path: StrictStr = Field(min_length=1, description="a faiss index file on the HTTP service's host")
    map_path: StrictStr = Field(min_length=1, description="faiss id -> document id: JSON or CSV")
    model: StrictStr = Field("default", description="the model whose queries search it: its dimension must match")
    metric: StrictStr = Field("", description="ip or l2: must be the index's own metric")


class EmbedWithOut(BaseModel):
    model: str
    embeddings: list[list[float]]


# 409: no model backend, a model or index that exists, an index of another dimension; 504: no answer in time
router = APIRouter(tags=["models"], responses={code: {"model": m.ErrorOut} for code in (409, 504)})
ModelName = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="a model name")
admin = [Depends(require_admin)]
read = [Depends(require_read)]


def controller(request: Request) -> Controller:
    state = request.app.state
    if getattr(state, "controller", None) is None:
        state.controller = Controller(state.session, backend_from_env())
    return state.controller


async def _answer(call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """A model-admin call's answer, its ModelError as the HTTP status the error carries."""
    try:
        return await call
    except ModelError as exc:
        raise HTTPException(exc.status, str(exc)) from None


@router.post("/models", dependencies=admin, status_code=201, summary="add a named model to the running deployment")
async def add_model(body: ModelIn, request: Request) -> dict[str, Any]:
    source = {"path": body.path, "plugin": body.plugin, "package": body.package}
    return await _answer(controller(request).add(body.name, source, body.replicas))


@router.get("/models", dependencies=admin, summary="the named models and their services")
async def list_models(request: Request) -> dict[str, Any]:
    return await _answer(controller(request).list())


@router.get("/models/{name}", dependencies=admin, summary="one model: services, dimension, whether it answers")
async def model_status(request: Request, name: str = ModelName) -> dict[str, Any]:
    return await _answer(controller(request).status(name))


@router.delete("/models/{name}", dependencies=admin, summary="stop a model's services (its index is kept)")
async def remove_model(request: Request, name: str = ModelName) -> dict[str, Any]:
    return await _answer(controller(request).remove(name))


@router.post("/indexes/import", dependencies=admin, status_code=201, summary="a faiss index file as a logical index")
async def import_index(body: ImportIn, request: Request) -> dict[str, Any]:
    """The vectors of a faiss index built elsewhere, under the document ids its map gives, stored as a
    new logical index (gnes/indexer/imported.py); search it with /searchwith/{model}?index=NAME."""
    from ..indexer.imported import load_faiss_index

    service = request.app.state.service
    model = _model_name(request, body.model)
    try:
        dim = await controller(request).probe(model, 10.0, wait_for_encoders=False) if model else service.model_dim
        rows = await asyncio.to_thread(load_faiss_index, body.faiss_path, body.map_path, dim, body.metric.lower())
    except (ModelError, ValueError) as exc:
        raise HTTPException(getattr(exc, "status", 422), str(exc)) from None
    create = pb.Request(model_name=model)
    create.admin.command = pb.Request.AdminRequest.CREATE
    create.admin.index_name = body.name
    create.admin.config_json = json.dumps({"dim": rows.dim, "metric": rows.metric, "index_type": "flat"})
    response = await (await service.session.submit(create))
    if failed(response):
        raise HTTPException(409, f"index {body.name!r} could not be created: {response.error}")
    for start in range(0, len(rows.doc_ids), _IMPORT_BATCH):
        part = pb.Request(model_name=model)
        part.index.index_name = body.name
        for i in range(start, min(start + _IMPORT_BATCH, len(rows.doc_ids))):
            doc = part.index.docs.add(doc_id=int(rows.doc_ids[i]))
            if rows.texts[i]:
                doc.raw_text = rows.texts[i]
        array_to_nd(rows.vectors[start : start + _IMPORT_BATCH], part.index.embeddings)
        await call(service, part)
    return {"name": body.name, "count": len(rows.doc_ids), "dim": rows.dim, "metric": rows.metric, "model": body.model}


@router.post("/embedwith/{model}", dependencies=read, response_model=EmbedWithOut)
async def embed_with(model: str, body: EmbedWithIn, request: Request) -> EmbedWithOut:
    rows = await embed_named(request.app.state.service, _model_name(request, model), body.sentences)
    return EmbedWithOut(model=model, embeddings=rows.tolist())


@router.post("/keyterms", dependencies=read, response_model=KeytermsOut)
async def keyterms(body: KeytermsIn, request: Request) -> KeytermsOut:
    from ..models.keyterms import extract_keyterms

    service, loop = request.app.state.service, asyncio.get_running_loop()
    name = _model_name(request, body.model)

    def embed(texts: list[str]) -> np.ndarray:  # KeyBERT runs in a worker thread; the pipeline in the loop
        parts = [
            asyncio.run_coroutine_threadsafe(embed_named(service, name, texts[i : i + _CHUNK]), loop).result()
            for i in range(0, len(texts), _CHUNK)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)

    try:
        ngrams = (1, body.max_ngram)
        found = await asyncio.to_thread(extract_keyterms, body.sentences, embed, body.top_n, ngrams, body.diversity)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return KeytermsOut(model=body.model, keyterms=[[Term(term=t, score=s) for t, s in terms] for terms in found])


def _model_name(request: Request, model: str) -> str:
    """The pipeline's name of a model: "" for the deployment's own one."""
    own = request.app.state.service.config.model_name
    return "" if model in ("default", own) else model


async def embed_named(service: Any, model: str, items: list[Any]) -> np.ndarray:
    """Embed texts (or [instruction, text] pairs) with a model, bypassing the default model's batcher."""
    request = pb.Request(model_name=model)
    from .app import _fit  # the size limit of every text the service takes (413, or cut with --truncate)

    for i, item in enumerate(items):
        instruction, text = (item[0], item[1]) if isinstance(item, (tuple, list)) else ("", item)
        if not text.strip():
            raise HTTPException(422, f"text {i} is empty")
        request.embed.docs.add(doc_id=i, raw_text=_fit(service, text), instruction=instruction)
    response = await call(service, request)
    return nd_to_array(response.embed.embeddings)


async def search_named(service: Any, model: str, text: str, top_k: int, index: str = "") -> list[m.Hit]:
    request = pb.Request(model_name=model)
    request.search.query.raw_text = text
    request.search.top_k = top_k
    request.search.index_name = index
    response = await call(service, request)
    from .app import _hit  # the one reading of a scored result (app imports this module)

    return [_hit(result) for result in response.search.topk_results]
