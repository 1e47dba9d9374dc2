"""`gnes COMMAND ...`: start a service, run a client, or start a whole stack."""

from __future__ import annotations

import logging
import os
import sys

from .parser import build_parser


def _serve(args) -> int:  # type: ignore[no-untyped-def]
    if args.command == "http":
        from ..http.config import HttpConfig
        from ..http.service import HttpService

        return HttpService(HttpConfig.from_args(args)).run_forever()
    from ..service.config import ServiceConfig

    config = ServiceConfig.from_args(args)
    if args.command == "proxy":
        from ..service.proxy import PROXY_TYPES

        service = PROXY_TYPES[args.proxy_type](config)
    elif args.command == "encode":
        from ..service.encoder import EncoderService

        service = EncoderService(config)
    elif args.command == "preprocess":
        from ..preprocessor.service import PreprocessService

        service = PreprocessService(config)
    elif args.command == "index":
        from ..service.indexer import IndexerService

        service = IndexerService(config)
    else:
        from ..service.frontend import FrontendService

        service = FrontendService(config)
    return service.run_forever()


def main(argv: list[str] | None = None) -> int:
    # Idle OpenMP threads (faiss, torch) spin by default. With a dozen gnes processes sharing a
    # few cores, that spinning starved the others: query p50 through the stack fell from 16.6 ms
    # to 2.6 ms once idle threads sleep (bench/pipeline.py, hash encoder, 2 cores). It must be set
    # before faiss or torch is loaded, so it is set here, before any service starts.
    args = build_parser().parse_args(argv)
    if args.command != "encode":
        # The encoder is the one busy process under load; its threads may spin.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    level = logging.DEBUG if getattr(args, "verbose", False) else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command in ("proxy", "encode", "preprocess", "index", "frontend", "http"):
        return _serve(args)
    if args.command == "client":
        from .client import run as run_client

        return run_client(args)
    if args.command == "healthcheck":
        from .healthcheck import run as run_healthcheck

        return run_healthcheck(args)
    if args.command == "load":
        from .load import run as run_load

        return run_load(args)
    if args.command == "indexes":
        from .indexes import run as run_indexes

        return run_indexes(args)
    if args.command in ("model", "eval"):
        from ..models.cli import run as run_model

        return run_model(args)
    if args.command == "launch":
        from ..cluster.cli import run as run_launch

        return run_launch(args)
    from ..stack.cli import run as run_stack

    return run_stack(args)
