"""The whole deployment at a glance: every service, whether it is ready, its model and
dimension, and the documents per shard and per logical index.

How the services are found. Every gnes service answers STATUS on its control port with its
`status_info`, so what is needed is the list of control addresses. Two sources, either or both:

- the local stack (``gnes stack``): ``<workdir>/stack.json`` names its control channel, whose
  ``status`` answer lists every process with its control host and port (``controls``);
- peers (``$GNES_STATUS_PEERS``), for Swarm and hand-started services: ``NAME=HOST:PORT``
  items separated by commas. HOST is resolved to all of its addresses, so on Swarm
  ``encoder=tasks.encoder:5399`` reaches every replica of the encoder (``tasks.<service>``
  answers with the tasks' own addresses in dnsrr and vip mode alike).

The documents per shard and index do not need any of that: the caller passes the answer of a
STATS admin request sent through the pipeline (it reaches every shard the middleman knows).
Each control round trip is bounded by a timeout; a service that does not answer is listed as
not ready, with the reason.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_PEERS = "GNES_STATUS_PEERS"
ENV_STACK_WORKDIR = "GNES_STACK_WORKDIR"


@dataclass(frozen=True, slots=True)
class ControlAddress:
    name: str
    host: str
    port: int


def parse_peers(text: str, drop_unresolved: bool = False) -> list[ControlAddress]:
    """``NAME=HOST:PORT,...`` (NAME optional: it defaults to HOST) -> addresses, each host
    resolved to every address it has (one per replica on Swarm). A host that does not resolve
    is kept as given (listed as not answering), or left out with `drop_unresolved`."""
    found: list[ControlAddress] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, where = item.partition("=")
        if not sep:
            name, where = "", item
        host, colon, port = where.rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError(f"${ENV_PEERS}: expected NAME=HOST:PORT, got {item!r}")
        hosts = _resolve_all(host)
        if drop_unresolved and hosts == [host] and not _is_address(host):
            continue
        for i, address in enumerate(hosts, 1):
            label = name or host
            found.append(ControlAddress(f"{label}.{i}" if len(hosts) > 1 else label, address, int(port)))
    return found


def _is_address(host: str) -> bool:
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


def _resolve_all(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror:
        return [host]  # listed as not answering, with the name as given
    return sorted({info[4][0] for info in infos})


def stack_addresses(workdir: str | os.PathLike[str], timeout: float = 3.0) -> list[ControlAddress]:
    """Every process of the stack running in `workdir`, with its control address."""
    from ..stack.control import request

    answer = request(Path(workdir), {"op": "status"}, timeout=timeout)
    controls = answer.get("controls") or {}
    return [ControlAddress(name, str(host), int(port)) for name, (host, port) in sorted(controls.items())]


def known_addresses(
    workdir: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> tuple[list[ControlAddress], list[str]]:
    """Addresses from the stack in `workdir` (else $GNES_STACK_WORKDIR, else ./.gnes-local if a
    stack runs there) and from $GNES_STATUS_PEERS; also the problems met, as text."""
    env = os.environ if env is None else env
    problems: list[str] = []
    found: dict[tuple[str, int], ControlAddress] = {}
    where = workdir or env.get(ENV_STACK_WORKDIR) or (".gnes-local" if Path(".gnes-local/stack.json").exists() else "")
    if where:
        try:
            for address in stack_addresses(where):
                found[(address.host, address.port)] = address
        except Exception as exc:  # reported beside the table: the other sources still count
            problems.append(f"stack in {where}: {exc}")
    try:
        # A local stack runs the stack file, whose peers name Swarm's tasks.<service>: on this machine
        # those do not resolve, and the stack has listed its processes already.
        for address in parse_peers(env.get(ENV_PEERS, ""), drop_unresolved=bool(found)):
            found.setdefault((address.host, address.port), address)
    except ValueError as exc:
        problems.append(str(exc))
    return list(found.values()), problems


def collect(addresses: Iterable[ControlAddress], timeout: float = 2.0) -> list[dict[str, Any]]:
    """Ask every control address for its status, concurrently; one row per address."""
    from ..cli.healthcheck import query_status
    from ..proto import pb

    def ask(address: ControlAddress) -> dict[str, Any]:
        row: dict[str, Any] = {"name": address.name, "address": f"{address.host}:{address.port}"}
        try:
            response = query_status(address.host, address.port, timeout)
        except Exception as exc:  # a bad address must not hide the others
            return {**row, "ready": False, "error": f"{type(exc).__name__}: {exc}"}
        if response is None:
            return {**row, "ready": False, "error": f"no answer within {timeout:g}s"}
        info = json.loads(response.control.info_json) if response.control.info_json else {}
        return {**row, **summarize_service(info), "ready": response.control.status == pb.Response.READY}

    addresses = list(addresses)
    if not addresses:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(addresses))) as pool:
        return list(pool.map(ask, addresses))


def summarize_service(info: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of one service's status_info that the overview shows."""
    row: dict[str, Any] = {"kind": info.get("kind"), "service": info.get("name")}
    for key in ("model", "encoder", "dim", "count", "indexes", "shard_id", "members", "served", "in_flight"):
        if info.get(key) is not None:
            row[key] = info[key]
    return row


def index_totals(shards: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Documents per logical index over all shards (STATS rows or shard status rows)."""
    totals: dict[str, int] = {}
    for shard in shards:
        for name, value in (shard.get("indexes") or {}).items():
            count = value.get("count", 0) if isinstance(value, Mapping) else value
            totals[name] = totals.get(name, 0) + int(count or 0)
    return totals


def overview(
    frontend: Mapping[str, Any] | None,
    stats: Mapping[str, Any] | None,
    services: list[dict[str, Any]],
    problems: list[str] | None = None,
) -> dict[str, Any]:
    """One JSON document: the entry point's own status, every service found, the shards as the
    pipeline's STATS answer sees them, and the totals per logical index."""
    shards = [dict(s) for s in (stats or {}).get("shards", []) if isinstance(s, Mapping)]
    if not shards:  # no STATS answer: the shards' own status rows still count documents
        shards = [s for s in services if s.get("kind") == "indexer" and "indexes" in s]
    return {
        "frontend": dict(frontend or {}),
        "services": services,
        "shards": shards,
        "indexes": index_totals(shards),
        "ready": all(s.get("ready") for s in services) if services else None,
        "problems": list(problems or []),
    }
