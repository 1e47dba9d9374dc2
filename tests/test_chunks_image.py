"""Image and frame chunks with real EfficientNet-Lite0 weights through a whole in-process
pipeline: photos indexed as the whole image plus a 2 x 2 grid of crops, animated GIFs as
sampled frames, a video as raw_video frames. A crop of a photo finds its photo, a frame of a
GIF or a video finds it, and a GIF of 2,000 frames is indexed from 8 of them (few images:
EfficientNet takes 0.1 to 0.4 s per image on the shared 2 cores)."""

from __future__ import annotations

import io
import tempfile

import numpy as np
import pytest
from chunk_pipeline import attach_preprocessor, query
from conftest import REPO, start_inprocess_pipeline
from PIL import Image

from gnes.client import GnesClient
from gnes.image.samples import encode_png, skimage_photos
from gnes.proto import array_to_nd, pb

pytest.importorskip("skimage")
pytestmark = [pytest.mark.model, pytest.mark.e2e]
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
GIF_IDS = {"horse": 101, "hubble_deep_field": 102}  # other photos than the stills: a frame must find its GIF
MP4_IDS = {"immunohistochemistry": 103}  # a video file (H.264 in MP4) in raw_bytes, decoded by ffmpeg
FRAMES = "!FrameSampler\nmax_frames: 8\nmax_side: 256\nchunks_per_message: 8\n"


def _gif(frames: list[np.ndarray], duration: int = 40) -> bytes:
    images = [Image.fromarray(frame) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=duration)
    return buffer.getvalue()


def _pan(photo: np.ndarray, count: int, size: int = 160) -> list[np.ndarray]:
    """`count` frames of a camera panning across the photo (a square window moving right)."""
    small = np.asarray(Image.fromarray(photo).resize((size * 2, size)))
    steps = np.linspace(0, size, count).round().astype(int)
    return [np.ascontiguousarray(small[:, x : x + size]) for x in steps]


def _mp4(frames: list[np.ndarray], fps: int = 12) -> bytes:
    import imageio_ffmpeg

    height, width = frames[0].shape[:2]
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/pan.mp4"
        writer = imageio_ffmpeg.write_frames(path, (width, height), fps=fps, macro_block_size=1)
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame).tobytes())
        writer.close()
        with open(path, "rb") as video:
            return video.read()


def _frames(photos: dict[str, np.ndarray], name: str) -> list[np.ndarray]:
    # 2,000 frames of 64 x 64 make a GIF of about 0.5 MB, within the frontend's 1 MiB per document
    return _pan(photos[name], 2000, 64) if name == "hubble_deep_field" else _pan(photos[name], 12, 96)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return skimage_photos(PHOTOS + tuple(GIF_IDS) + tuple(MP4_IDS))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, np.ndarray]):  # type: ignore[no-untyped-def]
    pipe = start_inprocess_pipeline(
        str(REPO / "yaml/encoder-image.yml"),
        str(REPO / "yaml/indexer-image.yml"),
        shards=2,
        data_dir=tmp_path_factory.mktemp("image-chunk-shards"),
        reduce_timeout=30,
    )
    try:
        crops_port = attach_preprocessor(pipe, str(REPO / "yaml/preprocess-image-grid.yml"), "crops")
        frames_yaml = tmp_path_factory.mktemp("yaml") / "frames.yml"
        frames_yaml.write_text(FRAMES)
        frames_port = attach_preprocessor(pipe, str(frames_yaml), "frames")
        with GnesClient(port=crops_port, timeout=120) as client:
            request = pb.Request(request_id=1)
            for doc_id, name in enumerate(PHOTOS):
                request.index.docs.add(doc_id=doc_id, raw_bytes=encode_png(photos[name]), doc_type=pb.Document.IMAGE)
            response = client.call(request)
            assert response.index.num_docs == len(PHOTOS), response.error
        gifs = {name: _gif(_frames(photos, name)) for name in GIF_IDS if name != "horse"}
        with GnesClient(port=frames_port, timeout=120) as client:
            request = pb.Request(request_id=2)
            for name, doc_id in GIF_IDS.items():
                if name == "horse":  # a video as its frames: raw_video (T, H, W, 3)
                    video = request.index.docs.add(doc_id=doc_id, doc_type=pb.Document.VIDEO)
                    array_to_nd(np.stack(_frames(photos, name)), video.raw_video)
                else:
                    request.index.docs.add(doc_id=doc_id, raw_bytes=gifs[name], doc_type=pb.Document.IMAGE)
            for name, doc_id in MP4_IDS.items():
                request.index.docs.add(doc_id=doc_id, raw_bytes=_mp4(_frames(photos, name)), doc_type=pb.Document.VIDEO)
            response = client.call(request)
            assert response.index.num_docs == len(GIF_IDS) + len(MP4_IDS), response.error
        yield pipe, crops_port
    finally:
        pipe.stack.close()


def _image_query(client: GnesClient, pixels: np.ndarray, top_k: int = 3) -> list:  # type: ignore[type-arg]
    doc = pb.Document(doc_type=pb.Document.IMAGE)
    array_to_nd(np.ascontiguousarray(pixels), doc.raw_image)
    return query(client, doc, top_k)


def test_a_crop_of_a_photo_finds_the_photo_with_the_crop_as_evidence(stack, photos) -> None:  # type: ignore[no-untyped-def]
    _, port = stack
    with GnesClient(port=port, timeout=60) as client:
        for doc_id, name in enumerate(PHOTOS):
            photo = photos[name]
            height, width = photo.shape[:2]
            # the lower-right quarter, a little inside the grid cell and shrunk: not a stored crop exactly
            crop = photo[height // 2 + 10 : height - 10, width // 2 + 10 : width - 10]
            crop = np.asarray(Image.fromarray(crop).resize((crop.shape[1] // 2, crop.shape[0] // 2)))
            hits = _image_query(client, crop)
            assert hits[0].doc_id == doc_id, (name, hits)
            # the evidence is the lower-right cell of the 2 x 2 grid: chunk 4, [top, left, height, width]
            top, left = (int(np.linspace(0, size, 3).round()[1]) for size in (height, width))
            assert hits[0].chunk_offset == 4 and hits[0].offset_nd == [top, left, height - top, width - left], hits[0]


def test_a_frame_finds_its_gif_or_video_and_a_long_gif_is_indexed_from_8_frames(stack, photos) -> None:  # type: ignore[no-untyped-def]
    pipe, port = stack
    with GnesClient(port=port, timeout=60) as client:
        for name, doc_id in {**GIF_IDS, **MP4_IDS}.items():
            frames = _frames(photos, name)
            hits = _image_query(client, frames[len(frames) // 3])
            assert hits[0].doc_id == doc_id, (name, hits)
            assert len(hits[0].offset_nd) == 1  # evidence: the number of the frame
    stored = {}
    for service in pipe.services.values():
        indexes = getattr(service, "indexes", None)
        if indexes is not None:
            chunks = indexes.get("").chunks
            for doc_id in (*GIF_IDS.values(), *MP4_IDS.values()):
                keys = chunks.keys_of([doc_id])
                if len(keys):
                    stored[doc_id] = len(keys)
    assert stored == {101: 8, 102: 8, 103: 8}  # 12 video frames, 2,000 GIF frames, 12 MP4 frames: 8 of each
