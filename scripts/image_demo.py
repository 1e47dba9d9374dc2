"""Image search demo: start the stack of compose/gnes-swarm.yml locally with the EfficientNet-Lite0
encoder, index scikit-image's sample photos (skimage.data) as PNG files, then query with a
crop of one of them and with a photo turned to greyscale. Needs gnes[image,image-demo].

    python scripts/image_demo.py [--shards 2] [--top_k 3] [--grpc_port 8800]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gnes.client import GnesClient
from gnes.client.images import index_images, query_image
from gnes.image.samples import PHOTOS, encode_png, skimage_photos
from gnes.stack.local import LocalStack

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--top_k", type=int, default=3)
    parser.add_argument("--grpc_port", type=int, default=8800)
    args = parser.parse_args()
    photos = skimage_photos(PHOTOS)
    overrides = {
        "INDEXER_REPLICAS": str(args.shards),
        "GRPC_PORT": str(args.grpc_port),
        "ENCODER_YAML_PATH": str(REPO / "yaml/encoder-image.yml"),
        "INDEXER_YAML_PATH": str(REPO / "yaml/indexer-image.yml"),
    }
    print(f"starting gnes: {args.shards} shards, the EfficientNet-Lite0 encoder (logs in .gnes-local/image-demo)")
    stack = LocalStack.from_file(
        REPO / "compose/gnes-swarm.yml", workdir=REPO / ".gnes-local/image-demo", overrides=overrides, quiet=True
    )
    with tempfile.TemporaryDirectory() as tmp, stack, GnesClient(port=args.grpc_port, timeout=600) as client:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for name, image in photos.items():
            (folder / f"{name}.jpg").write_bytes(encode_png(image, "JPEG"))  # under the 1 MiB --max_doc_bytes
        started = time.perf_counter()
        summary = index_images(client, folder)
        print(f"indexed {summary.num_docs} photos in {time.perf_counter() - started:.1f}s")
        for error in summary.errors:
            print(f"error: {error}", file=sys.stderr)
        cat = photos["chelsea"]
        queries = {
            "a crop of chelsea (the cat's head)": np.ascontiguousarray(cat[30:230, 80:300]),
            "astronaut in greyscale": np.repeat(photos["astronaut"].mean(axis=2, keepdims=True), 3, 2).astype(np.uint8),
        }
        for label, image in queries.items():
            path = Path(tmp) / "query.jpg"
            path.write_bytes(encode_png(image, "JPEG"))
            print(f"\nquery: {label}")
            for rank, hit in enumerate(query_image(client, path, top_k=args.top_k), 1):
                print(f"  {rank}. {hit.score:.4f}  {(hit.meta or {}).get('path')}")
    return 1 if summary.errors else 0


if __name__ == "__main__":
    sys.exit(main())
