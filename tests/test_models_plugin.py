"""The get_embed_fn() plugin convention: checked at load and on every batch, errors naming the file;
a plugin that fails mid-service fails that request only, in a real pipeline (threads, loopback sockets)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import REPO, InProcessPipeline, start_inprocess_pipeline  # noqa: I001

from gnes.client import GnesClient
from gnes.models.plugin import PluginEncoder, PluginError
from gnes.proto import nd_to_array, pb
from gnes.service.config import ServiceConfig
from gnes.service.encoder import EncoderService

GOOD = """
import hashlib
import numpy as np

DIM = 8

def get_embed_fn():
    def embed(texts):
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[:8], np.uint8) for t in texts]
        out = np.asarray(rows, np.float32) - 127.5
        if any("boom" in t for t in texts):
            raise RuntimeError("the model broke on this batch")
        return out / np.linalg.norm(out, axis=1, keepdims=True)
    return embed
"""

_NP = "import numpy as np\ndef get_embed_fn():\n    return lambda texts: "
BAD = {
    "list": "def get_embed_fn():\n    return lambda texts: [[0.0] * 4 for _ in texts]\n",
    "float64": "import numpy as np\ndef get_embed_fn():\n    return lambda texts: np.ones((len(texts), 4))\n",
    "rank": "import numpy as np\ndef get_embed_fn():\n    return lambda texts: np.ones(len(texts), np.float32)\n",
    "rows": "import numpy as np\ndef get_embed_fn():\n    return lambda texts: np.ones((1, 4), np.float32)\n",
    "dim": "DIM = 5\n" + _NP + "np.ones((len(texts), 4), np.float32)\n",
    "nan": _NP + "np.full((len(texts), 4), np.nan, np.float32)\n",
    "missing": "x = 1\n",
    "import": "raise ImportError('no such library')\n",
}
MESSAGES = {
    "list": "returned a list",
    "float64": "dtype float64",
    "rank": "expected [n, dim]",
    "rows": "1 rows for 2 texts",
    "dim": "4 dimensions, expected 5",
    "nan": "NaN",
    "missing": "no get_embed_fn",
    "import": "cannot import",
}


def _write(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_plugin_that_breaks_the_convention_is_refused_naming_its_file(tmp_path: Path, case: str) -> None:
    path = _write(tmp_path, f"bad_{case}", BAD[case])
    with pytest.raises(PluginError) as info:
        PluginEncoder(plugin=str(path)).start()
    assert str(path) in str(info.value)
    assert MESSAGES[case] in str(info.value)


def test_an_expected_dimension_is_checked_at_load(tmp_path: Path) -> None:
    path = _write(tmp_path, "good", GOOD)
    with pytest.raises(PluginError, match="declares 8 dimensions, expected 16"):
        PluginEncoder(plugin=str(path), dim=16).start()
    with PluginEncoder(plugin=str(path), dim=8) as encoder:
        assert encoder.encode(["a", "b", "c"]).shape == (3, 8)


def test_every_batch_is_checked_in_service(tmp_path: Path) -> None:
    # Right at load (2 probe texts), wrong once the batch is longer: the check runs on every batch.
    source = "import numpy as np\ndef get_embed_fn():\n    return lambda t: np.ones((min(len(t), 2), 4), np.float32)\n"
    path = _write(tmp_path, "short", source)
    with PluginEncoder(plugin=str(path)) as encoder:
        assert encoder.encode(["a"]).shape == (1, 4)
        with pytest.raises(PluginError, match=f"{path}: embed returned 2 rows for 3 texts"):
            encoder.encode(["a", "b", "c"])


def test_a_package_plugin_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "mymodel"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent(GOOD))
    monkeypatch.syspath_prepend(str(tmp_path))
    with PluginEncoder(package="mymodel") as encoder:
        assert encoder.dim == 8 and not encoder.takes_pairs


def test_a_plugin_that_fails_mid_service_fails_that_request_and_the_service_lives(tmp_path: Path) -> None:
    path = _write(tmp_path, "flaky", GOOD)
    pipe = start_inprocess_pipeline(
        str(REPO / "yaml/encoder-hash.yml"), str(REPO / "yaml/indexer-hash.yml"), shards=1, data_dir=None
    )
    try:
        service = _start_named(pipe, "flaky", path)
        with GnesClient(port=pipe.grpc_port) as client:
            broken = client.call(_embed_request("flaky", ["fine", "boom goes the model"]))
            assert broken.error and str(path) in broken.error and "the model broke" in broken.error
            fine = client.call(_embed_request("flaky", ["fine", "also fine"]))
            assert not fine.error, fine.error
            assert nd_to_array(fine.embed.embeddings).shape == (2, 8)
            assert service.is_ready and service.errors == 1
    finally:
        pipe.stack.close()


def _start_named(pipe: InProcessPipeline, model: str, plugin: Path) -> EncoderService:
    """A plugin encoder serving `model` in `pipe` (closed with it), once the map proxy has heard it."""
    config = ServiceConfig(
        name=model,
        port_in=pipe.services["income"].config.port_out,
        port_out=pipe.services["middle"].config.port_in,
        socket_in="DEALER_CONNECT",
        socket_out="PUSH_CONNECT",
        model_name=model,
        plugin=str(plugin),
    )
    service = pipe.stack.enter_context(EncoderService(config))
    with GnesClient(port=pipe.grpc_port) as client:
        _wait_served(client, model)
    return service


def _embed_request(model: str, texts: list[str]) -> pb.Request:
    request = pb.Request(model_name=model)
    for i, text in enumerate(texts):
        request.embed.docs.add(doc_id=i, raw_text=text)
    return request


def _wait_served(client: GnesClient, model: str, timeout: float = 20.0) -> None:
    """Until the map proxy has heard the model's encoder (its first HELLO)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        response = client.call(_embed_request(model, ["probe"]))
        if not response.error:
            return
        assert "no encoder serves" in response.error, response.error
        if time.monotonic() > deadline:
            raise TimeoutError(response.error)
        time.sleep(0.1)
