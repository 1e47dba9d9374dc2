"""Decoding image documents: what is converted, what is refused and how the refusal reads."""

from __future__ import annotations

import io
import resource
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from gnes.image.decode import ImageError, decode_image, image_from_array, looks_like_image
from gnes.image.document import doc_image
from gnes.proto import array_to_nd, pb

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (40, 30, 3), dtype=np.uint8)


def _save(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, colour_type: int = 2, depth: int = 8, rows: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


def test_png_and_jpeg_decode_to_rgb() -> None:
    np.testing.assert_array_equal(decode_image(_save(Image.fromarray(RGB))), RGB)
    jpeg = decode_image(_save(Image.fromarray(RGB), "JPEG"))
    assert jpeg.shape == (40, 30, 3) and jpeg.dtype == np.uint8
    assert np.abs(jpeg.astype(int) - RGB).mean() < 60  # lossy, but the same picture


@pytest.mark.parametrize(
    "mode, format",
    [("L", "PNG"), ("1", "PNG"), ("P", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("CMYK", "JPEG"), ("L", "JPEG")],
)
def test_other_modes_are_converted(mode: str, format: str) -> None:
    image = decode_image(_save(Image.fromarray(RGB).convert(mode), format), "doc 1")
    assert image.shape == (40, 30, 3) and image.dtype == np.uint8


def test_transparent_pixels_are_shown_on_white() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    rgba[0, 0] = (255, 0, 0, 255)  # one opaque red pixel
    image = decode_image(_save(Image.fromarray(rgba, "RGBA")))
    assert tuple(image[0, 0]) == (255, 0, 0) and tuple(image[1, 1]) == (255, 255, 255)
    np.testing.assert_array_equal(image_from_array(rgba), image)


def test_16_bit_keeps_the_high_byte() -> None:
    grey = Image.fromarray(np.array([[0, 256, 65535]], np.uint16))
    assert grey.mode.startswith("I")
    assert decode_image(_save(grey))[0, :, 0].tolist() == [0, 1, 255]
    rgb16 = (RNG.integers(0, 65536, (5, 6, 3))).astype(">u2")
    rows = b"".join(b"\x00" + row.tobytes() for row in rgb16)
    assert decode_image(_png(6, 5, depth=16, rows=rows)).shape == (5, 6, 3)
    assert image_from_array(np.full((2, 2), 0x1234, np.uint16))[0, 0].tolist() == [0x12] * 3


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "the image data is empty"),
        (b"plain text, not an image", "not an image Pillow can read"),
        (_png(0, 10), "the image is empty (0 x 10 pixels)"),
        (_png(10, 0), "the image is empty (10 x 0 pixels)"),
        (_png(100_000, 100_000), "100000 x 100000 = 10000000000 pixels; the limit is 40000000 pixels"),
        (_png(7000, 7000), "7000 x 7000 = 49000000 pixels; the limit is 40000000"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "header is invalid"),
    ],
)
def test_refused_with_the_document_named(data: bytes, message: str) -> None:
    with pytest.raises(ImageError) as info:
        decode_image(data, "document 3 (doc_id 9)")
    assert str(info.value).startswith("document 3 (doc_id 9): ")
    assert message in str(info.value)


def test_truncated_png_and_jpeg() -> None:
    for format in ("PNG", "JPEG"):
        data = _save(Image.fromarray(RNG.integers(0, 256, (200, 200, 3), dtype=np.uint8)), format)
        with pytest.raises(ImageError, match=f"doc 1: the {format} data is corrupt or truncated"):
            decode_image(data[: len(data) // 2], "doc 1")


def _forged_jpeg(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header is rewritten to declare width x height."""
    data = bytearray(_save(Image.fromarray(RGB), "JPEG"))
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = height.to_bytes(2) + width.to_bytes(2)
    return bytes(data)


def test_a_huge_jpeg_is_refused_by_its_header_in_bounded_memory() -> None:
    """A 30000 x 30000 JPEG (a few kB that would decode to 2.7 GB) is refused before decoding."""
    data = _forged_jpeg(30_000, 30_000)
    assert len(data) < 10_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(3):
        with pytest.raises(ImageError, match="30000 x 30000 = 900000000 pixels; the limit is 40000000 pixels"):
            decode_image(data, "doc 2")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 50
    # Below Pillow's own bomb limit, above ours: still ours that refuses, by the header.
    with pytest.raises(ImageError, match="8000 x 6000 = 48000000 pixels; the limit is 40000000 pixels"):
        decode_image(_forged_jpeg(8000, 6000), "doc 2")
    with pytest.raises(ImageError, match="doc 2: the image is empty \\(0 x 6000 pixels\\)"):
        decode_image(_forged_jpeg(0, 6000), "doc 2")
    # A smaller limit refuses a small image too.
    with pytest.raises(ImageError, match="the limit is 100 pixels"):
        decode_image(_save(Image.fromarray(RGB)), "doc 3", max_pixels=100)


def test_float_tiff_and_unknown_formats_are_refused() -> None:
    tiff = _save(Image.fromarray(np.zeros((4, 4), np.float32)), "TIFF")
    with pytest.raises(ImageError, match="not an image Pillow can read as PNG, JPEG"):
        decode_image(tiff)


def test_arrays() -> None:
    np.testing.assert_array_equal(image_from_array(RGB), RGB)
    assert image_from_array(RGB[:, :, 0]).shape == (40, 30, 3)
    assert image_from_array(RGB[:, :, :1]).shape == (40, 30, 3)
    for bad, message in [
        (RGB.astype(np.float32), "must be uint8 (or uint16), got float32"),
        (RGB[:, :, :2], "has shape (height, width[, 1|3|4]), got (40, 30, 2)"),
        (np.zeros((0, 3, 3), np.uint8), "the image is empty (3 x 0 pixels)"),
        (np.zeros((2, 2, 2, 3), np.uint8), "got (2, 2, 2, 3)"),
    ]:
        with pytest.raises(ImageError) as info:
            image_from_array(bad, "doc 7")
        assert str(info.value).startswith("doc 7: ") and message in str(info.value)


def test_documents() -> None:
    doc = pb.Document(doc_id=4)
    array_to_nd(RGB, doc.raw_image)
    np.testing.assert_array_equal(doc_image(doc, "document 0 (doc_id 4)"), RGB)
    doc.raw_image.data = doc.raw_image.data[:-1]
    with pytest.raises(ImageError, match="document 0 \\(doc_id 4\\): raw_image is not a valid array"):
        doc_image(doc, "document 0 (doc_id 4)")
    with pytest.raises(ImageError, match="has raw_text; this encoder takes images"):
        doc_image(pb.Document(doc_id=5, raw_text="a cat"), "document 1 (doc_id 5)")
    with pytest.raises(ImageError, match="has no content"):
        doc_image(pb.Document(doc_id=6), "document 2 (doc_id 6)")


def test_looks_like_image() -> None:
    assert looks_like_image(_save(Image.fromarray(RGB)))
    assert looks_like_image(_save(Image.fromarray(RGB), "JPEG"))
    assert not looks_like_image(b"a line of text")
