"""Index image files and search by an image through the gRPC frontend.

The files travel as they are (raw_bytes, doc_type IMAGE): the encoder service decodes them,
so a corrupt or non-image file is refused there, named, while the rest is indexed. Each
document's metadata holds its path relative to the folder, which is how answers name it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..proto import pb
from ..service.config import ServiceConfig
from .grpc_client import GnesClient, SearchHit

# The frontend's default --max_doc_bytes: a larger file would have its whole request refused.
MAX_FILE_BYTES = ServiceConfig.max_doc_bytes


@dataclass(slots=True)
class ImageIndexSummary:
    num_docs: int = 0
    requests: int = 0
    # one line per refused file or failed request, naming the file where the answer names a document
    errors: list[str] = field(default_factory=list)


def image_files(folder: Path) -> list[Path]:
    """Every file under `folder` but hidden ones, sorted: what is not an image is refused by the
    encoder with a reason, rather than skipped here without a word."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def index_images(
    client: GnesClient,
    folder: Path,
    batch_size: int = 16,
    start_id: int = 0,
    on_batch: Callable[[int], None] | None = None,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> ImageIndexSummary:
    """Index every file under `folder` with ids start_id, start_id+1, ... in one streaming call.
    A file over `max_file_bytes` is not sent (the frontend would refuse its whole request) and
    is reported; its id is skipped, so ids still follow the sorted file names."""
    files = image_files(folder)
    names = {start_id + i: str(path.relative_to(folder)) for i, path in enumerate(files)}
    summary = ImageIndexSummary()
    sendable = []
    for i, path in enumerate(files):
        size = path.stat().st_size
        if size > max_file_bytes:
            summary.errors.append(f"{names[start_id + i]}: {size} bytes, over the limit of {max_file_bytes} (not sent)")
        else:
            sendable.append((start_id + i, path))
    for response in client.stream(_requests(sendable, folder, batch_size)):
        summary.requests += 1
        body = response.index
        refused = {e.doc_id for e in body.doc_errors}
        for error in body.doc_errors:
            summary.errors.append(f"{names.get(error.doc_id, error.doc_id)}: {error.reason}")
        if body.status == pb.Response.ERROR:
            summary.errors.append(response.error or "index request failed")
        else:
            summary.num_docs += body.num_docs
            if response.error and not refused:
                summary.errors.append(response.error)
        if on_batch is not None:
            on_batch(body.num_docs + len(refused))
    return summary


def _requests(files: list[tuple[int, Path]], folder: Path, batch_size: int) -> Iterator[pb.Request]:
    request_ids = itertools.count(1)
    for start in range(0, len(files), batch_size):
        request = pb.Request(request_id=next(request_ids))
        for doc_id, path in files[start : start + batch_size]:
            doc = request.index.docs.add(doc_id=doc_id, doc_type=pb.Document.IMAGE)
            doc.raw_bytes = path.read_bytes()
            doc.meta_json = json.dumps({"path": str(path.relative_to(folder))})
        yield request


def query_image(client: GnesClient, path: Path, top_k: int = 10) -> list[SearchHit]:
    """The documents nearest to the image in `path`; GnesError with the reason when it is refused."""
    request = pb.Request(request_id=1)
    request.search.query.raw_bytes = path.read_bytes()
    request.search.query.doc_type = pb.Document.IMAGE
    request.search.top_k = top_k
    # The text-query reading of the answer: an image document is stored without text, so its text is "".
    return client._hits(client.call(request))
