"""Every `gnes` subcommand and flag. The stack file of the original GNES is accepted as written."""

from __future__ import annotations

import argparse

from ..service.proxy import PROXY_TYPES
from ..service.sockets import SocketType

_SOCKETS = list(SocketType.__members__)


def _service_flags(p: argparse.ArgumentParser, socket_in: str, socket_out: str) -> None:
    g = p.add_argument_group("sockets")
    g.add_argument("--port_in", type=int, default=0, help="port of the input socket")
    g.add_argument("--port_out", type=int, default=0, help="port of the output socket")
    g.add_argument("--host_in", default="127.0.0.1", help="host the input socket connects to (CONNECT types)")
    g.add_argument("--host_out", default="127.0.0.1", help="host the output socket connects to (CONNECT types)")
    g.add_argument("--socket_in", default=socket_in, choices=_SOCKETS, type=str.upper, help="input socket type")
    g.add_argument("--socket_out", default=socket_out, choices=_SOCKETS, type=str.upper, help="output socket type")
    g.add_argument("--port_ctrl", type=int, default=0, help="control port answering STATUS/TERMINATE (0: any free)")
    g.add_argument("--host_ctrl", default="127.0.0.1", help="address the control socket binds (0.0.0.0 in containers)")
    g.add_argument("--hwm", type=int, default=1000, help="high-water mark: messages queued per socket before waiting")
    s = p.add_argument_group("service")
    s.add_argument("--name", default="", help="service name shown in logs and routes")
    s.add_argument(
        "--mode",
        default="ANY",
        type=str.upper,
        choices=["ANY", "INDEX", "QUERY", "TRAIN"],
        help="request kind this service takes; others are answered with an error (default: all)",
    )
    s.add_argument("--yaml_path", default="", help="YAML file of the component (a !ClassName tag)")
    s.add_argument(
        "--dump_path",
        default="",
        help="directory where the service keeps its state (indexer data); encoders keep none and ignore it",
    )
    s.add_argument("--verbose", action="store_true", help="log every request")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gnes", description="gnes: Generic Neural Elastic Search")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("proxy", help="start a proxy (forward, map, shard fan-out or reduce)")
    _service_flags(p, "PULL_BIND", "PUSH_BIND")
    p.add_argument("--proxy_type", default="ProxyService", choices=sorted(PROXY_TYPES), help="what the proxy does")
    p.add_argument("--batch_size", type=int, default=0, help="MapProxyService: documents per batch (0: no split)")
    p.add_argument(
        "--unk_msg_route",
        default="DEFAULT",
        type=str.upper,
        choices=["DEFAULT", "ERROR", "DROP"],
        help="a message this proxy has no rule for: pass on (DEFAULT), answer with an error, or drop",
    )
    p.add_argument("--port_broadcast", type=int, default=0, help="ShardProxyService: the port its shards connect to")
    p.add_argument(
        "--host_broadcast",
        default="127.0.0.1",
        help="ShardProxyService: address that socket binds (0.0.0.0 in containers)",
    )
    p.add_argument("--reduce_timeout", type=float, default=10.0, help="seconds a query waits for all its shards")
    p.add_argument("--index_timeout", type=float, default=600.0, help="seconds an index request waits for all parts")
    p.add_argument("--max_pending", type=int, default=10000, help="requests the reducer holds at most")
    p.add_argument(
        "--hold_timeout",
        type=float,
        default=30.0,
        help="ShardProxyService: seconds a write waits for its shard to come back before it is answered with an error",
    )

    p = sub.add_parser("encode", help="start an encoder")
    _service_flags(p, "PULL_CONNECT", "PUSH_CONNECT")
    m = p.add_argument_group("named model (see `gnes model` and docs/models.md)")
    m.add_argument("--model_name", default="", help="serve this model name (its own logical index); empty: default")
    m.add_argument("--plugin", default="", help="a Python file defining get_embed_fn() (instead of --yaml_path)")
    m.add_argument("--package", default="", help="an importable package defining get_embed_fn()")

    p = sub.add_parser("preprocess", help="start a preprocessor: documents into chunks before the encoders")
    _service_flags(p, "PULL_BIND", "PUSH_CONNECT")

    p = sub.add_parser("index", help="start an indexer shard")
    _service_flags(p, "PULL_CONNECT", "PUSH_CONNECT")
    p.add_argument("--host_broadcast", default="127.0.0.1", help="host of the middleman (ShardProxyService)")
    p.add_argument("--port_broadcast", type=int, default=0, help="the middleman's --port_broadcast: the shard link")
    p.add_argument(
        "--shard_id",
        default="",
        help="stable name of this shard in the placement (default: $TASK_SLOT, else one kept in --dump_path)",
    )
    p.add_argument(
        "--leave_timeout",
        type=float,
        default=300.0,
        help="seconds a shard asked to stop (SIGTERM) may spend handing its documents to the others",
    )
    p.add_argument("--save_interval", type=float, default=0.0, help="seconds between periodic saves (0: on stop)")
    p.add_argument(
        "--port_direct",
        type=int,
        default=-1,
        help="port where IndexClient and `gnes load` reach this shard directly (0: any free; -1: none)",
    )
    p.add_argument("--host_direct", default="127.0.0.1", help="address the direct port binds (0.0.0.0: all)")
    p.add_argument("--discovery", default="", help="discovery file to register this shard in once it listens")
    p.add_argument("--rank", type=int, default=0, help="this shard's rank in the discovery file")

    p = sub.add_parser("frontend", help="start the gRPC frontend")
    _service_flags(p, "SUB_CONNECT", "PUSH_CONNECT")
    p.add_argument("--grpc_host", default="127.0.0.1", help="address the gRPC server binds")
    p.add_argument("--grpc_port", type=int, default=8800, help="gRPC port")
    p.add_argument("--reduce_timeout", type=float, default=10.0, help="seconds a query waits for its answer")
    p.add_argument("--index_timeout", type=float, default=600.0, help="seconds an index request waits")
    p.add_argument("--max_pending", type=int, default=10000, help="requests in flight at most")
    p.add_argument("--max_doc_bytes", type=int, default=1 << 20, help="largest document accepted, in bytes")
    p.add_argument("--max_docs_per_request", type=int, default=10000, help="most documents in one request")
    p.add_argument(
        "--port_metrics",
        type=int,
        default=-1,
        help="serve Prometheus /metrics (gRPC calls, per-stage latency) on --host_ctrl at this port;"
        " -1: none (default), 0: any free port (status shows it)",
    )
    p.add_argument(
        "--token_file",
        default="",
        help="file of 'TOKEN ROLE' lines (roles: read, admin) or JSON; also $GNES_TOKENS='TOKEN:ROLE,...'. "
        "None configured: calls are open",
    )

    p = sub.add_parser("http", help="start the HTTP service (embed, search, index; FastAPI with uvicorn)")
    _service_flags(p, "SUB_CONNECT", "PUSH_CONNECT")
    _http_flags(p)

    p = sub.add_parser("client", help="index files or search through a running frontend")
    p.add_argument("--grpc_host", default="127.0.0.1", help="host of the gRPC frontend")
    p.add_argument("--grpc_port", type=int, default=8800, help="port of the gRPC frontend")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each answer")
    csub = p.add_subparsers(dest="client_command", required=True, metavar="ACTION")
    c = csub.add_parser("index", help="index FILE (one document per line), every file in a folder, or --images DIR")
    c.add_argument("path", nargs="?", help="a text file or a folder of text files")
    c.add_argument("--images", metavar="DIR", help="index every file under DIR as an image (PNG/JPEG, ...)")
    c.add_argument("--max_file_bytes", type=int, default=1 << 20, help="--images: larger files are reported, not sent")
    c.add_argument("--batch_size", type=int, help="documents per request (default: 100 texts, 16 images)")
    c.add_argument("--start_id", type=int, default=0, help="doc_id of the first document")
    c = csub.add_parser("query", help="search and print ranked documents with scores")
    c.add_argument("text", nargs="*", help="query text (several arguments: several queries)")
    c.add_argument("--image", action="append", default=[], metavar="FILE", help="query by this image (repeatable)")
    c.add_argument("--top_k", type=int, default=10, help="results per query")
    c.add_argument(
        "--chunk_reduce",
        default="",
        choices=["", "max", "mean", "weighted", "doc"],
        help="where documents were indexed in chunks: how chunk scores make a document's (default max; "
        "doc: the documents' own vectors)",
    )
    c = csub.add_parser(
        "status",
        help="every service: ready or not, model and dimension, documents per shard and index "
        "(services are found through the stack in ./.gnes-local or $GNES_STACK_WORKDIR, and $GNES_STATUS_PEERS)",
    )
    c.add_argument("--json", action="store_true", help="print the overview as JSON")

    p = sub.add_parser("healthcheck", help="exit 0 if a service answers READY on its control port")
    p.add_argument("--host", default="127.0.0.1", help="host of the service's control socket")
    p.add_argument("--port", type=int, required=True, help="the service's --port_ctrl")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")

    from ..stack.cli import add_parser as add_stack_parser

    add_stack_parser(sub)
    from ..cluster.cli import add_parser as add_launch_parser

    add_launch_parser(sub)
    from .load import add_parser as add_load_parser

    add_load_parser(sub)
    from .indexes import add_parser as add_indexes_parser

    add_indexes_parser(sub)
    from ..models.cli import add_parser as add_model_parser  # `gnes model ...` and `gnes eval`

    add_model_parser(sub)
    return parser


