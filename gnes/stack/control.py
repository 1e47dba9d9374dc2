"""The control channel of a running ``gnes stack``: ``gnes stack scale`` (or any client) asks it to change
replica counts, or for the processes it runs.

The stack listens on a loopback TCP port and writes ``<workdir>/stack.json`` (mode 0600) with that port, its
pid and a random token; a request must carry the token, so only who can read the work dir can steer the
stack. TCP rather than a unix socket: a socket path in a deep work dir would pass the 108-byte limit.
One request per connection, one JSON line each way.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
from pathlib import Path
from typing import Any

from gnes.stack.local import LocalStack

__all__ = ["STATE_FILE", "ControlError", "ControlServer", "request"]

STATE_FILE = "stack.json"
_MAX_LINE = 1 << 20
_MODEL_OPS = ("model_add", "model_remove", "model_list")


class ControlError(RuntimeError):
    """No running stack answered, or it refused the request; the message says why."""


class ControlServer:
    """Serve scale and status requests for ``stack`` until :meth:`close`; use as a context manager."""

    def __init__(self, stack: LocalStack, workdir: str | Path) -> None:
        self.stack = stack
        self.path = Path(workdir) / STATE_FILE
        self.token = secrets.token_hex(16)
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.5)  # so that the accept loop sees close() soon
        self.port = int(self._sock.getsockname()[1])
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="gnes-stack-control", daemon=True)

    def __enter__(self) -> ControlServer:
        state = {"pid": os.getpid(), "host": "127.0.0.1", "port": self.port, "token": self.token}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(state, out)
        os.replace(tmp, self.path)  # readers never see half a file
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._thread.join(timeout=5.0)
        self._sock.close()
        try:
            if json.loads(self.path.read_text(encoding="utf-8")).get("token") == self.token:
                self.path.unlink()  # only our own: another stack may have taken the work dir since
        except (OSError, ValueError):
            pass

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            # One at a time: a scale-down may take minutes, and two at once would race for the same slots.
            with conn:
                conn.settimeout(10.0)  # a client that connects and says nothing must not block the channel
                try:
                    answer = self._handle(json.loads(_read_line(conn)))
                except (ValueError, OSError) as exc:
                    answer = {"ok": False, "error": f"bad request: {exc}"}
                try:
                    conn.sendall(json.dumps(answer).encode() + b"\n")
                except OSError:
                    pass  # the client went away; the request was carried out all the same

    def _handle(self, message: dict[str, Any]) -> dict[str, Any]:
        if not secrets.compare_digest(str(message.get("token", "")), self.token):
            return {"ok": False, "error": "wrong token (is this the stack of that work dir?)"}
        op = message.get("op")
        try:
            if op == "scale":
                grace = message.get("stop_grace")
                for service, count in dict(message.get("replicas") or {}).items():
                    self.stack.scale(str(service), int(count), None if grace is None else float(grace))
            elif op in _MODEL_OPS:  # named models as services of the stack (gnes/models/stack_ops.py)
                from gnes.models import stack_ops

                return {"ok": True, **stack_ops.handle(self.stack, message), **self._status()}
            elif op != "status":
                return {"ok": False, "error": f"unknown op {op!r}"}
        except Exception as exc:  # reported to the client; the stack keeps running
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}", **self._status()}
        return {"ok": True, **self._status()}

    def _status(self) -> dict[str, Any]:
        services = dict.fromkeys(spec.service for spec in self.stack.specs)
        pids = {name: popen.pid for name, popen in self.stack.processes.items() if popen.poll() is None}
        # Control addresses: what `gnes client status` and the HTTP /status ask every service.
        controls = {spec.name: [spec.ctrl_host, spec.ctrl_port] for spec in self.stack.specs if spec.name in pids}
        replicas = {service: self.stack.slots(service) for service in services}
        return {"replicas": replicas, "pids": pids, "controls": controls}


def request(workdir: str | Path, message: dict[str, Any], timeout: float | None = 600.0) -> dict[str, Any]:
    """Send ``message`` (``op`` plus its fields) to the stack running in ``workdir``; returns its answer."""
    path = Path(workdir) / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ControlError(f"no running stack in {workdir} ({path} not found)") from exc
    except (OSError, ValueError) as exc:
        raise ControlError(f"cannot read {path}: {exc}") from exc
    try:
        with socket.create_connection((state["host"], int(state["port"])), timeout=timeout) as conn:
            conn.sendall(json.dumps({**message, "token": state["token"]}).encode() + b"\n")
            answer = json.loads(_read_line(conn))
    except (OSError, ValueError) as exc:
        raise ControlError(f"the stack of {workdir} (pid {state.get('pid')}) did not answer: {exc}") from exc
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error")))
    return dict(answer)


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > _MAX_LINE:
            raise ValueError("request too long")
    return data
