"""Image chunks: the whole image, plus a grid of crops or sliding-window crops.

A crop's offset_nd is [top, left, height, width] in pixels of the image as decoded (after
the `max_side` shrink); its weight is its share of the image's area. Input: raw_image as
an (H, W, 3) uint8 NdArray, or raw_bytes holding a PNG, JPEG or any format Pillow reads.
"""

from __future__ import annotations

import numpy as np

from ..component import check_bool, check_int, check_str
from ..image.decode import DEFAULT_MAX_PIXELS
from ..proto import pb
from .base import BasePreprocessor
from .pixels import array_image, blob_chunk, open_image, to_rgb


def document_pixels(doc: pb.Document, max_pixels: int, max_side: int) -> np.ndarray:
    kind = doc.WhichOneof("raw_data")
    if kind == "raw_image":
        return array_image(doc.raw_image, doc.doc_id, "raw_image", max_pixels)
    if kind == "raw_bytes":
        return to_rgb(open_image(doc, max_pixels), doc.doc_id, max_side)
    raise ValueError(f"document {doc.doc_id} has no image: send raw_image (H, W, 3 uint8) or raw_bytes (PNG/JPEG)")


class ImageCropper(BasePreprocessor):
    """`mode: grid` cuts the image into `rows` x `cols` equal crops; `mode: sliding` takes
    square windows of `window` pixels every `stride` pixels (the last ones flush with the
    right and bottom edges). With `include_whole` the whole image is chunk 0."""

    def __init__(
        self,
        mode: str = "grid",
        rows: int = 2,
        cols: int = 2,
        window: int = 224,
        stride: int = 112,
        include_whole: bool = True,
        max_side: int = 1024,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_chunks: int = 64,
        chunks_per_message: int = 10,
    ) -> None:
        super().__init__(max_chunks, chunks_per_message)
        self.mode = check_str("mode", mode, ("grid", "sliding"))
        self.rows = check_int("rows", rows, minimum=1)
        self.cols = check_int("cols", cols, minimum=1)
        self.window = check_int("window", window, minimum=8)
        self.stride = check_int("stride", stride, minimum=1)
        self.include_whole = check_bool("include_whole", include_whole)
        self.max_side = check_int("max_side", max_side, minimum=8)
        self.max_pixels = check_int("max_pixels", max_pixels, minimum=1)

    def _chunks(self, doc: pb.Document) -> list[pb.Chunk]:
        pixels = document_pixels(doc, self.max_pixels, self.max_side)
        height, width = pixels.shape[:2]
        boxes = self._grid(height, width) if self.mode == "grid" else self._sliding(height, width)
        chunks = [blob_chunk(pixels, [0, 0, height, width], 1.0)] if self.include_whole else []
        area = float(height * width)
        for top, left, h, w in boxes:
            chunks.append(blob_chunk(pixels[top : top + h, left : left + w], [top, left, h, w], h * w / area))
        return chunks

    def _grid(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        rows, cols = min(self.rows, height), min(self.cols, width)
        ys = np.linspace(0, height, rows + 1).round().astype(int)
        xs = np.linspace(0, width, cols + 1).round().astype(int)
        return [
            (int(ys[r]), int(xs[c]), int(ys[r + 1] - ys[r]), int(xs[c + 1] - xs[c]))
            for r in range(rows)
            for c in range(cols)
        ]

    def _sliding(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        h, w = min(self.window, height), min(self.window, width)
        return [(top, left, h, w) for top in _starts(height, h, self.stride) for left in _starts(width, w, self.stride)]


def _starts(size: int, window: int, stride: int) -> list[int]:
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] + window < size:
        starts.append(size - window)
    return starts
