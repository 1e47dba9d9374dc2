"""The plugin convention: a Python file (or an importable package) defines `get_embed_fn()`.

`get_embed_fn()` returns `embed(texts) -> numpy float32 array [len(texts), dim]`. A plugin may
declare, as attributes of the module or of the function:
    DIM / dim                  the dimension it returns (checked on every batch)
    TAKES_PAIRS / takes_pairs  True: `embed` takes [instruction, text] pairs (lists of two strings)

The function is probed at load with two texts, and every batch in service is checked the same
way (type, dtype, rank, rows, dimension, finite values): a plugin that returns a list, float64,
the wrong number of rows or another dimension is refused with a message that names its file,
rather than writing malformed vectors into an index.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..component import check_optional_int
from ..encoder.base import BaseEncoder, check_texts

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PROBE = ["gnes plugin probe", "a second probe text"]
_PROBE_PAIRS = [["Represent the sentence:", "gnes plugin probe"], ["Represent the sentence:", "a second text"]]

EmbedFn = Callable[[Sequence[Any]], Any]


class PluginError(ValueError):
    """A plugin that cannot be loaded or that broke the convention; the message names its source."""


def check_model_name(name: str) -> str:
    """Model names become logical index names and service names: the index-name alphabet."""
    if not isinstance(name, str) or not _NAME.match(name) or name == "default":
        raise ValueError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or "
            "digit ('default' names the deployment's own model)"
        )
    return name


def load_module(plugin: str = "", package: str = "") -> tuple[Any, str]:
    """The plugin's module and how messages name it (its file, or `package PKG`)."""
    if bool(plugin) == bool(package):
        raise PluginError("give exactly one of a plugin file or a package")
    if package:
        where = f"package {package}"
        try:
            return importlib.import_module(package), where
        except Exception as exc:  # any failure of user code at import is reported, named
            raise PluginError(f"{where}: cannot import: {type(exc).__name__}: {exc}") from exc
    path = Path(plugin).expanduser().resolve()
    where = str(path)
    if not path.is_file():
        raise PluginError(f"plugin file {where} does not exist")
    # A unique module name per file: two plugins named plugin.py must not replace each other.
    name = f"gnes_plugin_{path.stem}_{hashlib.sha1(where.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"{where}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise PluginError(f"{where}: cannot import: {type(exc).__name__}: {exc}") from exc
    return module, where


def check_batch(where: str, result: Any, rows: int, dim: int | None) -> np.ndarray:
    """One batch's result, checked against the convention; returns it C-contiguous."""
    if not isinstance(result, np.ndarray):
        raise PluginError(f"{where}: embed returned a {type(result).__name__}, expected a numpy float32 array")
    if result.dtype != np.float32:
        raise PluginError(f"{where}: embed returned dtype {result.dtype}, expected float32")
    if result.ndim != 2:
        raise PluginError(f"{where}: embed returned shape {result.shape}, expected [n, dim]")
    if result.shape[0] != rows:
        raise PluginError(f"{where}: embed returned {result.shape[0]} rows for {rows} texts")
    if dim is not None and result.shape[1] != dim:
        raise PluginError(f"{where}: embed returned {result.shape[1]} dimensions, expected {dim}")
    if result.shape[1] == 0:
        raise PluginError(f"{where}: embed returned 0 dimensions")
    if not np.isfinite(result).all():
        raise PluginError(f"{where}: embed returned NaN or infinite values")
    return np.ascontiguousarray(result)


class PluginEncoder(BaseEncoder):
    """An encoder whose `embed` comes from a plugin file or package. `dim`, when given, is what the
    plugin must return (on top of what it declares itself)."""

    def __init__(self, plugin: str = "", package: str = "", dim: int | None = None) -> None:
        super().__init__()
        if bool(plugin) == bool(package):
            raise ValueError("PluginEncoder needs exactly one of plugin (a .py file) or package")
        self.plugin = plugin
        self.package = package
        self.expected_dim = check_optional_int("dim", dim, minimum=1)
        self.where = plugin or f"package {package}"
        self.takes_pairs = False
        self._embed: EmbedFn | None = None
        self._dim = 0

    def start(self) -> None:
        if self._started:
            return
        module, self.where = load_module(self.plugin, self.package)
        get = getattr(module, "get_embed_fn", None)
        if not callable(get):
            raise PluginError(f"{self.where}: defines no get_embed_fn()")
        try:
            embed = get()
        except Exception as exc:
            raise PluginError(f"{self.where}: get_embed_fn() failed: {type(exc).__name__}: {exc}") from exc
        if not callable(embed):
            raise PluginError(f"{self.where}: get_embed_fn() returned a {type(embed).__name__}, not a function")
        declared = _declared(module, embed, ("DIM", "dim"))
        pairs = _declared(module, embed, ("TAKES_PAIRS", "takes_pairs"))
        if declared is not None and (isinstance(declared, bool) or not isinstance(declared, int) or declared < 1):
            raise PluginError(f"{self.where}: DIM must be a positive integer, got {declared!r}")
        if declared is not None and self.expected_dim is not None and declared != self.expected_dim:
            raise PluginError(f"{self.where}: declares {declared} dimensions, expected {self.expected_dim}")
        self.takes_pairs = bool(pairs)
        probe = _PROBE_PAIRS if self.takes_pairs else _PROBE
        try:
            result = embed([list(p) for p in probe] if self.takes_pairs else list(probe))
        except Exception as exc:
            raise PluginError(f"{self.where}: embed failed on the load probe: {type(exc).__name__}: {exc}") from exc
        want = declared if declared is not None else self.expected_dim
        self._dim = int(check_batch(self.where, result, len(probe), want).shape[1])
        self._embed = embed
        super().start()

    @property
    def dim(self) -> int:
        self._require_started()
        return self._dim

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self.takes_pairs:
            # A pairs model gets every text as a pair: an empty instruction where none was given.
            return self.encode_pairs([["", t] for t in texts])
        return self._call(texts)

    def encode_pairs(self, pairs: Sequence[Sequence[str]]) -> np.ndarray:
        """[instruction, text] pairs; only for a plugin that declares TAKES_PAIRS."""
        self._require_started()
        if not self.takes_pairs:
            raise ValueError(f"{self.where} does not take [instruction, text] pairs")
        check_texts([text for _, text in pairs])
        return self._call([[str(instruction), text] for instruction, text in pairs])

    def _call(self, batch: list[Any]) -> np.ndarray:
        try:
            result = self._embed(batch)
        except Exception as exc:
            # The caller learns which plugin failed on which batch; the service keeps serving.
            reason = f"{type(exc).__name__}: {exc}"
            raise PluginError(f"{self.where}: embed failed on a batch of {len(batch)}: {reason}") from exc
        return check_batch(self.where, result, len(batch), self._dim)

    def close(self) -> None:
        self._embed = None
        super().close()


def _declared(module: Any, fn: Any, names: tuple[str, str]) -> Any:
    for owner in (fn, module):
        for name in names:
            value = getattr(owner, name, None)
            if value is not None:
                return value
    return None
