"""Durable doc_id -> (text, meta_json) storage in one LMDB environment."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..component import Component, check_bool, check_int
from .base import check_doc_ids, check_strings

# Value layout: version byte, 4-byte big-endian length of the UTF-8 text, the text, then
# the UTF-8 meta. Self-made so that reading a value never runs code (unlike pickle).
_FORMAT_VERSION = b"\x01"
_HEADER = 5
# LMDB fails a write with MapFullError when its fixed-size map is full; the store doubles
# the map and retries, up to this ceiling.
_MAX_MAP_BYTES = 1 << 40


def _import_lmdb() -> Any:
    try:
        import lmdb
    except ImportError as exc:
        raise ImportError(f"LmdbDocStore needs lmdb: install gnes[lmdb] ({exc})") from exc
    return lmdb


def encode_doc(text: str, meta_json: str) -> bytes:
    text_bytes = text.encode()
    return b"".join((_FORMAT_VERSION, len(text_bytes).to_bytes(4, "big"), text_bytes, meta_json.encode()))


def decode_doc(value: bytes) -> tuple[str, str]:
    if value[:1] != _FORMAT_VERSION:
        raise ValueError(f"unknown document format version {value[:1]!r}")
    end = _HEADER + int.from_bytes(value[1:_HEADER], "big")
    return value[_HEADER:end].decode(), value[end:].decode()


def doc_keys(ids: np.ndarray) -> list[bytes]:
    """8-byte big-endian keys, so LMDB's byte order is numeric order."""
    raw = ids.astype(">u8").tobytes()
    return [raw[start : start + 8] for start in range(0, len(raw), 8)]


class LmdbDocStore(Component):
    """Stores each document's text and meta under its id; every batch is one transaction.

    `start(path)` opens (or creates) the LMDB directory at `path`; `start(None)` uses a
    temporary directory that `close()` deletes. `sync=False` skips the fsync on commit:
    faster, but the last commits can be lost if the machine (not the process) crashes.
    """

    def __init__(self, map_size_mb: int = 1024, sync: bool = True) -> None:
        super().__init__()
        self.map_size_mb = check_int("map_size_mb", map_size_mb, minimum=1)
        self.sync = check_bool("sync", sync)
        self._env: Any = None
        self._temp_dir: Path | None = None

    def start(self, path: Path | None = None) -> None:
        if self._started:
            return
        lmdb = _import_lmdb()
        if path is None:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="gnes-docs-"))
            path = self._temp_dir
        else:
            path = Path(path)
            path.mkdir(parents=True, exist_ok=True)
        try:
            self._env = lmdb.open(str(path), map_size=self.map_size_mb << 20, sync=self.sync, max_dbs=0)
        except lmdb.Error:
            self._remove_temp_dir()
            raise
        super().start()

    def put_many(
        self, ids: np.ndarray | Sequence[int], texts: Sequence[str], metas: Sequence[str] | None = None
    ) -> int:
        """Store (or replace) the documents in one transaction; return how many were written."""
        self._require_started()
        id_array = check_doc_ids(ids)
        text_list = check_strings(texts, len(id_array), "texts")
        meta_list = [""] * len(id_array) if metas is None else check_strings(metas, len(id_array), "metas")
        # Encoding first means a text that is not valid Unicode fails before anything is written.
        items = list(zip(doc_keys(id_array), map(encode_doc, text_list, meta_list), strict=True))
        if items:
            self._write(lambda txn: txn.cursor().putmulti(items))
        return len(items)

    def get_many(self, ids: np.ndarray | Sequence[int]) -> list[tuple[str, str] | None]:
        """Return (text, meta_json) per id, None where the id is not stored."""
        self._require_started()
        keys = doc_keys(check_doc_ids(ids))
        with self._env.begin(buffers=False) as txn:
            values = [txn.get(key) for key in keys]
        return [None if value is None else decode_doc(value) for value in values]

    def delete_many(self, ids: np.ndarray | Sequence[int]) -> int:
        """Delete in one transaction; return how many of the ids were stored."""
        self._require_started()
        keys = doc_keys(check_doc_ids(ids))
        if not keys:
            return 0
        return self._write(lambda txn: sum(txn.delete(key) for key in set(keys)))

    def count(self) -> int:
        self._require_started()
        return int(self._env.stat()["entries"])

    def _write(self, work: Any) -> Any:
        """Run `work(txn)` in a write transaction, growing the map when it is full."""
        lmdb = _import_lmdb()
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    return work(txn)
            except lmdb.MapFullError:
                # The failed transaction was aborted, so retrying after growing is safe.
                size = self._env.info()["map_size"] * 2
                if size > _MAX_MAP_BYTES:
                    raise
                self._env.set_mapsize(size)

    def save(self) -> None:
        """Commits are already durable with sync=True; with sync=False this flushes them."""
        if self._started:
            self._env.sync(True)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
        self._remove_temp_dir()
        super().close()

    def _remove_temp_dir(self) -> None:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir)
            self._temp_dir = None
