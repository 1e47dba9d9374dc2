"""Ask a service's control socket whether it is ready."""

from __future__ import annotations

import json

import zmq

from ..proto import pb


def query_status(host: str, port: int, timeout: float = 3.0, terminate: bool = False) -> pb.Response | None:
    """The service's control answer, or None if it did not answer within timeout seconds."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    sock.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
    try:
        sock.connect(f"tcp://{host}:{port}")
        request = pb.Request()
        request.control.command = pb.Request.ControlRequest.TERMINATE if terminate else pb.Request.ControlRequest.STATUS
        sock.send(request.SerializeToString())
        return pb.Response.FromString(sock.recv())
    except zmq.Again:
        return None
    finally:
        sock.close()


def check_ready(host: str, port: int, timeout: float = 3.0) -> bool:
    response = query_status(host, port, timeout)
    return response is not None and response.control.status == pb.Response.READY


def status_info(host: str, port: int, timeout: float = 3.0) -> dict[str, object] | None:
    response = query_status(host, port, timeout)
    return json.loads(response.control.info_json) if response is not None and response.control.info_json else None


def run(args: object) -> int:
    response = query_status(args.host, args.port, args.timeout)  # type: ignore[attr-defined]
    if response is None:
        print(f"no answer from {args.host}:{args.port} within {args.timeout}s")  # type: ignore[attr-defined]
        return 1
    print(response.control.info_json or pb.Response.Status.Name(response.control.status))
    return 0 if response.control.status == pb.Response.READY else 1
