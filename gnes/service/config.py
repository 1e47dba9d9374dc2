"""Everything a service is told on its command line, as one typed record."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

from .sockets import DEFAULT_HWM, SocketSpec, SocketType


@dataclass
class ServiceConfig:
    name: str = ""
    port_in: int = 0
    port_out: int = 0
    host_in: str = "127.0.0.1"
    host_out: str = "127.0.0.1"
    socket_in: str = "PULL_BIND"
    socket_out: str = "PUSH_BIND"
    port_ctrl: int = 0  # 0: any free port; status_info() and the ready log line say which
    host_ctrl: str = "127.0.0.1"
    hwm: int = DEFAULT_HWM
    mode: str = "ANY"
    yaml_path: str = ""
    dump_path: str = ""
    # encoders: the named model they serve (empty: the default model) and where it comes from
    model_name: str = ""
    plugin: str = ""
    package: str = ""
    # proxies
    proxy_type: str = "ProxyService"
    batch_size: int = 0
    unk_msg_route: str = "DEFAULT"
    port_broadcast: int = 0
    host_broadcast: str = "127.0.0.1"
    reduce_timeout: float = 10.0
    index_timeout: float = 600.0
    max_pending: int = 10000
    hold_timeout: float = 30.0  # middleman: seconds a write waits for its shard to come back
    # frontend
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 8800
    max_doc_bytes: int = 1 << 20
    max_docs_per_request: int = 10000
    port_metrics: int = -1  # frontend: Prometheus /metrics on host_ctrl; -1: none, 0: any free port
    token_file: str = ""  # frontend, http: tokens and roles (gnes/auth/tokens.py); none: open
    # indexer
    save_interval: float = 0.0
    port_direct: int = -1  # -1: no direct socket; 0: any free port
    host_direct: str = "127.0.0.1"
    discovery: str = ""
    rank: int = 0
    shard_id: str = ""  # stable id in the placement; default $TASK_SLOT, else kept in --dump_path
    leave_timeout: float = 300.0  # seconds a shard asked to stop may spend handing its documents over

    @property
    def in_spec(self) -> SocketSpec:
        return SocketSpec(SocketType.parse(self.socket_in), self.host_in, self.port_in)

    @property
    def out_spec(self) -> SocketSpec:
        return SocketSpec(SocketType.parse(self.socket_out), self.host_out, self.port_out)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServiceConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in known and v is not None})
