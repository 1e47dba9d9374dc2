"""Chunks without a model: the preprocessors (sentences, windows, crops, frames, their limits
and bad input), chunk storage beside a logical index (replace, delete, reopen, handover
round trip) and chunk-to-document ranking (max, mean, weighted) on hand-made vectors."""

from __future__ import annotations

import io
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gnes.config import load_component
from gnes.indexer.chunk_rank import reduce_mode, search_chunks
from gnes.indexer.chunks import write_chunks
from gnes.indexer.config import IndexConfig
from gnes.indexer.logical import LogicalIndex
from gnes.preprocessor.base import BasePreprocessor
from gnes.preprocessor.frames import FrameSampler
from gnes.preprocessor.image import ImageCropper
from gnes.preprocessor.text import SentenceSplitter, SlidingWindowSplitter
from gnes.proto import WireError, array_to_nd, nd_to_array, pb
from gnes.service.indexer import index_batch

REPO = Path(__file__).resolve().parents[1]


def _started(component: BasePreprocessor) -> BasePreprocessor:
    component.start()
    return component


def _gif(frames: int, size: int = 32) -> bytes:
    images = [Image.fromarray(np.full((size, size, 3), (i * 7) % 256, np.uint8)) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=20)
    return buffer.getvalue()


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


# ---- preprocessors -----------------------------------------------------------------------
def test_every_preprocessor_yaml_loads() -> None:
    for name in ("sentences", "windows", "image-grid", "frames"):
        assert isinstance(load_component(REPO / f"yaml/preprocess-{name}.yml", BasePreprocessor), BasePreprocessor)


def test_sentences_keep_doc_id_offsets_and_character_spans() -> None:
    text = 'Fires burn near Sydney. Hi. Crews said "it is bad!" Rain may come?\n\nA new paragraph starts here'
    doc = pb.Document(doc_id=42, raw_text=text)
    _started(SentenceSplitter(min_words=3)).apply(doc)
    texts = [c.text for c in doc.chunks]
    # "Hi." is too short to stand alone: it joins the next sentence
    assert texts == [
        "Fires burn near Sydney.",
        'Hi. Crews said "it is bad!"',
        "Rain may come?",
        "A new paragraph starts here",
    ]
    for i, chunk in enumerate(doc.chunks):
        assert (chunk.doc_id, chunk.offset) == (42, i)
        start, end = chunk.offset_nd
        assert text[start:end] == chunk.text
    assert sum(c.weight for c in doc.chunks) == pytest.approx(1.0)


def test_sliding_windows_overlap_and_cover_the_end() -> None:
    text = " ".join(f"w{i}" for i in range(100))
    doc = pb.Document(doc_id=1, raw_text=text)
    _started(SlidingWindowSplitter(window=40, stride=30)).apply(doc)
    firsts = [c.text.split()[0] for c in doc.chunks]
    assert firsts == ["w0", "w30", "w60"]
    assert doc.chunks[-1].text.split()[-1] == "w99" and all(len(c.text.split()) == 40 for c in doc.chunks)
    short = pb.Document(doc_id=2, raw_text="only three words")
    _started(SlidingWindowSplitter(window=40, stride=30)).apply(short)
    assert [c.text for c in short.chunks] == ["only three words"]


def test_text_limits_and_bad_documents_are_named() -> None:
    splitter = _started(SentenceSplitter(max_chunks=5))
    with pytest.raises(ValueError, match=r"document 9 would make 10 chunks; the limit is max_chunks=5"):
        splitter.apply(pb.Document(doc_id=9, raw_text="One two three. " * 10))
    with pytest.raises(ValueError, match="document 3 has no text"):
        splitter.apply(pb.Document(doc_id=3, raw_text="   "))
    with pytest.raises(WireError, match="raw_bytes is not UTF-8"):
        splitter.apply(pb.Document(doc_id=4, raw_bytes=b"\xff\xfe\x00"))
    with pytest.raises(ValueError, match="stride must be at most 4"):
        SlidingWindowSplitter(window=4, stride=5)
    given = pb.Document(doc_id=5, raw_text="x")  # a caller's own chunks are kept as they are
    given.chunks.add(text="mine")
    assert splitter.apply(given) == 1 and given.chunks[0].text == "mine"


