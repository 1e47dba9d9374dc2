"""A trainable encoder chain (EfficientNet-Lite0, then a PCA): refused until trained, trained by
a TRAIN request through the pipeline, saved to --dump_path as npz without pickle, loaded at start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import start_inprocess_pipeline

from gnes.client import GnesClient
from gnes.config import load_component
from gnes.encoder.base import BaseEncoder
from gnes.encoder.chain import EncoderChain
from gnes.encoder.pca import NotTrainedError, PCAEncoder
from gnes.encoder.requests import DUMP_FILE
from gnes.image.samples import encode_png, fashion_mnist, to_rgb
from gnes.proto import array_to_nd, nd_to_array, pb
from gnes.service.config import ServiceConfig
from gnes.service.encoder import EncoderService

DIM = 8
CHAIN_YAML = f"""!EncoderChain
stages:
  - !ImageEncoder
    batch_size: 16
  - !PCAEncoder
    output_dim: {DIM}
"""


def test_pca_learns_the_main_directions() -> None:
    rng = np.random.default_rng(0)
    # 3 strong directions in 20-d, plus small noise
    basis = np.linalg.qr(rng.normal(size=(20, 3)))[0].T
    data = rng.normal(size=(200, 3)) * [10, 5, 2] @ basis + rng.normal(size=(200, 20)) * 0.01
    pca = PCAEncoder(output_dim=3, normalize=False)
    with pytest.raises(NotTrainedError):
        pca.transform(data)
    pca.fit(data)
    # The learnt components span the same space as the true ones.
    np.testing.assert_allclose(np.abs(np.linalg.det(pca.components @ basis.T)), 1.0, atol=1e-3)
    restored = PCAEncoder(output_dim=3, normalize=False)
    restored.load_state(pca.state())
    np.testing.assert_array_equal(restored.transform(data), pca.transform(data))
    with pytest.raises(ValueError, match="needs at least 15 training vectors, got 10"):
        PCAEncoder(output_dim=15).fit(data[:10])
    with pytest.raises(ValueError, match="needs input of at least that many, got 20"):
        PCAEncoder(output_dim=30).fit(data)
    with pytest.raises(ValueError, match="this one projects to 4 dimensions"):
        PCAEncoder(output_dim=4).load_state(pca.state())


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    grey, _ = fashion_mnist(32)
    return [to_rgb(g) for g in grey]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("chain")
    (root / "chain.yml").write_text(CHAIN_YAML)
    (root / "index.yml").write_text(f"!IndexConfig\ndim: {DIM}\nmetric: ip\nindex_type: flat\n")
    (root / "encoder").mkdir()
    pipe = start_inprocess_pipeline(
        str(root / "chain.yml"), str(root / "index.yml"), shards=1, data_dir=root, encoder_dump=str(root / "encoder")
    )
    pipe.root = root  # type: ignore[attr-defined]
    try:
        yield pipe
    finally:
        pipe.stack.close()


def _docs(body, images: list[np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    for i, image in enumerate(images):
        body.docs.add(doc_id=i, raw_bytes=encode_png(image), doc_type=pb.Document.IMAGE)


def test_untrained_train_save_load(pipeline, images: list[np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    dump = pipeline.root / "encoder" / DUMP_FILE
    with GnesClient(port=pipeline.grpc_port, timeout=120) as client:
        request = pb.Request(request_id=1)
        _docs(request.index, images[:4])
        response = client.call(request)
        assert response.index.status == pb.Response.ERROR and "not trained" in response.error
        request = pb.Request(request_id=2)
        request.search.top_k = 1
        request.search.query.raw_bytes = encode_png(images[0])
        response = client.call(request)
        assert response.search.status == pb.Response.ERROR and "send a TRAIN request" in response.error
        assert not dump.exists()

        request = pb.Request(request_id=3)
        _docs(request.train, images)
        request.train.docs.add(doc_id=99, raw_bytes=b"\x89PNG\r\n\x1a\nbroken", doc_type=pb.Document.IMAGE)
        response = client.call(request)
        assert response.train.status == pb.Response.SUCCESS, response.error
        assert [e.doc_id for e in response.train.doc_errors] == [99]  # trained on the rest
        assert dump.exists()

        request = pb.Request(request_id=4)
        _docs(request.index, images)
        response = client.call(request)
        assert response.index.status == pb.Response.SUCCESS and response.index.num_docs == len(images), response.error
        for i in (0, 5, 17):
            request = pb.Request(request_id=10 + i)
            request.search.top_k = 1
            array_to_nd(images[i], request.search.query.raw_image)
            response = client.call(request)
            assert response.search.topk_results[0].doc.doc_id == i
        request = pb.Request(request_id=30)
        for i, image in enumerate(images[:3]):
            array_to_nd(image, request.embed.docs.add(doc_id=i).raw_image)
        piped = nd_to_array(client.call(request).embed.embeddings)
    assert piped.shape == (3, DIM)

    # The dump is plain arrays: it loads without pickle.
    with np.load(dump, allow_pickle=False) as data:
        assert data["1.components"].shape == (DIM, 1280)
    # A new encoder service with the same --dump_path starts trained, with the same vectors.
    service = EncoderService(ServiceConfig(yaml_path=str(pipeline.root / "chain.yml"), dump_path=str(dump.parent)))
    service.setup()
    try:
        assert service.encoder.trained
        np.testing.assert_allclose(service.encoder.encode(images[:3]), piped, atol=1e-5)
    finally:
        service.teardown()


def test_a_dump_of_another_chain_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    with load_component(CHAIN_YAML, BaseEncoder) as chain:
        assert isinstance(chain, EncoderChain) and not chain.trained
        with pytest.raises(NotTrainedError, match="not trained"):
            chain.encode([rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)])
        chain.stages[1].load_state(
            {"mean": np.zeros(1280, np.float32), "components": np.eye(DIM, 1280, dtype=np.float32)}
        )
        chain.save(tmp_path / "a.npz")
        other = EncoderChain([chain.encoder, PCAEncoder(output_dim=DIM), PCAEncoder(output_dim=4)])
        with pytest.raises(ValueError, match="was saved by a different chain"):
            other.load(tmp_path / "a.npz")
        # A file holding a pickled object is refused: loading it would run code.
        np.savez(tmp_path / "evil.npz", meta=np.array([object()], dtype=object))
        with pytest.raises(ValueError, match="allow_pickle"):
            chain.load(tmp_path / "evil.npz")


TEXT_CHAIN = "!EncoderChain\nstages:\n  - !HashEncoder {dim: 32}\n  - !PCAEncoder {output_dim: 4}\n"


def test_a_text_chain_trains_through_the_same_request_path(tmp_path: Path) -> None:
    """A trainable chain after a text encoder: TRAIN fits and saves, then INDEX encodes; an empty
    text is refused on its own; the service's text path is not used for it."""
    import logging

    from gnes.encoder.requests import TrainedState, encode_request, handles

    chain = load_component(
        "!EncoderChain\nstages:\n  - !HashEncoder {dim: 32}\n  - !PCAEncoder {output_dim: 4}\n", BaseEncoder
    )
    texts = [f"document number {i} about {topic}" for i, topic in enumerate(["cats", "dogs", "rain", "sun"] * 3)]
    with chain:
        state = TrainedState(chain, str(tmp_path), logging.getLogger("test"))
        request = pb.Request()
        for i, text in enumerate(texts):
            request.train.docs.add(doc_id=i, raw_text=text)
        request.train.docs.add(doc_id=50, raw_text="   ")
        envelope = pb.Envelope()
        assert handles(chain, request)
        encode_request(chain, request, envelope, state)
        assert [e.doc_id for e in envelope.doc_errors] == [50] and "no text" in envelope.doc_errors[0].reason
        assert nd_to_array(request.train.embeddings).shape == (len(texts), 4)
        assert (tmp_path / DUMP_FILE).exists()
        index = pb.Request()
        index.index.docs.add(doc_id=1, raw_text=texts[1])
        encode_request(chain, index, pb.Envelope(), state)
        np.testing.assert_allclose(nd_to_array(index.index.embeddings), chain.encode([texts[1]]))
    # A fresh chain picks the saved state up through the same TrainedState as the service uses.
    with load_component(
        "!EncoderChain\nstages:\n  - !HashEncoder {dim: 32}\n  - !PCAEncoder {output_dim: 4}\n", BaseEncoder
    ) as fresh:
        assert not fresh.trained
        TrainedState(fresh, str(tmp_path), logging.getLogger("test")).refresh()
        assert fresh.trained
