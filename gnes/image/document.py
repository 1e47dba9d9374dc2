"""The image of a wire document: its raw_image array or its raw_bytes PNG/JPEG."""

from __future__ import annotations

import numpy as np

from ..proto import WireError, nd_to_array, pb
from .decode import DEFAULT_MAX_PIXELS, ImageError, decode_image, image_from_array

# How an image encoder's refusal of a text document reads (the HTTP start probe looks for it).
TAKES_IMAGES = "this encoder takes images"


def doc_name(position: int, doc: pb.Document) -> str:
    """How errors name a document: its place in the request and its id."""
    return f"document {position} (doc_id {doc.doc_id})"


def doc_image(doc: pb.Document, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The document's image as (H, W, 3) uint8 RGB, or an ImageError starting with `name`."""
    kind = doc.WhichOneof("raw_data")
    if kind == "raw_image":
        try:
            array = nd_to_array(doc.raw_image)
        except WireError as exc:
            raise ImageError(f"{name}: raw_image is not a valid array: {exc}") from None
        return image_from_array(array, name, max_pixels)
    if kind == "raw_bytes":
        return decode_image(doc.raw_bytes, name, max_pixels)
    what = "no content" if kind is None else kind
    raise ImageError(f"{name} has {what}; {TAKES_IMAGES} (raw_image, or raw_bytes holding PNG/JPEG)")