def test_image_grid_and_sliding_crops() -> None:
    pixels = np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)
    doc = pb.Document(doc_id=7, raw_bytes=_png(pixels))
    _started(ImageCropper(mode="grid", rows=2, cols=3)).apply(doc)
    assert len(doc.chunks) == 7
    whole = nd_to_array(doc.chunks[0].blob)
    assert np.array_equal(whole, pixels) and list(doc.chunks[0].offset_nd) == [0, 0, 60, 90]
    for chunk in doc.chunks[1:]:
        top, left, height, width = chunk.offset_nd
        assert np.array_equal(nd_to_array(chunk.blob), pixels[top : top + height, left : left + width])
        assert chunk.weight == pytest.approx(1 / 6)
    array_doc = pb.Document(doc_id=8)
    array_to_nd(pixels, array_doc.raw_image)
    _started(ImageCropper(mode="sliding", window=40, stride=25, include_whole=False)).apply(array_doc)
    boxes = [tuple(c.offset_nd) for c in array_doc.chunks]
    assert boxes == [
        (0, 0, 40, 40),
        (0, 25, 40, 40),
        (0, 50, 40, 40),
        (20, 0, 40, 40),
        (20, 25, 40, 40),
        (20, 50, 40, 40),
    ]


def test_bad_images_are_refused_by_name() -> None:
    cropper = _started(ImageCropper(max_pixels=10_000))
    with pytest.raises(ValueError, match="document 1: raw_bytes is not an image"):
        cropper.apply(pb.Document(doc_id=1, raw_bytes=b"GIF89a but not really"))
    truncated = _png(np.random.default_rng(1).integers(0, 255, (50, 50, 3), dtype=np.uint8))[:200]
    with pytest.raises(ValueError, match="document 2: the image data cannot be decoded"):
        cropper.apply(pb.Document(doc_id=2, raw_bytes=truncated))
    with pytest.raises(ValueError, match=r"document 3: the image is 200 x 100 pixels; the limit is 10000"):
        cropper.apply(pb.Document(doc_id=3, raw_bytes=_png(np.zeros((100, 200, 3), np.uint8))))
    wrong = pb.Document(doc_id=4)
    array_to_nd(np.zeros((10, 10, 3), np.float32), wrong.raw_image)
    with pytest.raises(ValueError, match=r"document 4: raw_image must be uint8 \(H, W, 3\)"):
        cropper.apply(wrong)
    with pytest.raises(ValueError, match="document 5 has no image"):
        cropper.apply(pb.Document(doc_id=5, raw_text="a photo of a cat"))


def test_a_gif_of_thousands_of_frames_is_sampled_with_bounded_memory() -> None:
    data = _gif(2000)
    sampler = _started(FrameSampler(max_frames=12, max_side=16))
    tracemalloc.start()
    started = time.monotonic()
    doc = pb.Document(doc_id=11, raw_bytes=data)
    sampler.apply(doc)
    took = time.monotonic() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    positions = [c.offset_nd[0] for c in doc.chunks]
    assert len(positions) == 12 and positions[0] == 0 and positions[-1] == 1999
    assert all(nd_to_array(c.blob).shape == (16, 16, 3) for c in doc.chunks)  # shrunk to max_side
    # 3000 decoded 32x32 RGB frames would be 9 MB; what is held is the sampled frames and one being decoded
    assert peak < 4_000_000, peak
    assert took < 30
    with pytest.raises(ValueError, match="document 12 has 2000 frames; the limit is max_scan_frames=1000"):
        _started(FrameSampler(max_scan_frames=1000)).apply(pb.Document(doc_id=12, raw_bytes=data))
    video = pb.Document(doc_id=13)
    array_to_nd(np.arange(40, dtype=np.uint8).repeat(8 * 8 * 3).reshape(40, 8, 8, 3), video.raw_video)
    sampler.apply(video)
    assert [c.offset_nd[0] for c in video.chunks] == [0, 4, 7, 11, 14, 18, 21, 25, 28, 32, 35, 39]
    assert nd_to_array(video.chunks[1].blob)[0, 0, 0] == 4


