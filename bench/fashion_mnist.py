"""Fashion-MNIST as float vectors, read from Debian's ``dataset-fashion-mnist`` package.

Why this data set: 70,000 real 784-dim vectors are big enough that approximate indexes
(IVF, HNSW, PQ) have something to lose against exact search, small enough to load in a
second, and the Debian package puts them on disk without any network download at bench
time. The files are in the IDX format (gzip'd), which we parse with numpy rather than add
a dependency for it.

    apt-get install -y dataset-fashion-mnist     # files land in /usr/share/datasets/fashion-mnist
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = ["DATA_DIR", "load_fashion_mnist", "load_labels", "read_idx"]

DATA_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))

# The third byte of an IDX magic number is the element type.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzip'd) as an array of its declared shape and element type.

    Layout: two zero bytes, a type byte, a byte with the number of dimensions, one big-endian
    uint32 per dimension, then the elements in C order.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic {raw[:4].hex()})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise ValueError(f"{path}: {len(raw) - offset} data bytes, shape {shape} needs {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape)


def _images(path: Path) -> np.ndarray:
    images = read_idx(path)
    flat = images.reshape(images.shape[0], -1).astype(np.float32)
    flat /= 255.0
    return flat


def load_fashion_mnist(data_dir: Path = DATA_DIR) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)``: float32 arrays [60000, 784] and [10000, 784], pixel values scaled to [0, 1]."""
    train_path = data_dir / "train-images-idx3-ubyte.gz"
    if not train_path.is_file():
        raise FileNotFoundError(f"{train_path} is missing: run `apt-get install -y dataset-fashion-mnist`")
    return _images(train_path), _images(data_dir / "t10k-images-idx3-ubyte.gz")


def load_labels(data_dir: Path = DATA_DIR) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` class labels 0..9 as int64, for anyone who wants to check neighbours by class."""
    return (
        read_idx(data_dir / "train-labels-idx1-ubyte.gz").astype(np.int64),
        read_idx(data_dir / "t10k-labels-idx1-ubyte.gz").astype(np.int64),
    )


if __name__ == "__main__":
    train, test = load_fashion_mnist()
    print(f"train {train.shape} {train.dtype} [{train.min()}, {train.max()}]; test {test.shape}")
