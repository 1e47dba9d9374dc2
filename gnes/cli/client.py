"""`gnes client index|query|status`: talk to a running frontend."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from ..client import GnesClient, GnesError
from ..proto import pb


def read_documents(path: Path) -> Iterator[str]:
    """One document per non-empty line of a file, or one per file in a folder."""
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            text = file.read_text(encoding="utf-8", errors="replace").strip()
            if text:
                yield text
        return
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                yield line.strip()


def run(args) -> int:  # type: ignore[no-untyped-def]
    # $GNES_TOKEN: sent as a bearer token when the frontend checks tokens (gnes/auth).
    token = os.environ.get("GNES_TOKEN") or None
    with GnesClient(args.grpc_host, args.grpc_port, timeout=args.timeout, token=token) as client:
        wait = min(args.timeout, 30.0)
        try:
            client.wait_ready(timeout=wait)
        except grpc.FutureTimeoutError:
            print(f"no gnes frontend answers at {client.address} within {wait:g} s", file=sys.stderr)
            return 2
        if args.client_command == "index" and args.images:  # gnes/client/images.py
            from .client_images import index_images_command

            folder, batch = Path(args.images), args.batch_size or 16
            return index_images_command(client, folder, batch, args.start_id, args.max_file_bytes)
        if args.client_command == "index":
            if not args.path:
                print("gnes client index: give a FILE or folder, or --images DIR", file=sys.stderr)
                return 2
            return _index(client, Path(args.path), args.batch_size or 100, args.start_id)
        if args.client_command == "query" and (args.image or not args.text):
            from .client_images import query_images_command

            return query_images_command(client, [Path(p) for p in args.image], args.top_k, args.text)
        if args.client_command == "query":
            return _query(client, args.text, args.top_k, args.chunk_reduce)
        return _status(client, getattr(args, "json", False))


def _status(client: GnesClient, as_json: bool) -> int:
    """Every service that can be found (gnes/metrics/deployment.py says how), the frontend's
    counters and the shards' documents; exit 1 when a service is not ready."""
    from ..metrics.deployment import collect, known_addresses, overview
    from .status_table import render

    addresses, problems = known_addresses()
    try:
        stats: dict[str, object] | None = client.admin(pb.Request.AdminRequest.STATS)
    except (GnesError, grpc.RpcError) as exc:
        stats = None
        problems.append(f"STATS through the pipeline failed: {exc}")
    view = overview(client.status(), stats, collect(addresses), problems)
    print(json.dumps(view, indent=2) if as_json else render(view))
    return 1 if view["ready"] is False else 0


def _index(client: GnesClient, path: Path, batch_size: int, start_id: int) -> int:
    from tqdm import tqdm

    if not path.exists():
        print(f"{path}: no such file or folder", file=sys.stderr)
        return 2
    started = time.perf_counter()
    with tqdm(unit="doc", desc="indexing", file=sys.stderr) as bar:
        summary = client.index(read_documents(path), batch_size=batch_size, start_id=start_id, on_batch=bar.update)
    elapsed = time.perf_counter() - started
    rate = summary.num_docs / elapsed if elapsed > 0 else 0.0
    print(f"indexed {summary.num_docs} documents in {summary.requests} requests, {elapsed:.1f}s ({rate:.0f} docs/s)")
    for error in summary.errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if summary.errors else 0


def _query(client: GnesClient, texts: list[str], top_k: int, chunk_reduce: str = "") -> int:
    status = 0
    for text in texts:
        print(f"query: {text}")
        try:
            hits = client.query(text, top_k=top_k, chunk_reduce=chunk_reduce)
        except GnesError as exc:
            print(f"  error: {exc}")
            status = 1
            continue
        for rank, hit in enumerate(hits, 1):
            snippet = hit.text if len(hit.text) <= 100 else hit.text[:97] + "..."
            print(f"  {rank:2d}. {hit.score:7.4f}  [{hit.doc_id}] {snippet}")
            if hit.chunk:  # the best chunk: why the document is here
                print(f"      best chunk: {hit.chunk if len(hit.chunk) <= 100 else hit.chunk[:97] + '...'}")
    return status
