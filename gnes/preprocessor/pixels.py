"""Pixels in and out of documents and chunks, with the limits every image preprocessor shares.

Pillow is imported only when an image is decoded (the image extra), so text-only
deployments never need it.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from ..proto import WireError, array_to_nd, nd_to_array, pb

# The pixel limit (DEFAULT_MAX_PIXELS) is gnes/image/decode.py's: one for the encoder and the preprocessors.


def import_pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(f"image preprocessors need Pillow: install gnes[image] ({exc})") from exc
    return Image


def open_image(doc: pb.Document, max_pixels: int) -> Any:
    """The Pillow image of a document's raw_bytes, checked against `max_pixels` before any
    pixel is decoded (Pillow reads only the header here)."""
    image_mod = import_pil()
    try:
        image = image_mod.open(io.BytesIO(doc.raw_bytes))
    except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError...
        raise ValueError(f"document {doc.doc_id}: raw_bytes is not an image Pillow can read ({exc})") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ValueError(f"document {doc.doc_id}: the image is {width} x {height} pixels")
    if width * height > max_pixels:
        raise ValueError(
            f"document {doc.doc_id}: the image is {width} x {height} pixels; the limit is {max_pixels} pixels"
        )
    return image


def to_rgb(image: Any, doc_id: int, max_side: int) -> np.ndarray:
    """An (H, W, 3) uint8 array of one decoded frame, shrunk so its longer side is at most max_side."""
    try:
        frame = image.convert("RGB")
        if max(frame.size) > max_side:
            frame.thumbnail((max_side, max_side))
        return np.asarray(frame, dtype=np.uint8)
    except Exception as exc:  # truncated or corrupt pixel data shows only when decoded
        raise ValueError(f"document {doc_id}: the image data cannot be decoded ({exc})") from None


def array_image(nd: pb.NdArray, doc_id: int, what: str, max_pixels: int) -> np.ndarray:
    """A raw_image / raw_video NdArray as uint8 RGB: (H, W, 3), or (T, H, W, 3) for video."""
    try:
        array = nd_to_array(nd)
    except WireError as exc:
        raise ValueError(f"document {doc_id}: {what}: {exc}") from None
    frames = array.ndim == 4 or (what == "raw_video" and array.ndim == 3)
    if array.ndim == (3 if frames else 2):  # grey: repeat to RGB
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != (4 if frames else 3) or array.shape[-1] != 3 or array.dtype != np.uint8:
        want = "(T, H, W, 3)" if frames else "(H, W, 3)"
        raise ValueError(f"document {doc_id}: {what} must be uint8 {want}, got {array.dtype} {array.shape}")
    height, width = array.shape[-3], array.shape[-2]
    if height < 1 or width < 1:
        raise ValueError(f"document {doc_id}: {what} is {width} x {height} pixels")
    if height * width > max_pixels:
        raise ValueError(f"document {doc_id}: {what} is {width} x {height} pixels; the limit is {max_pixels} pixels")
    return array


def blob_chunk(pixels: np.ndarray, offset_nd: list[int], weight: float) -> pb.Chunk:
    chunk = pb.Chunk(weight=weight)
    array_to_nd(np.ascontiguousarray(pixels), chunk.blob)
    chunk.offset_nd.extend(offset_nd)
    return chunk
