"""One request through the pipeline from an HTTP endpoint, its failures as HTTP statuses: refused at
the door (422) where it cannot be served; 404 for a model no encoder serves or an index no shard
has; 422 for instruction pairs a model does not take; 502 for any other failure."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException

from ..indexer.index_set import NO_SUCH_INDEX
from ..proto import WireError, pb
from ..service.message import failed
from ..service.validate import check_request

NO_MODEL = "no encoder serves the model"  # the map proxy's answer (gnes/elastic/dispatch.py)


async def submit(service: Any, request: pb.Request) -> pb.Response:
    """The pipeline's answer, whatever it is; 422 where check_request refuses the request."""
    try:
        check_request(request, service.config.pipeline)
    except WireError as exc:
        raise HTTPException(422, str(exc)) from None
    return await (await service.session.submit(request))


async def call(service: Any, request: pb.Request) -> pb.Response:
    """The pipeline's answer where it succeeded; an HTTPException where it did not."""
    response = await submit(service, request)
    if failed(response):
        if NO_MODEL in response.error or NO_SUCH_INDEX in response.error:  # the caller's name: not a failure
            raise HTTPException(404, response.error)
        if "does not take [instruction, text] pairs" in response.error:
            raise HTTPException(422, response.error)
        raise HTTPException(502, f"the pipeline failed: {response.error or 'no reason given'}")
    return response