def _http_flags(p: argparse.ArgumentParser) -> None:
    h = p.add_argument_group("http")
    h.add_argument("--http_host", default="127.0.0.1", help="address the HTTP server binds (0.0.0.0 in containers)")
    h.add_argument("--http_port", type=int, default=8080, help="HTTP port")
    h.add_argument("--model_name", default="default", help="the name /apply/{model} and /searchwith/{model} answer to")
    h.add_argument("--reduce_timeout", type=float, default=10.0, help="seconds a query or embedding waits")
    h.add_argument("--index_timeout", type=float, default=600.0, help="seconds an index request waits")
    h.add_argument("--max_pending", type=int, default=10000, help="requests in flight at most")
    h.add_argument("--max_doc_bytes", type=int, default=1 << 20, help="largest document indexed, in bytes")
    h.add_argument("--max_docs_per_request", type=int, default=10000, help="most documents in one request")
    h.add_argument("--token_file", default="", help="tokens and roles, as for the frontend; none: open")
    f = p.add_argument_group("flow control")
    f.add_argument("--embedding_dim", type=int, default=0, help="the model's dimension, checked at start (0: any)")
    f.add_argument("--max_batch_size", type=int, default=64, help="texts per EMBED request to the pipeline")
    f.add_argument("--queue_length", type=int, default=1024, help="texts held before callers get 429")
    f.add_argument("--max_input_bytes", type=int, default=8192, help="longest text, in UTF-8 bytes")
    f.add_argument("--truncate", action="store_true", help="cut longer texts to --max_input_bytes instead of 413")
    f.add_argument("--batch_wait_ms", type=float, default=5.0, help="ms a text waits for others to join its batch")
    f.add_argument("--max_batches_in_flight", type=int, default=4, help="EMBED requests in the pipeline at once")
    f.add_argument("--retry_after_s", type=int, default=1, help="the Retry-After of a 429")
    f.add_argument("--probe_timeout_s", type=float, default=120.0, help="seconds the start probe waits for the model")