def _mp4(frames: int, size: int = 32) -> bytes:
    import imageio_ffmpeg

    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/clip.mp4"
        writer = imageio_ffmpeg.write_frames(path, (size, size), fps=25, macro_block_size=1)
        writer.send(None)
        for i in range(frames):
            writer.send(np.full((size, size, 3), (i * 7) % 256, np.uint8).tobytes())
        writer.close()
        return Path(path).read_bytes()


def test_a_video_file_is_sampled_from_its_frames_and_a_bad_one_is_named() -> None:
    pytest.importorskip("imageio_ffmpeg")
    data = _mp4(300)
    sampler = _started(FrameSampler(max_frames=6, max_side=16))
    doc = pb.Document(doc_id=21, raw_bytes=data)
    sampler.apply(doc)
    positions = [c.offset_nd[0] for c in doc.chunks]
    assert len(positions) == 6 and positions[0] == 0 and positions[-1] >= 290, positions
    assert all(nd_to_array(c.blob).shape == (16, 16, 3) for c in doc.chunks)
    # the frames are the video's own, in order: frame i was filled with (7 i) mod 256
    first, second = (int(nd_to_array(c.blob).mean()) for c in doc.chunks[:2])
    assert abs(first - 0) <= 4 and abs(second - (positions[1] * 7) % 256) <= 6, (first, second, positions)
    with pytest.raises(
        ValueError, match="document 22: the video cannot be decoded|document 22: raw_bytes is not a video"
    ):
        sampler.apply(pb.Document(doc_id=22, raw_bytes=data[: len(data) // 3]))
    with pytest.raises(ValueError, match="document 23: the video is 32 x 32 pixels a frame; the limit is 100"):
        _started(FrameSampler(max_pixels=100)).apply(pb.Document(doc_id=23, raw_bytes=data))


# ---- storage and ranking -----------------------------------------------------------------
def _unit(vector: list[float]) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float32)
    return array / np.linalg.norm(array)


def _request(chunk_vectors: dict[int, list[list[float]]], weights: dict[int, list[float]] | None = None) -> pb.Request:
    request = pb.Request()
    for doc_id, vectors in chunk_vectors.items():
        doc = request.index.docs.add(doc_id=doc_id, raw_text=f"document {doc_id}", meta_json=json.dumps({"n": doc_id}))
        for offset, vector in enumerate(vectors):
            weight = weights[doc_id][offset] if weights else 1.0 / len(vectors)
            chunk = doc.chunks.add(doc_id=doc_id, offset=offset, text=f"d{doc_id}c{offset}", weight=weight)
            chunk.offset_nd.extend([offset * 10, offset * 10 + 9])
            array_to_nd(_unit(vector), chunk.embedding)
    doc_rows = np.stack([_unit([0, 0, 0, 1])] * len(chunk_vectors))  # document vectors: all alike
    array_to_nd(doc_rows, request.index.embeddings)
    return request


def _write(index: LogicalIndex, request: pb.Request) -> None:
    index.add_many([index_batch(request.index)])
    write_chunks(index, request.index)


def _ranked(index: LogicalIndex, query: list[float], mode: str, k: int = 3) -> list[tuple[int, int]]:
    hits = search_chunks(index, _unit(query).reshape(1, -1), k, mode)[0]
    return [(hit.doc_id, hit.evidence.offset if hit.evidence else None) for hit in hits]


@pytest.fixture
def index(tmp_path: Path):  # type: ignore[no-untyped-def]
    index = LogicalIndex.create("default", IndexConfig(dim=4, metric="ip", index_type="flat"), tmp_path / "ix")
    yield index
    index.close()


def test_reduce_modes_rank_documents_once_with_their_best_chunk(index: LogicalIndex) -> None:
    # doc 0: one chunk right on the query, one far off; doc 1: three chunks all close to it
    _write(
        index, _request({0: [[1, 0, 0, 0], [0, 1, 0, 0]], 1: [[0.9, 0.1, 0, 0], [0.8, 0.3, 0, 0], [0.9, 0.2, 0, 0]]})
    )
    query = [1, 0, 0, 0]
    assert _ranked(index, query, "max") == [(0, 0), (1, 0)]
    assert _ranked(index, query, "mean") == [(1, 0), (0, 0)]
    hits = search_chunks(index, _unit(query).reshape(1, -1), 5, "mean")[0]
    assert hits[0].evidence.scored == 3 and hits[0].meta_json == '{"n": 1}'
    assert hits[1].score == pytest.approx(0.5, abs=1e-5)  # (1 + 0) / 2
    assert hits[0].evidence.text == "d1c0" and hits[0].evidence.offset_nd == [0, 9]


def test_weighted_follows_the_chunk_weights(index: LogicalIndex) -> None:
    vectors = {0: [[1, 0, 0, 0], [0, 1, 0, 0]], 1: [[0.7, 0.7, 0, 0], [0.7, 0.7, 0, 0]]}
    _write(index, _request(vectors, weights={0: [0.9, 0.1], 1: [0.5, 0.5]}))
    query = [1, 0, 0, 0]
    assert [d for d, _ in _ranked(index, query, "mean")] == [1, 0]  # 0.71 against 0.5
    assert [d for d, _ in _ranked(index, query, "weighted")] == [0, 1]  # 0.9 against 0.71


def test_documents_without_chunks_compete_by_their_own_vector(index: LogicalIndex) -> None:
    _write(index, _request({0: [[1, 0, 0, 0]], 1: [[0, 1, 0, 0]]}))
    plain = pb.Request()  # indexed around the preprocessor: a document vector, no chunks
    plain.index.docs.add(doc_id=9, raw_text="plain")
    array_to_nd(_unit([0.1, 0, 1, 0]).reshape(1, -1), plain.index.embeddings)
    _write(index, plain)
    for mode in ("max", "mean", "weighted"):
        hits = search_chunks(index, _unit([0, 0, 1, 0]).reshape(1, -1), 2, mode)[0]
        assert [h.doc_id for h in hits] == [9, 0] and hits[0].evidence is None, mode


def test_mode_choice(index: LogicalIndex) -> None:
    assert reduce_mode(index, "") is None  # no chunks yet: the documents' own vectors
    _write(index, _request({0: [[1, 0, 0, 0]]}))
    assert reduce_mode(index, "") == "max" and reduce_mode(index, "mean") == "mean"
    assert reduce_mode(index, "doc") is None
    with pytest.raises(WireError, match="chunk_reduce must be one of max, mean, weighted, doc; got 'avg'"):
        reduce_mode(index, "avg")


def test_chunks_are_replaced_deleted_and_survive_a_reopen(tmp_path: Path) -> None:
    config = IndexConfig(dim=4, metric="ip", index_type="flat")
    index = LogicalIndex.create("default", config, tmp_path / "ix")
    _write(index, _request({0: [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], 1: [[0, 1, 0, 0]], 2: [[0, 0, 1, 0]]}))
    assert len(index.chunks) == 5
    _write(index, _request({0: [[0, 0, 0, 1]]}))  # doc 0 again, with one chunk: its three old ones are gone
    assert len(index.chunks) == 3 and index.chunks.keys_of([0]).tolist() == [0]
    assert _ranked(index, [0, 0, 0, 1], "max", k=1) == [(0, 0)]
    plain = pb.Request()  # doc 2 again without chunks: it keeps none
    plain.index.docs.add(doc_id=2, raw_text="plain")
    array_to_nd(_unit([0, 0, 1, 0]).reshape(1, -1), plain.index.embeddings)
    _write(index, plain)
    assert len(index.chunks) == 2
    index.close()
    index = LogicalIndex.open("default", tmp_path / "ix")
    try:
        assert len(index.chunks) == 2 and _ranked(index, [0, 1, 0, 0], "max", k=1) == [(1, 0)]
        assert index.delete([1]) == 1
        # doc 0 by its chunk, doc 2 (no chunks left) by its own vector
        assert len(index.chunks) == 1 and _ranked(index, [0, 1, 0, 0], "max") == [(0, 0), (2, None)]
    finally:
        index.close()


def test_a_handover_batch_carries_the_chunks(index: LogicalIndex, tmp_path: Path) -> None:
    from gnes.elastic.shard_link import _move_request

    _write(index, _request({5: [[1, 0, 0, 0], [0, 1, 0, 0]], 6: [[0, 0, 1, 0]]}))
    moved = _move_request(index, "default", np.asarray([5, 6], dtype=np.int64))
    assert [len(d.chunks) for d in moved.index.docs] == [2, 1]
    assert moved.index.docs[0].chunks[1].text == "d5c1" and list(moved.index.docs[0].chunks[1].offset_nd) == [10, 19]
    target = LogicalIndex.create("default", index.config, tmp_path / "target")
    try:
        _write(target, moved)
        assert len(target.chunks) == 3
        assert _ranked(target, [0, 1, 0, 0], "max", k=1) == [(5, 1)]
    finally:
        target.close()


def test_chunks_that_cannot_be_stored_are_refused(index: LogicalIndex) -> None:
    request = _request({0: [[1, 0, 0, 0]]})
    request.index.docs[0].doc_id = 1 << 52
    with pytest.raises(
        WireError, match=r"doc_id 4503599627370496\): a document with chunks needs a doc_id below 2\*\*51"
    ):
        write_chunks(index, request.index)
    request = _request({0: [[1, 0, 0, 0]]})
    request.index.docs[0].chunks[0].ClearField("embedding")
    with pytest.raises(WireError, match="chunk 0 reached the indexer without a vector"):
        write_chunks(index, request.index)


def test_the_reducer_keeps_a_document_once_at_its_best_score_with_that_chunk() -> None:
    """During a handover two shards may both hold a document with its chunks: the merged answer
    has it once, with the better score and that shard's best chunk as the evidence."""
    from gnes.service.message import BodyType, Packet
    from gnes.service.reducer import Reducer

    reducer = Reducer()
    out: list[Packet] = []
    for part, hits in enumerate([[(7, 0.9, "seven's best"), (8, 0.5, "eight")], [(7, 0.8, "seven, older copy")]]):
        env = pb.Envelope(client_id="c", request_id=1, body_type=BodyType.QUERY, is_response=True)
        env.num_part.extend([1, 2])
        env.part_ids.extend([0, part])
        response = pb.Response(request_id=1)
        response.search.top_k, response.search.is_big_score_similar = 3, True
        for doc_id, score, chunk in hits:
            result = response.search.topk_results.add()
            result.doc.doc_id, result.score.value = doc_id, score
            result.doc.chunks.add(doc_id=doc_id, text=chunk)
            result.score.explained = json.dumps({"reduce": "max", "chunk": 0})
        out += reducer.add(Packet(env, response.SerializeToString()))
    merged = out[0].response().search.topk_results
    assert [(r.doc.doc_id, round(r.score.value, 2), r.doc.chunks[0].text) for r in merged] == [
        (7, 0.9, "seven's best"),
        (8, 0.5, "eight"),
    ]
