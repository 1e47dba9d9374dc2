"""``gnes load``: stream a file of vectors straight into the index shards, bypassing encoders.

Why a separate command: vectors made elsewhere (a GPU batch job, another model) should not
pass through the encoder pipeline, nor be read into memory whole. The file is memory-mapped
and sent in batches with several batches in flight (``IndexClient.add_stream``), so a file
larger than RAM loads at the rate the shards can take it. float16 files stay float16 on
disk and on the wire (half the bytes to read, copy and send); the shards widen them.
Metadata is a JSON-lines file read line by line.

Bad input is found before anything is sent where that is cheap (file shapes, dims, id and
meta line counts); a meta line that is not JSON is only found when its batch is read, and
then the load stops there and says how many vectors were already loaded. An index with
``train_ratio`` trains only when asked, since only the loader knows when all data is in:
it asks once the stream ends (``--wait_trained`` waits for the training to finish).
Exit codes: 0 done, 1 the shards or the client failed, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "Batch",
    "LoadError",
    "ProgressBar",
    "add_arguments",
    "add_parser",
    "count_lines",
    "iter_batches",
    "iter_metas",
    "open_ids",
    "open_vectors",
    "read_config",
    "run",
]

_NPY_MAGIC = b"\x93NUMPY"
_RAW_DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16)}
_DESCRIPTION = """\
Stream vectors from a .npy file (memory-mapped) or a raw little-endian float file (--dim, --dtype)
into the shards of an index, without encoders. Ids (--ids, int64 .npy) and metadata (--meta, one JSON
object per line) are optional and must have one entry per vector."""


class LoadError(Exception):
    """Bad input: a missing or malformed file, or files that do not fit together (exit code 2)."""


# ---------------------------------------------------------------- input files


def open_vectors(path: Path, dim: int | None = None, dtype: str | None = None) -> np.ndarray:
    """The vectors of ``path`` as a read-only memory map of shape [rows, dim], nothing read yet.

    A file that starts with the .npy magic is opened with ``np.load``; any other file is raw
    rows of ``dim`` numbers of ``dtype`` (default float32) and needs ``dim``.
    """
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    with path.open("rb") as f:
        is_npy = f.read(len(_NPY_MAGIC)) == _NPY_MAGIC
    if is_npy:
        return _open_npy_vectors(path, dim, dtype)
    if path.suffix == ".npy":
        raise LoadError(f"{path}: not a .npy file (no numpy header); for a raw file use another suffix with --dim")
    if dim is None:
        raise LoadError(f"{path}: a raw vector file needs --dim (and --dtype if it is not float32)")
    np_dtype = _RAW_DTYPES[dtype or "float32"]
    row_bytes = dim * np_dtype.itemsize
    size = path.stat().st_size
    if size % row_bytes:
        raise LoadError(
            f"{path}: {size} bytes is not a whole number of rows of {dim} {np_dtype.name} ({row_bytes} bytes each);"
            " wrong --dim or --dtype?"
        )
    if size == 0:
        return np.zeros((0, dim), dtype=np_dtype)
    return np.memmap(path, dtype=np_dtype.newbyteorder("<"), mode="r", shape=(size // row_bytes, dim))


def _load_npy(path: Path) -> np.ndarray:
    """Memory-map a .npy file; pickled object arrays are refused, never loaded."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise LoadError(f"{path}: cannot read as .npy: {exc}") from exc


def _open_npy_vectors(path: Path, dim: int | None, dtype: str | None) -> np.ndarray:
    array = _load_npy(path)
    if array.ndim != 2:
        raise LoadError(f"{path}: expected a 2-d array [rows, dim], got shape {array.shape}")
    if array.dtype.kind != "f":
        raise LoadError(f"{path}: expected float16 or float32 vectors, got {array.dtype}")
    if dim is not None and array.shape[1] != dim:
        raise LoadError(f"{path}: vectors have dim {array.shape[1]}, but --dim is {dim}")
    if dtype is not None and array.dtype != _RAW_DTYPES[dtype]:
        raise LoadError(f"{path}: the .npy file holds {array.dtype}, but --dtype is {dtype}")
    return array


