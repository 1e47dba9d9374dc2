"""Frames of a video file (MP4, WebM, AVI, MKV ... in raw_bytes), decoded by ffmpeg.

ffmpeg comes with the `imageio-ffmpeg` wheel (a static binary; Debian's ffmpeg works too, found
through IMAGEIO_FFMPEG_EXE), so no system package is needed. The bytes go to a temporary file,
because ffmpeg probes a file's container by seeking. The frame size is read from the stream's header
and checked against `max_pixels` before any frame is decoded; frames are then decoded one at a time,
only the sampled ones are kept, and decoding stops after the last sampled frame or at
`max_scan_frames`, so a long video costs bounded memory and bounded time.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

# A video container's first bytes: ISO media (MP4, MOV, 3GP) has "ftyp" at offset 4; Matroska and
# WebM start with the EBML magic; AVI is a RIFF file of type "AVI "; MPEG program and transport streams.
_EBML = b"\x1a\x45\xdf\xa3"


def looks_like_video(data: bytes) -> bool:
    head = data[:16]
    return (
        head[4:8] == b"ftyp"
        or head.startswith(_EBML)
        or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
        or head.startswith(b"\x00\x00\x01\xba")
        or (head[:1] == b"\x47" and data[188:189] == b"\x47")  # an MPEG transport stream's sync bytes
    )


def _ffmpeg() -> Any:
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise ValueError(f"video files need imageio-ffmpeg: install gnes[image] ({exc})") from None
    return imageio_ffmpeg


def video_frames(
    data: bytes, doc_id: int, wanted: int, max_pixels: int, max_scan_frames: int
) -> Iterator[tuple[int, np.ndarray]]:
    """(frame number, (H, W, 3) uint8) for about `wanted` frames spread over the video."""
    ffmpeg = _ffmpeg()
    handle, path = tempfile.mkstemp(suffix=".video")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        reader = ffmpeg.read_frames(path, pix_fmt="rgb24")
        try:
            meta = next(reader)
        except (RuntimeError, OSError, StopIteration) as exc:
            raise ValueError(f"document {doc_id}: raw_bytes is not a video ffmpeg can read ({exc})") from None
        try:
            width, height = (int(v) for v in meta["size"])
            if width < 1 or height < 1 or width * height > max_pixels:
                raise ValueError(
                    f"document {doc_id}: the video is {width} x {height} pixels a frame; the limit is {max_pixels}"
                )
            total = _frame_count(meta, max_scan_frames)
            keep = set(np.linspace(0, total - 1, min(wanted, total)).round().astype(int).tolist())
            last = max(keep)
            for number, raw in enumerate(reader):
                if number > last or number >= max_scan_frames:
                    break
                if number in keep:
                    yield number, np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3).copy()
        finally:
            reader.close()  # ends ffmpeg, whatever is left undecoded
    except RuntimeError as exc:  # ffmpeg failed part-way: a truncated or corrupt stream
        raise ValueError(f"document {doc_id}: the video cannot be decoded ({exc})") from None
    finally:
        os.unlink(path)


def _frame_count(meta: dict[str, Any], max_scan_frames: int) -> int:
    """Frames the header promises (fps x duration), at least 1, at most what may be scanned."""
    fps, duration = float(meta.get("fps") or 0), float(meta.get("duration") or 0)
    estimate = int(fps * duration) if fps > 0 and duration > 0 else max_scan_frames
    return max(1, min(estimate, max_scan_frames))
