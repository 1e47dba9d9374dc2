"""Frames of an animated image or a video as chunks, sampled evenly to at most `max_frames`.

An animated GIF (or APNG, WebP) in raw_bytes is read frame by frame with Pillow: only the
frame being decoded and the sampled frames are held, so a GIF of thousands of frames takes
memory for `max_frames` frames, and `max_scan_frames` bounds the decoding time. A video as
a raw_video NdArray (T, H, W, 3) is sampled the same way, and so is a video file (MP4, WebM,
AVI ...) in raw_bytes, decoded by ffmpeg (gnes/preprocessor/video.py). A chunk's offset_nd is [frame].
"""

from __future__ import annotations

import numpy as np

from ..component import check_int
from ..image.decode import DEFAULT_MAX_PIXELS
from ..proto import pb
from .base import BasePreprocessor
from .pixels import array_image, blob_chunk, import_pil, open_image, to_rgb
from .video import looks_like_video, video_frames


def sample_positions(total: int, wanted: int) -> list[int]:
    """`wanted` frame numbers spread evenly over `total` frames, first and last included."""
    if total <= wanted:
        return list(range(total))
    return sorted({int(round(x)) for x in np.linspace(0, total - 1, wanted)})


class FrameSampler(BasePreprocessor):
    def __init__(
        self,
        max_frames: int = 16,
        max_side: int = 512,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_scan_frames: int = 100_000,
        max_chunks: int = 256,
        chunks_per_message: int = 16,
    ) -> None:
        super().__init__(max_chunks, chunks_per_message)
        self.max_frames = check_int("max_frames", max_frames, minimum=1, maximum=self.max_chunks)
        self.max_side = check_int("max_side", max_side, minimum=8)
        self.max_pixels = check_int("max_pixels", max_pixels, minimum=1)
        self.max_scan_frames = check_int("max_scan_frames", max_scan_frames, minimum=1)

    def _chunks(self, doc: pb.Document) -> list[pb.Chunk]:
        kind = doc.WhichOneof("raw_data")
        if kind == "raw_video":
            video = array_image(doc.raw_video, doc.doc_id, "raw_video", self.max_pixels)
            weight = 1.0 / min(len(video), self.max_frames)
            return [blob_chunk(video[i], [i], weight) for i in sample_positions(len(video), self.max_frames)]
        if kind == "raw_image":  # a still image: one frame
            return [blob_chunk(array_image(doc.raw_image, doc.doc_id, "raw_image", self.max_pixels), [0], 1.0)]
        if kind != "raw_bytes":
            raise ValueError(
                f"document {doc.doc_id} has no frames: send raw_bytes (a GIF or a video file) or raw_video (T, H, W, 3)"
            )
        if looks_like_video(doc.raw_bytes):
            return self._video_chunks(doc)
        image = open_image(doc, self.max_pixels)
        total = int(getattr(image, "n_frames", 1))
        if total > self.max_scan_frames:
            raise ValueError(
                f"document {doc.doc_id} has {total} frames; the limit is max_scan_frames={self.max_scan_frames}"
            )
        positions = sample_positions(total, self.max_frames)
        weight = 1.0 / len(positions)
        chunks = []
        for position in positions:  # increasing: Pillow decodes forward, one frame held at a time
            try:
                image.seek(position)
            except EOFError:
                break  # fewer frames than the header said: keep what was read
            chunks.append(blob_chunk(to_rgb(image, doc.doc_id, self.max_side), [position], weight))
        return chunks

    def _video_chunks(self, doc: pb.Document) -> list[pb.Chunk]:
        """A video file's frames (gnes/preprocessor/video.py), shrunk to max_side like a GIF's."""
        frames = list(video_frames(doc.raw_bytes, doc.doc_id, self.max_frames, self.max_pixels, self.max_scan_frames))
        if not frames:
            raise ValueError(f"document {doc.doc_id}: the video has no frame that can be decoded")
        image_mod = import_pil()
        weight = 1.0 / len(frames)
        return [
            blob_chunk(to_rgb(image_mod.fromarray(pixels), doc.doc_id, self.max_side), [number], weight)
            for number, pixels in frames
        ]
