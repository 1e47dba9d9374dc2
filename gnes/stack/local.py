"""Run an expanded stack as local ``gnes`` processes: start in dependency order, stream logs, stop cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TextIO

import gnes
from gnes.stack.compose import ProcessSpec, expand_stack, find_free_ports, flag_value

__all__ = ["LocalStack", "ReadyCheck", "StackStartError"]

ReadyCheck = Callable[[str, int, float], bool]
"""``check(host, ctrl_port, timeout) -> bool``: does the service answer READY on its control port?"""

_TAIL_LINES = 40


# The port variables of compose/gnes-swarm.yml: tests and benchmarks set each to a free
# port, so that several stacks (or a stack beside other work) never collide.
PORT_VARIABLES = (
    "GRPC_PORT",
    "INCOME_PROXY_IN",
    "INCOME_PROXY_OUT",
    "MIDDLEMAN_PROXY_IN",
    "MIDDLEMAN_PROXY_OUT",
    "MIDDLEMAN_PROXY_BROADCAST",
    "OUTGOING_PROXY_IN",
    "OUTGOING_PROXY_OUT",
)


def free_port_overrides(**extra: str) -> dict[str, str]:
    """Stack-file variables that put every port of the stack on a free loopback port, plus `extra`."""
    overrides = dict(zip(PORT_VARIABLES, map(str, find_free_ports(len(PORT_VARIABLES))), strict=True))
    overrides.update(extra)
    return overrides


class StackStartError(RuntimeError):
    """A process of the stack exited or did not become ready in time; the message holds its last log lines."""


@dataclass
class _Running:
    spec: ProcessSpec
    proc: subprocess.Popen[bytes]
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_TAIL_LINES))
    reader: threading.Thread | None = None


def _default_ready_check() -> ReadyCheck:
    # Imported on use: the health check pulls in zmq and the service code, which --print does not need.
    from gnes.cli.healthcheck import check_ready

    return check_ready


class LocalStack:
    """The processes of one stack on this machine; use as ``with LocalStack(specs) as stack: stack.wait()``."""

    def __init__(
        self,
        specs: Iterable[ProcessSpec],
        *,
        workdir: str | Path = ".gnes-local",
        quiet: bool = False,
        start_timeout: float = 120.0,
        stop_grace: float = 10.0,
        output: TextIO | None = None,
        ready_check: ReadyCheck | None = None,
    ) -> None:
        self.specs = list(specs)
        self.workdir = Path(workdir)
        self.quiet = quiet
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self._output = output
        self._ready_check = ready_check
        self._running: list[_Running] = []  # started and not yet stopped, in start order
        self._launched: dict[str, subprocess.Popen[bytes]] = {}  # everything the last start() launched
        self._write_lock = threading.Lock()

    @classmethod
    def from_file(
        cls,
        compose_file: str | Path,
        *,
        workdir: str | Path = ".gnes-local",
        overrides: Mapping[str, str] | None = None,
        stack_name: str = "gnes",
        quiet: bool = False,
        start_timeout: float = 120.0,
        stop_grace: float = 10.0,
        output: TextIO | None = None,
        ready_check: ReadyCheck | None = None,
    ) -> LocalStack:
        """Expand ``compose_file`` (see :func:`gnes.stack.compose.expand_stack`) into a stack, not yet started."""
        specs = expand_stack(compose_file, workdir=workdir, overrides=overrides, stack_name=stack_name)
        return cls(
            specs,
            workdir=workdir,
            quiet=quiet,
            start_timeout=start_timeout,
            stop_grace=stop_grace,
            output=output,
            ready_check=ready_check,
        )

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        """Process name (``service.slot``) -> Popen of every process the last start() launched (also after
        stop(), so callers can check the exit codes)."""
        return dict(self._launched)

    def endpoints(self) -> dict[str, str]:
        """Service name -> ``host:port`` of its gRPC server, for every service with a ``--grpc_port``."""
        found: dict[str, str] = {}
        for spec in self.specs:
            port = flag_value(spec.argv, "--grpc_port")
            if port is not None and spec.service not in found:
                found[spec.service] = f"{flag_value(spec.argv, '--grpc_host') or '127.0.0.1'}:{port}"
        return found

    def start(self) -> None:
        """Start every service after its dependencies are ready; on any failure stop what was started."""
        if self._running:
            raise RuntimeError("this stack is already running")
        check = self._ready_check or _default_ready_check()
        self._prepare()
        self._launched = {}
        deadline = time.monotonic() + self.start_timeout
        groups: dict[str, list[ProcessSpec]] = {}
        for spec in self.specs:
            groups.setdefault(spec.service, []).append(spec)
        try:
            for service_specs in groups.values():
                # Replicas of one service start together; dependants only once all of them are ready.
                started = [self._launch(spec) for spec in service_specs]
                for running in started:
                    self._wait_ready(running, check, deadline)
        except BaseException:  # KeyboardInterrupt included: never leave processes behind
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM every process group (reverse start order), SIGKILL what is left after ``stop_grace``."""
        running, self._running = list(reversed(self._running)), []
        if not running:
            return
        for item in running:
            _signal_group(item.proc, signal.SIGTERM)
        try:
            deadline = time.monotonic() + self.stop_grace
            for item in running:
                _wait_until(item.proc, deadline)
        finally:
            # Reached also on a second Ctrl-C during the grace period: then everything is killed at once.
            for item in running:
                if item.proc.poll() is None:
                    self._emit(f"{item.spec.name} did not stop within {self.stop_grace:g}s; killing it")
                # The group may hold children of the service even when the service itself has exited.
                _signal_group(item.proc, signal.SIGKILL)
                item.proc.wait()
            for item in running:
                if item.reader is not None:
                    item.reader.join(timeout=2.0)

    def wait(self) -> int:
        """Block until Ctrl-C (returns 0) or until a process exits (returns non-zero); the stack is stopped."""
        if not self._running:
            raise RuntimeError("the stack is not running; call start() first")
        try:
            while True:
                for item in self._running:
                    code = item.proc.poll()
                    if code is not None:
                        self._emit(f"{item.spec.name} exited with code {code}; stopping the stack")
                        self.stop()
                        # Killed by signal N -> 128+N like a shell; an exit with 0 is still an unexpected end.
                        return code if code > 0 else 128 - code if code < 0 else 1
                time.sleep(0.5)
        except KeyboardInterrupt:
            self.stop()
            return 0

    def _prepare(self) -> None:
        missing = sorted({str(path) for spec in self.specs for path in spec.config_files if not path.is_file()})
        if missing:
            raise StackStartError(f"config file(s) of the stack not found: {', '.join(missing)}")
        for spec in self.specs:
            for directory in spec.volume_dirs:
                directory.mkdir(parents=True, exist_ok=True)
        if self.quiet:
            (self.workdir / "logs").mkdir(parents=True, exist_ok=True)

    def _launch(self, spec: ProcessSpec) -> _Running:
        env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
        # The children must import the same gnes as this process, installed or not.
        package_root = str(Path(gnes.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(
            [sys.executable, "-m", "gnes", *spec.argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            # Own process group: Ctrl-C in the terminal reaches only us, and stop() can signal the whole group.
            start_new_session=True,
        )
        running = _Running(spec, proc)
        self._running.append(running)
        self._launched[spec.name] = proc
        log = (self.workdir / "logs" / f"{spec.name}.log").open("w", encoding="utf-8") if self.quiet else None
        running.reader = threading.Thread(target=self._pump, args=(running, log), name=f"log-{spec.name}", daemon=True)
        running.reader.start()
        return running

    def _pump(self, running: _Running, log: IO[str] | None) -> None:
        assert running.proc.stdout is not None  # always a pipe, see _launch
        try:
            for raw in running.proc.stdout:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                running.tail.append(line)
                if log is not None:
                    log.write(line + "\n")
                    log.flush()
                else:
                    self._write(f"{running.spec.name} | {line}\n")
        finally:
            running.proc.stdout.close()
            if log is not None:
                log.close()

    def _wait_ready(self, running: _Running, check: ReadyCheck, deadline: float) -> None:
        spec = running.spec
        while True:
            code = running.proc.poll()
            if code is not None:
                if running.reader is not None:
                    running.reader.join(timeout=2.0)  # let the last lines of the dead process arrive
                raise StackStartError(f"{spec.name} exited with code {code} before it was ready{_tail(running)}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StackStartError(
                    f"{spec.name} was not ready within {self.start_timeout:g}s "
                    f"(control port {spec.ctrl_host}:{spec.ctrl_port}){_tail(running)}"
                )
            if check(spec.ctrl_host, spec.ctrl_port, min(1.0, remaining)):
                return
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _emit(self, message: str) -> None:
        self._write(f"gnes stack | {message}\n")

    def _write(self, text: str) -> None:
        with self._write_lock:
            stream = self._output or sys.stdout  # looked up late: sys.stdout may be replaced (pytest capture)
            stream.write(text)
            stream.flush()


def _tail(running: _Running) -> str:
    lines = list(running.tail)
    if not lines:
        return " (it printed nothing)"
    return f"; its last {len(lines)} log lines:\n" + "\n".join(f"  {line}" for line in lines)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session made the pid the group id
    except ProcessLookupError:
        pass  # the whole group has already exited: nothing left to signal


def _wait_until(proc: subprocess.Popen[bytes], deadline: float) -> None:
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return  # still running: stop() kills it
