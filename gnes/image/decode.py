"""Image bytes and arrays in, (H, W, 3) uint8 RGB out, or an ImageError naming the document.

Everything an image document can be is turned into what `ImageEncoder.encode` takes, or
refused with a reason the caller can act on. The pixel limit is checked on the header,
before any pixel is decoded, so a small file that declares a huge image (a decompression
bomb) costs no memory.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

# 40 megapixels: a 7360 x 4912 (36 MP) camera photo fits; decoded as RGB it is 120 MB.
DEFAULT_MAX_PIXELS = 40_000_000
# The container formats accepted from raw bytes; Pillow is not asked to guess among the rest.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
# The first bytes of each format, to tell image bytes from UTF-8 text without decoding.
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")


class ImageError(ValueError):
    """An image that cannot be used; the message names the document and says why."""


def looks_like_image(data: bytes) -> bool:
    """Whether `data` starts like one of the accepted image formats (WEBP: RIFF....WEBP)."""
    return data.startswith(_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def decode_image(data: bytes, name: str = "the image", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode PNG/JPEG/GIF/BMP/WEBP bytes into an (H, W, 3) uint8 RGB array.

    Converted: greyscale and 1-bit (to RGB), palette and alpha (composited on white),
    CMYK and YCbCr (to RGB), 16-bit greyscale (its high byte), JPEG EXIF orientation
    (applied), animated GIF (its first frame). Refused: empty or truncated data, other
    formats, a zero-size image, more than `max_pixels` pixels, float or other modes.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ImageError(f"{name}: the image data is empty")
    declared = _declared_size(data)
    if declared is not None:
        # Pillow calls a zero-size PNG "not an image" and sizes a bomb by its own limit (its
        # global MAX_IMAGE_PIXELS): read from the header, both are told as they are.
        check_size(*declared, name, max_pixels)
    try:
        with warnings.catch_warnings():
            # Pillow warns (and at twice its limit raises) for large images; ours is checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image Pillow can read as {', '.join(FORMATS)}") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: the image header is invalid ({exc})") from None
    with image:
        width, height = image.size
        check_size(width, height, name, max_pixels)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()  # the first frame of an animation
        except Image.DecompressionBombError as exc:
            raise ImageError(f"{name}: {exc}") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            # "image file is truncated", a broken chunk or a bad checksum
            raise ImageError(f"{name}: the {image.format} data is corrupt or truncated ({exc})") from None
        if image.format == "JPEG":
            image = ImageOps.exif_transpose(image)
        return _to_rgb(image, name)


# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they hold the size.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR or a JPEG's start-of-frame, without decoding; None otherwise."""
    if data.startswith(_MAGIC[0]) and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20]), int.from_bytes(data[20:24])
    if not data.startswith(b"\xff\xd8"):
        return None
    at = 2
    while at + 9 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _JPEG_SOF:
            return int.from_bytes(data[at + 7 : at + 9]), int.from_bytes(data[at + 5 : at + 7])
        if marker == 0xDA:  # start of scan: no frame header before it
            return None
        at += 2 + int.from_bytes(data[at + 2 : at + 4])
    return None


def check_size(width: int, height: int, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: the image is empty ({width} x {height} pixels)")
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: the image is {width} x {height} = {width * height} pixels; the limit is {max_pixels} pixels"
        )


def _to_rgb(image, name: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    from PIL import Image

    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale (PNG opens as I;16 or I): keep the high byte, what a display shows.
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 0xFFFF):
            raise ImageError(f"{name}: 32-bit integer pixels are not an image format gnes encodes")
        grey = (values.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("P", "PA", "LA", "RGBA", "RGBa", "La"):
        # Transparent pixels carry no colour of their own: show them on white, as a viewer would.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8)
    if mode in ("1", "L", "CMYK", "YCbCr"):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    raise ImageError(f"{name}: pixel mode {mode} is not supported (use 8-bit RGB, greyscale, palette or CMYK)")


def image_from_array(array: np.ndarray, name: str = "the image", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An array sent as an image (GNES 0.0.47's raw_image) as (H, W, 3) uint8 RGB.

    Taken: uint8 (H, W, 3) as it is; (H, W) and (H, W, 1) greyscale; (H, W, 4) RGBA
    (composited on white); uint16 (its high byte). Refused, naming the document: other
    dtypes (a float's range is ambiguous) and shapes, a zero-size or over-limit image.
    """
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageError(f"{name}: an image array has shape (height, width[, 1|3|4]), got {array.shape}")
    check_size(int(array.shape[1]), int(array.shape[0]), name, max_pixels)
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ImageError(f"{name}: image pixels must be uint8 (or uint16), got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    if array.shape[2] == 4:
        alpha = array[:, :, 3:].astype(np.uint16)
        rgb = (array[:, :, :3] * alpha + 255 * (255 - alpha) + 127) // 255
        return rgb.astype(np.uint8)
    return np.ascontiguousarray(array)