def open_ids(path: Path, rows: int) -> np.ndarray:
    """Ids from an integer .npy file, memory-mapped, checked to have one id per vector."""
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    ids = _load_npy(path)
    if ids.ndim != 1:
        raise LoadError(f"{path}: ids must be a 1-d array, got shape {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise LoadError(f"{path}: ids must be integers (int64), got {ids.dtype}")
    if len(ids) != rows:
        raise LoadError(f"{path}: {len(ids)} ids for {rows} vectors; there must be one id per vector")
    if rows and ids.dtype.kind == "i" and int(ids.min()) < 0:
        raise LoadError(f"{path}: ids must not be negative (found {int(ids.min())})")
    return ids


def count_lines(path: Path, chunk: int = 1 << 20) -> int:
    """Lines in a file (a last line without a newline counts), without decoding or keeping it."""
    lines, last = 0, b"\n"
    with path.open("rb") as f:
        while block := f.read(chunk):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def iter_metas(path: Path) -> Iterator[dict[str, Any]]:
    """One dict per line of a JSON-lines file, read lazily; a line that is not a JSON object is a LoadError."""
    with path.open("rb") as f:  # bytes, so that a line that is not UTF-8 is reported like any other bad line
        for number, line in enumerate(f, start=1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise LoadError(f"{path}:{number}: not UTF-8 text") from exc
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise LoadError(f"{path}:{number}: not JSON ({exc.msg}): {text.strip()[:80]!r}") from exc
            if not isinstance(value, dict):
                raise LoadError(f"{path}:{number}: expected a JSON object, got {type(value).__name__}")
            yield value


def read_config(path: Path) -> dict[str, Any]:
    """An index configuration from JSON (``.json``) or YAML: a plain mapping or an ``!IndexConfig`` document."""
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LoadError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from exc
    else:
        config = _read_yaml_config(path, text)
    if not isinstance(config, dict):
        raise LoadError(f"{path}: an index configuration must be a mapping, got {type(config).__name__}")
    return config


def _read_yaml_config(path: Path, text: str) -> Any:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        node = YAML(typ="safe", pure=True).compose(text)
        tagged = node is not None and bool(node.tag) and node.tag.startswith("!") and not node.tag.startswith("!!")
        if not tagged:
            return YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        raise LoadError(f"{path}: not valid YAML: {exc}") from exc
    # A tagged document (!IndexConfig) is checked by the same loader the shards use.
    from gnes.config import ConfigError, load_component
    from gnes.indexer.config import IndexConfig

    try:
        return load_component(path, IndexConfig).to_dict()
    except (ConfigError, ValueError, TypeError) as exc:
        raise LoadError(str(exc)) from exc


# ---------------------------------------------------------------- batching


@dataclass
class Batch:
    """One request's worth: float32 (or float16, as read) vectors, and ids / metas when the input has them."""

    vectors: np.ndarray
    ids: np.ndarray | None
    metas: list[dict[str, Any]] | None

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray | None, list[dict[str, Any]] | None]:
        return self.vectors, self.ids, self.metas


def iter_batches(
    vectors: np.ndarray,
    batch_size: int,
    ids: np.ndarray | None = None,
    metas: Iterator[dict[str, Any]] | None = None,
    keep_float16: bool = False,
) -> Iterator[Batch]:
    """Consecutive row ranges of the inputs; only the rows of the current batch are read and converted
    (to float32, or float16 rows kept as they are with `keep_float16`: what `gnes load` sends)."""
    dtype = np.float16 if keep_float16 and vectors.dtype == np.float16 else np.float32
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, len(vectors), batch_size):
        stop = min(start + batch_size, len(vectors))
        batch_metas = None
        if metas is not None:
            batch_metas = [meta for _, meta in zip(range(stop - start), metas, strict=False)]
            if len(batch_metas) != stop - start:  # count_lines checked this; the file changed under us
                raise LoadError(f"the meta file ended after {start + len(batch_metas)} lines, before the vectors")
        yield Batch(
            vectors=np.ascontiguousarray(vectors[start:stop], dtype=dtype),
            ids=None if ids is None else np.ascontiguousarray(ids[start:stop], dtype=np.int64),
            metas=batch_metas,
        )


# ---------------------------------------------------------------- progress


