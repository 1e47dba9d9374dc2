"""The wire messages and small helpers to move numpy arrays and text in and out of them."""

from __future__ import annotations

import numpy as np

from . import gnes_pb2 as pb
from . import gnes_pb2_grpc as pb_grpc

__all__ = ["pb", "pb_grpc", "array_to_nd", "nd_to_array", "doc_text", "WireError"]


class WireError(ValueError):
    """A message that cannot be understood: the caller gets this text as the reason."""


def array_to_nd(array: np.ndarray, out: pb.NdArray | None = None) -> pb.NdArray:
    out = out if out is not None else pb.NdArray()
    array = np.ascontiguousarray(array)
    out.data = array.tobytes()
    out.shape[:] = array.shape
    out.dtype = array.dtype.str
    return out


def nd_to_array(nd: pb.NdArray, data: bytes | memoryview | None = None) -> np.ndarray:
    """The array of `nd`; `data` instead of `nd.data` when the bytes came apart from the message."""
    try:
        dtype = np.dtype(nd.dtype)
    except TypeError as exc:
        raise WireError(f"unknown NdArray dtype {nd.dtype!r}") from exc
    if dtype.hasobject:
        raise WireError("object arrays are not accepted")
    shape = tuple(nd.shape)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if data is None:
        data = nd.data  # each read of a bytes field is a fresh copy: read it once
    elif nd.data:
        raise WireError("the array's bytes are both in the message and in a frame of their own")
    if len(data) != expected:
        raise WireError(f"NdArray of shape {shape} and dtype {dtype} needs {expected} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def doc_text(doc: pb.Document) -> str:
    """The text of a document: raw_text, raw_bytes as UTF-8 (GNES 0.0.47 clients), or its text chunks."""
    kind = doc.WhichOneof("raw_data")
    if kind == "raw_text":
        return doc.raw_text
    if kind == "raw_bytes":
        try:
            return doc.raw_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WireError(f"document {doc.doc_id}: raw_bytes is not UTF-8 text") from exc
    if kind is None and doc.chunks:
        return " ".join(c.text for c in doc.chunks if c.WhichOneof("content") == "text")
    if kind is None:
        return ""
    raise WireError(f"document {doc.doc_id}: {kind} is not text; this encoder takes text documents")
