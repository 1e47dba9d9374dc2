"""Image documents through a whole in-process pipeline with real EfficientNet-Lite0 weights:
PNG/JPEG raw_bytes and raw_image arrays indexed, every photo found first by itself, and
bad images refused one by one, named, while the rest of their request is indexed."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from conftest import REPO, start_inprocess_pipeline

from gnes.client import GnesClient
from gnes.config import load_component
from gnes.encoder.base import BaseEncoder
from gnes.image.samples import PHOTOS, encode_png, skimage_photos
from gnes.proto import array_to_nd, nd_to_array, pb

pytest.importorskip("skimage")
NAMES = PHOTOS[:6]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size and holds one empty data chunk: what a decompression bomb looks like."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b""))
        + _png_chunk(b"IEND", b"")
    )


def _pillow_bytes(image, format: str = "PNG") -> bytes:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return skimage_photos(NAMES)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    pipe = start_inprocess_pipeline(
        str(REPO / "yaml/encoder-image.yml"),
        str(REPO / "yaml/indexer-image.yml"),
        shards=2,
        data_dir=tmp_path_factory.mktemp("image-shards"),
    )
    try:
        yield pipe
    finally:
        pipe.stack.close()


@pytest.fixture(scope="module")
def client(pipeline):  # type: ignore[no-untyped-def]
    with GnesClient(port=pipeline.grpc_port, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def indexed(client: GnesClient, photos: dict[str, np.ndarray]) -> pb.Response:
    """One INDEX request: the photos (PNG, JPEG and raw arrays by turns) and, between them,
    every kind of bad image, plus 16-bit, CMYK and palette images that are converted."""
    from PIL import Image

    request = pb.Request(request_id=1)
    docs = request.index.docs
    for i, name in enumerate(NAMES):
        image = photos[name]
        if i % 3 == 0:
            docs.add(
                doc_id=i, raw_bytes=encode_png(image), doc_type=pb.Document.IMAGE, meta_json=f'{{"name": "{name}"}}'
            )
        elif i % 3 == 1:
            docs.add(doc_id=i, raw_bytes=encode_png(image, "JPEG"), meta_json=f'{{"name": "{name}"}}')
        else:
            doc = docs.add(doc_id=i, meta_json=f'{{"name": "{name}"}}')
            array_to_nd(image, doc.raw_image)
    png = encode_png(photos[NAMES[0]])
    grey16 = Image.fromarray((np.arange(64 * 48, dtype=np.uint32).reshape(64, 48) * 21).astype(np.uint16))
    rgb = Image.fromarray(photos[NAMES[1]])
    bad = {
        100: dict(raw_bytes=png[: len(png) // 2], doc_type=pb.Document.IMAGE),  # truncated PNG
        101: dict(raw_bytes=_png_header_only(0, 10), doc_type=pb.Document.IMAGE),  # zero-size
        102: dict(raw_bytes=_png_header_only(100_000, 100_000), doc_type=pb.Document.IMAGE),  # huge
        103: dict(raw_bytes=b"not an image at all\n", doc_type=pb.Document.IMAGE),  # a text file
    }
    for doc_id, fields in bad.items():
        docs.add(doc_id=doc_id, **fields)
    doc = docs.add(doc_id=104)
    array_to_nd(np.zeros((8, 8, 3), np.float32), doc.raw_image)  # float pixels: ambiguous range
    docs.add(doc_id=200, raw_bytes=_pillow_bytes(grey16), doc_type=pb.Document.IMAGE)  # 16-bit
    docs.add(doc_id=201, raw_bytes=_pillow_bytes(rgb.convert("CMYK"), "JPEG"), doc_type=pb.Document.IMAGE)
    docs.add(doc_id=202, raw_bytes=_pillow_bytes(rgb.convert("P")), doc_type=pb.Document.IMAGE)  # palette
    return client.call(request)


def test_bad_images_are_named_and_the_rest_is_indexed(indexed: pb.Response) -> None:
    assert indexed.index.status == pb.Response.SUCCESS, indexed
    assert indexed.index.num_docs == len(NAMES) + 3
    errors = {e.doc_id: e.reason for e in indexed.index.doc_errors}
    assert set(errors) == {100, 101, 102, 103, 104}
    assert "truncated" in errors[100] and "doc_id 100" in errors[100]
    assert "empty (0 x 10 pixels)" in errors[101]
    assert "the limit is" in errors[102] and "100000 x 100000" in errors[102]
    assert "not an image" in errors[103]
    assert "uint8" in errors[104]
    positions = {e.doc_id: e.position for e in indexed.index.doc_errors}
    assert positions[100] == len(NAMES)
    assert "5 document(s) refused" in indexed.error and "doc_id 103" in indexed.error


def test_each_photo_finds_itself_first(client: GnesClient, photos: dict[str, np.ndarray], indexed) -> None:  # type: ignore[no-untyped-def]
    for i, name in enumerate(NAMES):
        request = pb.Request(request_id=10 + i)
        request.search.top_k = 3
        request.search.query.raw_bytes = encode_png(photos[name], "JPEG")
        response = client.call(request)
        assert response.search.status == pb.Response.SUCCESS, response.error
        top = response.search.topk_results[0]
        assert top.doc.doc_id == i, (name, [r.doc.doc_id for r in response.search.topk_results])
        assert top.score.value > 0.9
        assert name in top.doc.meta_json


def test_pipeline_vectors_equal_the_model_in_this_process(client: GnesClient, photos: dict[str, np.ndarray]) -> None:
    request = pb.Request(request_id=30)
    for i, name in enumerate(NAMES[:3]):
        doc = request.embed.docs.add(doc_id=i)
        array_to_nd(photos[name], doc.raw_image)
    response = client.call(request)
    assert response.embed.status == pb.Response.SUCCESS, response.error
    with load_component(REPO / "yaml/encoder-image.yml", BaseEncoder) as encoder:
        expected = encoder.encode([photos[n] for n in NAMES[:3]])
    np.testing.assert_allclose(nd_to_array(response.embed.embeddings), expected, atol=1e-5)


def test_a_bad_query_image_is_an_error_and_the_service_keeps_serving(client: GnesClient, photos) -> None:  # type: ignore[no-untyped-def]
    request = pb.Request(request_id=40)
    request.search.top_k = 1
    request.search.query.raw_bytes = encode_png(photos[NAMES[0]])[:100]
    response = client.call(request)
    assert (
        response.search.status == pb.Response.ERROR and "the query" in response.error and "truncated" in response.error
    )
    request = pb.Request(request_id=41)  # an embed answers for every item: one bad image fails it
    request.embed.docs.add(doc_id=1, raw_bytes=b"\x89PNG\r\n\x1a\n garbage", doc_type=pb.Document.IMAGE)
    response = client.call(request)
    assert response.embed.status == pb.Response.ERROR and "doc_id 1" in response.error
    request = pb.Request(request_id=42)  # a request of nothing but bad images stores nothing, and says why
    request.index.docs.add(doc_id=300, raw_bytes=b"GIF89a", doc_type=pb.Document.IMAGE)
    response = client.call(request)
    assert response.index.num_docs == 0 and [e.doc_id for e in response.index.doc_errors] == [300]
    assert "doc_id 300" in response.error
    request = pb.Request(request_id=43)
    request.search.top_k = 1
    request.search.query.raw_bytes = encode_png(photos[NAMES[2]])
    assert client.call(request).search.topk_results[0].doc.doc_id == 2


# Photos the tests above did not index, so their answers are not tied with those.
OTHERS = PHOTOS[6:9]


def test_cli_index_images_and_query_by_image(pipeline, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    others = skimage_photos(OTHERS)
    for name in OTHERS:
        (folder / "sub" / f"{name}.jpg").write_bytes(encode_png(others[name], "JPEG"))
    (folder / "broken.png").write_bytes(encode_png(others[OTHERS[0]])[:300])
    (folder / "notes.txt").write_text("not a picture\n")
    limit = max(p.stat().st_size for p in folder.rglob("*")) + 1
    (folder / "zz-huge.png").write_bytes(b"\x89PNG" + bytes(limit))  # over --max_file_bytes: not sent
    base = [sys.executable, "-m", "gnes", "client", "--grpc_port", str(pipeline.grpc_port)]
    done = subprocess.run(
        [
            *base,
            "index",
            "--images",
            str(folder),
            "--start_id",
            "500",
            "--batch_size",
            "2",
            "--max_file_bytes",
            str(limit),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr  # indexed, with errors to report
    assert f"indexed {len(OTHERS)} of {len(OTHERS) + 3} files" in done.stdout
    assert f"error: zz-huge.png: {limit + 4} bytes, over the limit of {limit} (not sent)" in done.stderr
    assert "error: broken.png: document 0 (doc_id 500): the PNG data is corrupt or truncated" in done.stderr
    assert "error: notes.txt:" in done.stderr and "not an image" in done.stderr
    query = folder / "sub" / f"{OTHERS[1]}.jpg"
    done = subprocess.run(
        [*base, "query", "--image", str(query), "--top_k", "2"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"query: {query}" and lines[1].endswith(f"sub/{OTHERS[1]}.jpg"), done.stdout
    done = subprocess.run(
        [*base, "query", "--image", str(folder / "notes.txt")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "error:" in done.stdout and "the query" in done.stdout


def test_http_upload_and_search_by_image(pipeline) -> None:  # type: ignore[no-untyped-def]
    import httpx
    from conftest import free_ports

    from gnes.http.config import HttpConfig
    from gnes.http.service import HttpService
    from gnes.service.config import ServiceConfig

    ports = pipeline.ports
    config = HttpConfig(
        pipeline=ServiceConfig(
            name="http",
            port_in=ports["out_out"],
            port_out=ports["income_in"],
            socket_in="SUB_CONNECT",
            socket_out="PUSH_CONNECT",
        ),
        http_port=free_ports(1)[0],
    )
    config.probe_timeout_s = 30.0
    others = skimage_photos(OTHERS)
    with (
        HttpService(config) as service,
        httpx.Client(base_url=f"http://127.0.0.1:{config.http_port}", timeout=60) as web,
    ):
        assert service.model_dim == 1280  # the start probe went with an image
        files = [("files", (f"{n}.png", encode_png(others[n]), "image/png")) for n in OTHERS[:2]]
        files.insert(1, ("files", ("cmyk.tif", b"II*\x00 not really", "image/tiff")))
        got = web.post("/images/index", files=files, data={"start_id": "700"})
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["indexed"] == 2
        assert [(r["id"], r["filename"]) for r in body["refused"]] == [(701, "cmyk.tif")]
        assert "not an image" in body["refused"][0]["reason"]
        got = web.post(
            "/images/search", files={"file": ("q.jpg", encode_png(others[OTHERS[1]], "JPEG"))}, data={"top_k": "1"}
        )
        assert got.status_code == 200, got.text
        hit = got.json()["results"][0]
        # the same photo, uploaded here or indexed by the CLI test
        assert OTHERS[1] in (hit["metadata"].get("filename") or hit["metadata"]["path"]), hit
        assert hit["score"] > 0.9
        got = web.post("/images/search", files={"file": ("bad.png", b"\x89PNG\r\n\x1a\nxx")})
        assert got.status_code == 422 and "bad.png" in got.json()["detail"], got.text
        got = web.post("/images/search", files={"file": ("empty.png", b"")})
        assert got.status_code == 422
        assert web.post("/images/index", files=files[:1]).status_code == 200  # still serving
