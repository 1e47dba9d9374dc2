"""The HTTP service's settings: where the pipeline is, and its flow control (seed 001)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields

from ..service.config import ServiceConfig


@dataclass
class HttpConfig:
    pipeline: ServiceConfig = field(default_factory=ServiceConfig)
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    model_name: str = "default"  # the name /apply/{model} and /searchwith/{model} answer to
    embedding_dim: int = 0  # 0: taken from the model's first answer; else checked at start
    max_batch_size: int = 64  # texts per EMBED request to the pipeline
    queue_length: int = 1024  # texts held (queued or being embedded) before callers get 429
    max_input_bytes: int = 8192  # per text, in UTF-8
    truncate: bool = False  # longer texts are cut to max_input_bytes instead of refused (413)
    batch_wait_ms: float = 5.0  # the longest a text waits for others to join its batch
    max_batches_in_flight: int = 4  # EMBED requests in the pipeline at once
    retry_after_s: int = 1
    probe_timeout_s: float = 120.0  # the start probe gives up (and the service fails) after this

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> HttpConfig:
        known = {f.name for f in fields(cls)} - {"pipeline"}
        own = {k: v for k, v in vars(args).items() if k in known and v is not None}
        return cls(pipeline=ServiceConfig.from_args(args), **own)