@dataclass
class ProgressBar:
    """``[#####.....]  52.0%  520,000/1,000,000  84,210 vectors/s  ETA 6s`` on one line of stderr.

    On a terminal the line is redrawn at most every ``interval`` seconds; into a pipe or a log
    file, a whole line is written at most every ``log_interval`` seconds, so logs stay readable.
    """

    total: int
    stream: IO[str] = field(default_factory=lambda: sys.stderr)
    width: int = 30
    interval: float = 0.1
    log_interval: float = 10.0
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    _last_draw: float = field(default=float("-inf"), init=False)
    _tty: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        isatty = getattr(self.stream, "isatty", None)
        self._tty = bool(isatty and isatty())

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last_draw >= (self.interval if self._tty else self.log_interval):
            self._draw(now)

    def close(self) -> None:
        self._draw(time.monotonic())
        if self._tty:
            self.stream.write("\n")
        self.stream.flush()

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.started, 1e-9)
        fraction = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = int(round(fraction * self.width))
        rate = self.done / elapsed
        eta = f"ETA {_duration((self.total - self.done) / rate)}" if 0 < rate and self.done < self.total else ""
        bar = "#" * filled + "." * (self.width - filled)
        return f"[{bar}] {fraction:6.1%}  {self.done:,}/{self.total:,}  {rate:,.0f} vectors/s  {eta}".rstrip()

    def _draw(self, now: float) -> None:
        self._last_draw = now
        if self._tty:
            self.stream.write("\r" + self.line(now) + "\033[K")
        else:
            self.stream.write(self.line(now) + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# ---------------------------------------------------------------- command line


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``load`` subcommand to the main CLI's ``add_subparsers()`` object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "load", help="bulk-load a file of vectors into index shards, bypassing encoders", description=_DESCRIPTION
    )
    add_arguments(parser)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("vectors", type=Path, help="a .npy file of shape [rows, dim], or a raw file with --dim")
    parser.add_argument("--index", required=True, help="name of the index to load into")
    parser.add_argument("--dim", type=_positive_int, default=None, help="numbers per vector of a raw file")
    parser.add_argument(
        "--dtype",
        choices=sorted(_RAW_DTYPES),
        default=None,
        help="number type of a raw file (default float32); float16 is sent as float16, widened by the shards",
    )
    parser.add_argument("--ids", type=Path, default=None, help="int64 .npy file with one id per vector")
    parser.add_argument("--meta", type=Path, default=None, help="JSON-lines file with one JSON object per vector")
    parser.add_argument(
        "--create",
        type=Path,
        default=None,
        metavar="CONFIG",
        help="index configuration (.json, or .yaml/.yml); the index is created with it if it does not exist",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--discovery", default=None, metavar="FILE", help="shard discovery file listing the shards")
    where.add_argument("--shards", default=None, metavar="HOST:PORT,...", help="shard addresses, comma-separated")
    parser.add_argument("--batch_size", type=_positive_int, default=10000, help="vectors per request")
    parser.add_argument("--max_in_flight", type=_positive_int, default=8, help="requests sent but not yet answered")
    parser.add_argument(
        "--wait_trained",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to this long for a trained index type to finish training (0: do not wait)",
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for a shard's answer (and for the discovery file)"
    )
    parser.add_argument("--save", action="store_true", help="ask the shards to write a snapshot when done")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


@dataclass
class _Inputs:
    vectors: np.ndarray
    ids: np.ndarray | None
    meta_path: Path | None
    config: dict[str, Any] | None


def _check_inputs(args: argparse.Namespace) -> _Inputs:
    vectors = open_vectors(args.vectors, args.dim, args.dtype)
    rows, dim = vectors.shape
    ids = open_ids(args.ids, rows) if args.ids is not None else None
    if args.meta is not None:
        if not args.meta.is_file():
            raise LoadError(f"{args.meta}: no such file")
        lines = count_lines(args.meta)
        if lines != rows:
            raise LoadError(f"{args.meta}: {lines} lines for {rows} vectors; there must be one JSON object per vector")
    config = read_config(args.create) if args.create is not None else None
    if config is not None:
        from gnes.indexer.config import IndexConfig

        try:
            config = IndexConfig.from_dict(config).to_dict()  # the check the client would make, before connecting
        except (ValueError, TypeError) as exc:
            raise LoadError(f"{args.create}: {exc}") from exc
        if config["dim"] != dim:
            raise LoadError(f"{args.create}: the index has dim {config['dim']}, but the vectors have dim {dim}")
    return _Inputs(vectors, ids, args.meta, config)


def _connect(args: argparse.Namespace) -> Any:
    from gnes.client import IndexClient

    if args.shards:
        return IndexClient(addresses=args.shards, timeout=args.timeout)
    return IndexClient(discovery=args.discovery, timeout=args.timeout, discovery_timeout=args.timeout)


def _prepare_index(client: Any, name: str, config: dict[str, Any] | None, dim: int) -> None:
    """Create the index if asked and needed; either way check that it takes vectors of ``dim``."""
    if config is not None:
        client.create_index(name, config, exist_ok=True)
    elif name not in client.list_indexes():
        raise LoadError(f"index {name!r} does not exist; pass --create CONFIG to create it")
    index_dims = {shard["config"]["dim"] for shard in client.state(name)["shards"]}
    if index_dims != {dim}:
        raise LoadError(f"index {name!r} has dim {', '.join(map(str, sorted(index_dims)))}, the vectors have dim {dim}")


def _finish_training(client: Any, name: str, wait: float) -> str:
    """Start training where only a request starts it (train_ratio indexes); wait if asked. Returns the state."""
    state = client.state(name)
    if any(s["state"] == "not_trained" and s["config"].get("train_ratio") for s in state["shards"]):
        client.train(name)
    if wait > 0:
        return str(client.wait_trained(name, wait)["state"])
    return str(client.state(name)["state"])


def run(args: argparse.Namespace) -> int:
    """Run ``gnes load`` with parsed arguments; returns the process exit code."""
    try:
        inputs = _check_inputs(args)
    except LoadError as exc:
        print(f"gnes load: {exc}", file=sys.stderr)
        return 2
    rows = len(inputs.vectors)
    loaded = 0
    stopped: list[LoadError] = []

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray | None, list[dict[str, Any]] | None]]:
        # A bad meta line ends the stream cleanly here instead of raising inside the client,
        # so that batches already in flight are still acknowledged and counted.
        metas = iter_metas(inputs.meta_path) if inputs.meta_path is not None else None
        try:
            for batch in iter_batches(inputs.vectors, args.batch_size, inputs.ids, metas, keep_float16=True):
                yield batch.as_tuple()
        except LoadError as exc:
            stopped.append(exc)

    try:
        with _connect(args) as client:
            _prepare_index(client, args.index, inputs.config, inputs.vectors.shape[1])
            progress = None if args.quiet else ProgressBar(rows)
            started = time.monotonic()  # the room made below counts in the rate
            client.reserve(args.index, rows, inputs.ids)
            try:
                for acknowledged in client.add_stream(args.index, batches(), max_in_flight=args.max_in_flight):
                    loaded += acknowledged
                    if progress is not None:
                        progress.update(acknowledged)
            finally:
                if progress is not None:
                    progress.close()
            elapsed = time.monotonic() - started
            if stopped:
                raise stopped[0]
            state = _finish_training(client, args.index, args.wait_trained)
            if args.save:
                client.save(args.index)
    except LoadError as exc:
        print(f"gnes load: {exc}", file=sys.stderr)
        if loaded:
            print(f"gnes load: stopped after {loaded} of {rows} vectors were loaded", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ngnes load: interrupted after {loaded} of {rows} vectors were loaded", file=sys.stderr)
        return 130
    except Exception as exc:  # the shards or the connection failed: a message, not a traceback
        print(f"gnes load: {type(exc).__name__}: {exc}", file=sys.stderr)
        if loaded:
            print(f"gnes load: stopped after {loaded} of {rows} vectors were loaded", file=sys.stderr)
        return 1
    rate = loaded / elapsed if elapsed > 0 else float("inf")
    print(f"loaded {loaded} vectors in {elapsed:.2f} s ({rate:.0f} vectors/s)", flush=True)
    if state != "trained":
        print(f"gnes load: index {args.index!r} is {state}; searches are exact until it is trained", file=sys.stderr)
    return 0
