"""Small real image sets for tests, demos and benches: scikit-image's sample photos and
Fashion-MNIST from Debian's dataset-fashion-mnist package. Nothing is downloaded."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
# skimage.data's colour and greyscale photos that ship inside the package (no fetch needed).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "page", "horse", "hubble_deep_field")


def skimage_photos(names: tuple[str, ...] = PHOTOS) -> dict[str, np.ndarray]:
    """name -> (H, W, 3) uint8 RGB; greyscale and boolean photos made RGB."""
    try:
        import skimage.data as data
    except ImportError as exc:
        raise ImportError(f"the sample photos need scikit-image: install gnes[image-demo] ({exc})") from exc
    out = {}
    for name in names:
        image = np.asarray(getattr(data, name)())
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        out[name] = np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)
    return out


def fashion_mnist(count: int, split: str = "t10k", data_dir: Path = FASHION_MNIST_DIR) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` images of a split as (count, 28, 28) uint8, and their labels."""
    images_file = data_dir / f"{split}-images-idx3-ubyte.gz"
    labels_file = data_dir / f"{split}-labels-idx1-ubyte.gz"
    if not images_file.exists():
        raise FileNotFoundError(f"{images_file} is missing: apt-get install -y dataset-fashion-mnist")
    with gzip.open(images_file, "rb") as f:
        header = f.read(16)
        total = int.from_bytes(header[4:8])
        count = min(count, total)
        images = np.frombuffer(f.read(count * 28 * 28), dtype=np.uint8).reshape(count, 28, 28)
    with gzip.open(labels_file, "rb") as f:
        f.read(8)
        labels = np.frombuffer(f.read(count), dtype=np.uint8)
    return images, labels


def to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def encode_png(image: np.ndarray, format: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=format)
    return buffer.getvalue()
