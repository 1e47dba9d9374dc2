"""The discovery file: where the shards of one deployment can be reached.

A scheduler decides where each shard runs, so nobody knows the addresses in advance. Instead the launcher
writes a header with the number of shards, every shard appends ``rank host port`` once it listens, and
clients and proxies read the file (waiting until every rank is there). The format is plain text so that
people can read it and tools in any language can parse it::

    # gnes discovery num_shards=2
    0 node17.cluster 5600
    1 node18.cluster 5601

Many shards append at the same time, possibly from different machines over a shared file system, so every
append and every read holds an ``fcntl.flock`` on the file (an exclusive lock for writers, a shared one for
readers), and writers fsync before unlocking. Appending (never rewriting) means a shard that restarts on
another host just registers again: the last line of a rank wins.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HEADER_PREFIX", "ShardAddress", "parse_addresses", "read_discovery", "register_shard", "write_header"]

HEADER_PREFIX = "# gnes discovery"
_HEADER = re.compile(r"^# gnes discovery num_shards=(\d+)$")
_POLL_SECONDS = 0.2

PathLike = str | os.PathLike[str]


@dataclass(frozen=True, order=True)
class ShardAddress:
    """Where shard ``rank`` listens."""

    rank: int
    host: str
    port: int

    @property
    def endpoint(self) -> str:
        """The ZeroMQ endpoint, e.g. ``tcp://node17:5600`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def write_header(path: PathLike, num_shards: int) -> None:
    """Start a new discovery file for ``num_shards`` shards, dropping whatever an earlier launch registered."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1, got {num_shards}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Opened for append and truncated under the lock, so a shard appending right now is not interleaved.
    with open(path, "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.truncate(0)
            f.write(f"{HEADER_PREFIX} num_shards={num_shards}\n")
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def register_shard(path: PathLike, rank: int, host: str, port: int) -> None:
    """Append ``rank host port``; safe to call from many processes and machines at once."""
    _check_address(rank, host, port)
    with open(path, "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.write(f"{rank} {host} {port}\n")
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_discovery(path: PathLike, expected: int | None = None, timeout: float = 0.0) -> list[ShardAddress]:
    """The latest address of every registered rank, sorted by rank.

    Waits up to ``timeout`` seconds until ranks ``0 .. expected-1`` are all registered; ``expected`` defaults
    to the header's ``num_shards``. Raises ``TimeoutError`` naming the missing ranks, ``FileNotFoundError`` if
    the file never appeared and nothing says how many shards to expect, and ``ValueError`` (with
    ``path:line``) for a line that is not ``rank host port``.
    """
    deadline = time.monotonic() + max(timeout, 0.0)
    while True:
        try:
            num_shards, latest = _parse(Path(path))
            found = True
        except FileNotFoundError:
            num_shards, latest, found = None, {}, False
        wanted = expected if expected is not None else num_shards
        if wanted is None:
            if found:
                return [latest[rank] for rank in sorted(latest)]
            missing_text = "the file does not exist"
        else:
            missing = [rank for rank in range(wanted) if rank not in latest]
            if not missing:
                return [latest[rank] for rank in sorted(latest)]
            missing_text = f"rank(s) {', '.join(map(str, missing))} of {wanted} not registered"
        if time.monotonic() >= deadline:
            if wanted is None:
                raise FileNotFoundError(f"{path}: no discovery file after {timeout:g}s")
            raise TimeoutError(f"{path}: {missing_text} after {timeout:g}s")
        time.sleep(min(_POLL_SECONDS, max(deadline - time.monotonic(), 0.0)))


def parse_addresses(spec: str) -> list[ShardAddress]:
    """``"host:port,host:port"`` (``tcp://`` optional, IPv6 as ``[::1]:port``) -> addresses, rank = position."""
    items = [item.strip() for item in spec.split(",")]
    if not any(items):
        raise ValueError("expected host:port[,host:port...], got an empty string")
    addresses = []
    for rank, item in enumerate(items):
        text = item.removeprefix("tcp://")
        host, sep, port_text = text.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not sep or not host or not port_text.isdigit():
            raise ValueError(f"address {rank + 1} of {spec!r} is {item!r}, expected host:port")
        port = int(port_text)
        _check_address(rank, host, port)
        addresses.append(ShardAddress(rank, host, port))
    return addresses


def _check_address(rank: int, host: str, port: int) -> None:
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    if not host or any(c.isspace() for c in host) or "#" in host:
        raise ValueError(f"host must be a non-empty name without spaces or '#', got {host!r}")
    if not 0 < port < 65536:
        raise ValueError(f"port must be in 1..65535, got {port}")


def _parse(path: Path) -> tuple[int | None, dict[int, ShardAddress]]:
    """(num_shards from the header or None, latest address per rank)."""
    with open(path, encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_SH)  # a writer holds LOCK_EX while it appends: no half-written lines
        try:
            lines = f.read().splitlines()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
    num_shards: int | None = None
    latest: dict[int, ShardAddress] = {}
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(HEADER_PREFIX):
            match = _HEADER.match(line)
            if match is None:
                raise ValueError(f"{path}:{lineno}: bad header {line!r}, expected '{HEADER_PREFIX} num_shards=N'")
            num_shards = int(match.group(1))
            continue
        if line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 3 or not fields[0].isdigit() or not fields[2].isdigit():
            raise ValueError(f"{path}:{lineno}: expected 'rank host port', got {line!r}")
        rank, host, port = int(fields[0]), fields[1], int(fields[2])
        try:
            _check_address(rank, host, port)
        except ValueError as exc:
            raise ValueError(f"{path}:{lineno}: {exc}") from None
        if num_shards is not None and rank >= num_shards:
            raise ValueError(f"{path}:{lineno}: rank {rank} but the header says num_shards={num_shards}")
        latest[rank] = ShardAddress(rank, host, port)
    return num_shards, latest
