"""Image documents over HTTP: multipart upload to index, and search by an uploaded image.

The files go into the pipeline as they are (raw_bytes, doc_type IMAGE); the image encoder
decodes them. A corrupt or non-image file is refused on its own, named by its file name and
id, while the rest of the upload is indexed (the pipeline's doc_errors, gnes/encoder/requests.py).
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from pydantic import BaseModel

from ..indexer.index_set import NO_SUCH_INDEX
from ..proto import pb
from . import models as m
from .auth import require_admin, require_read
from .calls import submit

router = APIRouter()
# Files in one upload: each is one document of one INDEX request.
MAX_FILES = 256


class RefusedImage(BaseModel):
    id: int
    filename: str
    reason: str


class ImagesIndexOut(BaseModel):
    indexed: int
    refused: list[RefusedImage]


@router.post("/images/index", response_model=ImagesIndexOut, dependencies=[Depends(require_admin)])
async def index_images(
    request: Request,
    files: Annotated[list[UploadFile], File(description="PNG/JPEG files, one document each")],
    start_id: Annotated[int, Form(ge=0, lt=1 << 63, description="doc_id of the first file; the others follow")] = 0,
    index: Annotated[str, Form(description="logical index name; empty: the default index")] = "",
) -> ImagesIndexOut:
    if len(files) > MAX_FILES:
        raise HTTPException(413, f"{len(files)} files in one upload; the limit is {MAX_FILES}")
    service = request.app.state.service
    limit = service.config.pipeline.max_doc_bytes
    message = pb.Request()
    message.index.index_name = index
    names: dict[int, str] = {}
    for i, upload in enumerate(files):
        doc_id = start_id + i
        name = upload.filename or f"file {i}"
        names[doc_id] = name
        meta = json.dumps({"filename": name})
        doc = message.index.docs.add(doc_id=doc_id, doc_type=pb.Document.IMAGE, meta_json=meta)
        doc.raw_bytes = await _read(upload, limit, name)
    response = await submit(service, message)
    body = response.index
    if body.status == pb.Response.ERROR:
        _raise_for(response.error)
    refused = [RefusedImage(id=e.doc_id, filename=names.get(e.doc_id, ""), reason=e.reason) for e in body.doc_errors]
    return ImagesIndexOut(indexed=body.num_docs, refused=refused)


@router.post("/images/search", response_model=m.SearchOut, dependencies=[Depends(require_read)])
async def search_image(
    request: Request,
    file: Annotated[UploadFile, File(description="a PNG/JPEG image")],
    top_k: Annotated[int, Form(ge=1, le=1000)] = 10,
    index: Annotated[str, Form()] = "",
) -> m.SearchOut:
    service = request.app.state.service
    name = file.filename or "the image"
    message = pb.Request()
    message.search.top_k = top_k
    message.search.index_name = index
    message.search.query.doc_type = pb.Document.IMAGE
    message.search.query.raw_bytes = await _read(file, service.config.pipeline.max_doc_bytes, name)
    response = await submit(service, message)
    if response.search.status == pb.Response.ERROR:
        _raise_for(response.error, name)
    hits = [_hit(r) for r in response.search.topk_results]
    return m.SearchOut(results=hits, partial=response.search.partial)


def _raise_for(error: str, name: str = "") -> None:
    """404 for an index no shard has; 422 when the encoder refused the caller's image (it names
    "the query" or a document by its doc_id); 502 for anything else."""
    if NO_SUCH_INDEX in error:
        raise HTTPException(404, error)
    if "the query" in error or "(doc_id " in error:
        raise HTTPException(422, f"{name}: {error}" if name else error)
    raise HTTPException(502, f"the pipeline failed: {error or 'no reason given'}")


async def _read(upload: UploadFile, limit: int, name: str) -> bytes:
    """The file's bytes, reading at most one byte past the limit (an oversize upload is not held)."""
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"{name} is over {limit} bytes, the pipeline's --max_doc_bytes")
    if not data:
        raise HTTPException(422, f"{name} is empty")
    return data


def _hit(result: pb.Response.QueryResponse.ScoredResult) -> m.Hit:
    doc = result.doc
    meta = json.loads(doc.meta_json) if doc.meta_json else None
    return m.Hit(id=doc.doc_id, score=result.score.value, text="", metadata=meta)
