"""The HTTP service's control socket: STATUS and TERMINATE on --port_ctrl, like every gnes service.

`gnes healthcheck`, the local stack's start order and the Swarm/Kubernetes probes all ask this
socket, so it answers READY only once the service serves HTTP and the pipeline has answered its
start probe: PENDING before, ERROR after a failed start. The reply itself is built by
`answer_control`, the same code as the frontend's and the pipeline services'.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import zmq

from ..proto import pb
from ..service.message import answer_control
from ..service.sockets import bind_port


class ControlSocket:
    """A REP socket watched by the event loop (add_reader), so its replies come from the loop
    thread, which owns the service's state; `state()` is READY, PENDING or ERROR."""

    def __init__(
        self,
        host: str,
        port: int,
        info: Callable[[], dict[str, object]],
        state: Callable[[], int],
        on_terminate: Callable[[], None],
    ) -> None:
        self.host, self.port = host, port
        self._info, self._state, self._on_terminate = info, state, on_terminate
        self._sock: zmq.Socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1

    def open(self, ctx: zmq.Context) -> int:
        """Bind (a free port where port is 0) and start answering; returns the port bound."""
        sock = ctx.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        self.port = bind_port(sock, self.host, self.port)
        self._sock, self._loop = sock, asyncio.get_running_loop()
        self._fd = sock.getsockopt(zmq.FD)
        self._loop.add_reader(self._fd, self._answer)
        self._answer()  # the descriptor signals changes only: look once at what is there already
        return self.port

    def _answer(self) -> None:
        sock = self._sock
        while sock is not None and sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            response, terminate = answer_control(sock.recv(zmq.NOBLOCK), self._info())
            if response.control.status == pb.Response.READY:
                response.control.status = self._state()
            sock.send(response.SerializeToString(), zmq.NOBLOCK)
            if terminate:
                self._on_terminate()

    def close(self) -> None:
        if self._sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self._sock.close()
        self._sock = None
