"""The configuration of one logical index: what faiss builds, how it trains and searches.

It is a Component so that a YAML file with an `!IndexConfig` (or `!FaissIndexer`) tag
loads and is checked like any other part; it is also sent as JSON in CREATE requests
and stored next to the index, so a restarted shard rebuilds exactly the same index.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..component import Component, check_bool, check_int, check_optional_int, check_str

METRICS = ("ip", "l2")
_METRIC_ALIASES = {"dot": "ip", "inner_product": "ip", "ip": "ip", "l2": "l2", "euclidean": "l2"}
INDEX_TYPES = ("flat", "ivf_flat", "ivf_pq", "ivf_sq", "hnsw_flat", "hnsw_sq", "ivf_gpu")
_SQ_TYPES = ("SQ4", "SQ6", "SQ8", "SQfp16")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_INDEX = "default"


def check_index_name(name: str) -> str:
    """Index names become directory names, so they are kept to a safe alphabet."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"invalid index name {name!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return name


_FIELDS = (
    "dim",
    "metric",
    "index_type",
    "faiss_factory",
    "nlist",
    "pq_m",
    "pq_nbits",
    "hnsw_m",
    "sq_type",
    "train_num",
    "train_ratio",
    "nprobe",
    "ef_search",
    "ef_construction",
    "store_sync",
    "store_dtype",
)


class IndexConfig(Component):
    """dim and metric, then either a named `index_type` or any faiss `faiss_factory` string.

    Trained types collect vectors (searchable, exactly) until `train_num` have arrived,
    then train in the background. 0 means as many as faiss needs (39 per centroid).
    `train_ratio` instead trains on that fraction of the collected vectors, when training
    is asked for (the bulk loader asks at the end of its stream).
    `nprobe` / `ef_search` are defaults that every query may override.
    `store_sync: false` skips the fsync per write: faster, but a machine crash (not a
    process crash) can lose the last acknowledged writes.
    `store_dtype: float16` keeps the stored vectors (the segment file) in half precision:
    half the bytes to write per vector; faiss still gets float32 (use an SQfp16 factory to
    halve its memory too), and vectors read back are the float16 values widened.
    """

    def __init__(
        self,
        dim: int,
        metric: str = "ip",
        index_type: str = "flat",
        faiss_factory: str = "",
        nlist: int = 256,
        pq_m: int = 8,
        pq_nbits: int = 8,
        hnsw_m: int = 32,
        sq_type: str = "SQ8",
        train_num: int = 0,
        train_ratio: float = 0.0,
        nprobe: int | None = None,
        ef_search: int | None = None,
        ef_construction: int | None = None,
        store_sync: bool = True,
        store_dtype: str = "float32",
        # accepted so that configs of the first gnes indexer keep loading
        index_factory: str = "",
    ) -> None:
        super().__init__()
        metric = check_str("metric", metric)
        if metric.lower() not in _METRIC_ALIASES:
            raise ValueError(f"metric must be one of ip (dot) or l2; got {metric!r}")
        factory = faiss_factory or index_factory
        if factory and not isinstance(factory, str):
            raise TypeError(f"faiss_factory must be a string, got {type(factory).__name__}")
        if "IDMap" in factory:
            raise ValueError("faiss_factory must not contain IDMap: gnes maps ids itself")
        if isinstance(train_ratio, bool) or not isinstance(train_ratio, (int, float)) or not 0 <= train_ratio <= 1:
            raise ValueError(f"train_ratio must be a number in [0, 1], got {train_ratio!r}")
        if train_num and train_ratio:
            raise ValueError("give train_num or train_ratio, not both")
        self.dim = check_int("dim", dim, minimum=1, maximum=65536)
        self.metric = _METRIC_ALIASES[metric.lower()]
        self.index_type = check_str("index_type", index_type, INDEX_TYPES)
        self.faiss_factory = factory
        self.nlist = check_int("nlist", nlist, minimum=1)
        self.pq_m = check_int("pq_m", pq_m, minimum=1)
        self.pq_nbits = check_int("pq_nbits", pq_nbits, minimum=1, maximum=16)
        self.hnsw_m = check_int("hnsw_m", hnsw_m, minimum=2)
        self.sq_type = check_str("sq_type", sq_type, _SQ_TYPES)
        self.train_num = check_int("train_num", train_num, minimum=0)
        self.train_ratio = float(train_ratio)
        self.nprobe = check_optional_int("nprobe", nprobe, minimum=1)
        self.ef_search = check_optional_int("ef_search", ef_search, minimum=1)
        self.ef_construction = check_optional_int("ef_construction", ef_construction, minimum=1)
        self.store_sync = check_bool("store_sync", store_sync)
        self.store_dtype = check_str("store_dtype", store_dtype, ("float32", "float16"))
        if self.index_type == "ivf_pq" and not factory and self.dim % self.pq_m:
            raise ValueError(f"pq_m ({pq_m}) must divide dim ({dim})")

    @property
    def factory(self) -> str:
        """The faiss index_factory string this configuration builds."""
        f = self
        if f.faiss_factory:
            return f.faiss_factory
        return {
            "flat": "Flat",
            "ivf_flat": f"IVF{f.nlist},Flat",
            "ivf_gpu": f"IVF{f.nlist},Flat",
            "ivf_pq": f"IVF{f.nlist},PQ{f.pq_m}x{f.pq_nbits}",
            "ivf_sq": f"IVF{f.nlist},{f.sq_type}",
            "hnsw_flat": f"HNSW{f.hnsw_m}",
            "hnsw_sq": f"HNSW{f.hnsw_m}_{f.sq_type}",
        }[f.index_type]

    @property
    def uses_gpu(self) -> bool:
        return self.index_type == "ivf_gpu"

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELDS}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> IndexConfig:
        if not isinstance(values, dict):
            raise ValueError(f"an index configuration must be a JSON object, got {type(values).__name__}")
        try:
            return cls(**values)
        except TypeError as exc:
            # unknown keys and missing dim surface here; say it in the caller's terms
            raise ValueError(f"bad index configuration: {exc}".replace(".__init__()", "")) from exc

    @classmethod
    def from_json(cls, text: str) -> IndexConfig:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"index configuration is not valid JSON: {exc}") from exc
        return cls.from_dict(values)

    def __repr__(self) -> str:
        return f"IndexConfig({self.to_json()})"
