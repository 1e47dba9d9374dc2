"""The image encoder with real EfficientNet-Lite0 weights and a torchvision network from a weights file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gnes.config import load_component
from gnes.encoder.base import BaseEncoder
from gnes.encoder.image import ImageEncoder

skimage_data = pytest.importorskip("skimage.data")
PHOTOS = ("astronaut", "chelsea", "coffee", "camera")
REPO = Path(__file__).resolve().parents[1]


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3]


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [_rgb(getattr(skimage_data, name)()) for name in PHOTOS]


@pytest.fixture(scope="module")
def lite0() -> ImageEncoder:
    encoder = load_component(REPO / "yaml" / "encoder-image.yml", BaseEncoder)
    assert isinstance(encoder, ImageEncoder)
    with encoder:
        yield encoder


def test_lite0_photos_find_themselves(lite0: ImageEncoder, photos: list[np.ndarray]) -> None:
    assert lite0.dim == 1280
    vectors = lite0.encode(photos)
    assert vectors.shape == (len(PHOTOS), 1280) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # A slightly shifted, resized copy of each photo is still nearest to its source.
    variants = [np.ascontiguousarray(p[8:-8, 6:-6]) for p in photos]
    scores = lite0.encode(variants) @ vectors.T
    assert list(scores.argmax(axis=1)) == list(range(len(PHOTOS)))
    # Batching does not change the vectors.
    np.testing.assert_allclose(lite0.encode([photos[1]]), vectors[1:2], atol=1e-4)


def test_lite0_classifies_like_imagenet(lite0: ImageEncoder, photos: list[np.ndarray]) -> None:
    """The preprocessing matches the weights: the network's own classifier names the coffee cup."""
    import torch

    with torch.inference_mode():
        logits = lite0._net(torch.stack([lite0.preprocess(photos[PHOTOS.index("coffee")])]))
    assert int(logits.argmax()) == 967  # ImageNet class 967: espresso


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((4, 4), np.uint8), "image 1 has shape (4, 4)"),
        (np.zeros((4, 4, 4), np.uint8), "expected (height, width, 3)"),
        (np.zeros((4, 4, 3), np.float32), "image 1 has dtype float32"),
        (np.zeros((0, 4, 3), np.uint8), "image 1 is empty"),
        ("a.png", "image 1 is a str"),
    ],
)
def test_bad_images_are_named(lite0: ImageEncoder, photos: list[np.ndarray], bad: object, message: str) -> None:
    with pytest.raises((TypeError, ValueError)) as info:
        lite0.encode([photos[0], bad])  # type: ignore[list-item]
    assert message in str(info.value)


def test_one_array_is_not_a_list(lite0: ImageEncoder, photos: list[np.ndarray]) -> None:
    with pytest.raises(TypeError, match="not one array"):
        lite0.encode(photos[0])


def test_torchvision_architecture_from_weights_file(tmp_path: Path, photos: list[np.ndarray]) -> None:
    import torch
    import torchvision

    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    config = f"!ImageEncoder\nmodel: torchvision:resnet18\nweights_path: {weights}\nimage_size: 112\nbatch_size: 2\n"
    with load_component(config, BaseEncoder) as encoder:
        assert encoder.dim == 512  # resnet18's pooled features, its fc removed
        vectors = encoder.encode(photos)
        assert vectors.shape == (len(PHOTOS), 512)
        assert list((vectors @ vectors.T).argmax(axis=1)) == list(range(len(PHOTOS)))


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="needs weights_path"):
        ImageEncoder(model="torchvision:resnet18")
    with pytest.raises(ValueError, match="must be 'efficientnet-lite0'"):
        ImageEncoder(model="vgg")
    with pytest.raises(FileNotFoundError, match="is not a file"):
        ImageEncoder(model="torchvision:resnet18", weights_path="/nonexistent.pt").start()
