"""`gnes client index --images DIR` and `gnes client query --image FILE`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..client import GnesClient, GnesError
from ..client.images import image_files, index_images, query_image


def index_images_command(client: GnesClient, folder: Path, batch_size: int, start_id: int, max_file_bytes: int) -> int:
    from tqdm import tqdm

    if not folder.is_dir():
        print(f"{folder}: no such folder", file=sys.stderr)
        return 2
    total = len(image_files(folder))
    started = time.perf_counter()
    with tqdm(total=total, unit="image", desc="indexing", file=sys.stderr) as bar:
        summary = index_images(client, folder, batch_size, start_id, bar.update, max_file_bytes)
    elapsed = time.perf_counter() - started
    rate = summary.num_docs / elapsed if elapsed > 0 else 0.0
    done = f"indexed {summary.num_docs} of {total} files in {summary.requests} requests"
    print(f"{done}, {elapsed:.1f}s ({rate:.1f} images/s)")
    for error in summary.errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if summary.errors else 0


def query_images_command(client: GnesClient, files: list[Path], top_k: int, texts: list[str]) -> int:
    if texts:
        print("gnes client query: give query texts or --image files, not both", file=sys.stderr)
        return 2
    if not files:
        print("gnes client query: give a query text or --image FILE", file=sys.stderr)
        return 2
    status = 0
    for path in files:
        print(f"query: {path}")
        try:
            hits = query_image(client, path, top_k=top_k)
        except (GnesError, OSError) as exc:
            print(f"  error: {exc}")
            status = 1
            continue
        for rank, hit in enumerate(hits, 1):
            where = (hit.meta or {}).get("path", "")
            print(f"  {rank:2d}. {hit.score:7.4f}  [{hit.doc_id}] {where}")
    return status
