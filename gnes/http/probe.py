"""The HTTP service's start probe: one EMBED that tells the model's dimension, with a text, or
with a small image when the pipeline's encoder takes images (gnes/encoder/image.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..image.document import TAKES_IMAGES
from ..proto import array_to_nd, nd_to_array, pb
from .batcher import PipelineError


async def embed_probe(batcher: Any, session: Any, timeout_s: float) -> np.ndarray:
    """The probe's vectors, one row; PipelineError (or a timeout) until the pipeline answers."""
    try:
        return await batcher.embed_now(["dimension probe"], timeout_s=timeout_s)
    except PipelineError as exc:
        if TAKES_IMAGES not in str(exc):
            raise
    request = pb.Request()
    array_to_nd(np.full((32, 32, 3), 128, np.uint8), request.embed.docs.add(doc_id=0).raw_image)
    response = await (await session.submit(request, timeout_s))
    if response.embed.status != pb.Response.SUCCESS:
        raise PipelineError(response.error or "the pipeline did not embed the image probe")
    return nd_to_array(response.embed.embeddings)
