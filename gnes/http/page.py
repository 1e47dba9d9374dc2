"""The search page at ``/``: static HTML and JS (no CDN), and ``/ui/search``, the query it sends.

The page lists the logical indexes (``/indexes``, an admin LIST), sends the query with the
chosen index and top_k, and shows the ranked documents with their scores and metadata. When
tokens are configured it asks for one and sends it as a bearer header (kept in the tab's
sessionStorage only).
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from ..proto import pb
from ..service.message import response_status
from .auth import require_read
from .models import ErrorOut

router = APIRouter(tags=["page"])
_PAGE = Path(__file__).with_name("static") / "search.html"


@functools.cache
def _page_html() -> str:
    return _PAGE.read_text(encoding="utf-8")  # read once, on the first request, not on every one


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse(_page_html())


@router.get(
    "/ui/search",
    summary="the page's query: ranked documents",
    dependencies=[Depends(require_read)],
    responses={503: {"model": ErrorOut, "description": "the pipeline could not answer"}},
)
async def ui_search(
    request: Request,
    q: str = Query(..., min_length=1, max_length=4096),
    top_k: int = Query(10, ge=1, le=100),
    index: str = Query("", max_length=200),
) -> dict[str, Any]:
    if not q.strip():  # the encoder has nothing to encode: the caller's mistake, not the pipeline's
        raise HTTPException(422, "the query is empty")
    query = pb.Request(request_id=int(time.monotonic_ns() & 0x7FFFFFFF))
    query.search.query.raw_text = q
    query.search.query.doc_type = pb.Document.TEXT
    query.search.top_k = top_k
    query.search.index_name = index
    session = request.app.state.session
    response: pb.Response = await (await session.submit(query))
    if response_status(response) == pb.Response.ERROR:
        # The caller's input (an unknown index, an empty text) or a pipeline that cannot answer.
        raise HTTPException(422 if "index" in (response.error or "") else 503, response.error or "query failed")
    hits = []
    for rank, result in enumerate(response.search.topk_results, 1):
        doc = result.doc
        meta = json.loads(doc.meta_json) if doc.meta_json else None
        hits.append({"rank": rank, "id": doc.doc_id, "score": result.score.value, "text": doc.raw_text, "meta": meta})
    return {"query": q, "index": index, "partial": response.search.partial, "hits": hits}
