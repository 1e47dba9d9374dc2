"""Run an expanded stack as local ``gnes`` processes under one :class:`~gnes.supervise.Supervisor`: start in
dependency order, restart per each service's ``deploy.restart_policy``, scale a service, stop cleanly.

A crash costs a restart delay while the stack keeps serving. A process given up (no restart left) breaks the
stack for good: :meth:`LocalStack.wait` then stops everything and returns non-zero, for whatever runs
``gnes stack`` (a shell, systemd) to see."""

from __future__ import annotations

import functools
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TextIO

import gnes
from gnes.service.endpoints import IPC_DIR_ENV
from gnes.stack.argv import port_values
from gnes.stack.compose import ProcessSpec, expand_stack, find_free_ports, flag_value
from gnes.stack.replica import expand_replica
from gnes.supervise import LaunchSpec, ManagedProcess, NotReadyError, ProcessExitedError, RestartPolicy, Supervisor

__all__ = ["LocalStack", "ReadyCheck", "StackStartError", "free_port_overrides"]

ReadyCheck = Callable[[str, int, float], bool]
"""``check(host, ctrl_port, timeout) -> bool``: does the service answer READY on its control port?"""

ReplicaFactory = Callable[..., ProcessSpec]  # (service, slot, taken_ports=...), see replica.expand_replica

# Commands whose processes may use every core: the encoders are the compute of a stack (torch,
# ONNX); every other process gets one OpenMP thread (see LocalStack._launch).
_PARALLEL_COMMANDS = frozenset({"encode"})
DEFAULT_STOP_GRACE = 10.0  # for services without stop_grace_period
DEFAULT_SCALE_GRACE = 120.0  # a shard scaled away first hands its documents over to the others

# The port variables of compose/gnes-swarm.yml: tests and benchmarks set each to a free
# port, so that several stacks (or a stack beside other work) never collide.
PORT_VARIABLES = (
    "GRPC_PORT",
    "HTTP_PORT",
    "INCOME_PROXY_IN",
    "INCOME_PROXY_OUT",
    "MIDDLEMAN_PROXY_IN",
    "MIDDLEMAN_PROXY_OUT",
    "MIDDLEMAN_PROXY_BROADCAST",
    "OUTGOING_PROXY_IN",
    "OUTGOING_PROXY_OUT",
    "PREPROCESS_IN",
)


def free_port_overrides(**extra: str) -> dict[str, str]:
    """Stack-file variables that put every port of the stack on a free loopback port, plus `extra`."""
    overrides = dict(zip(PORT_VARIABLES, map(str, find_free_ports(len(PORT_VARIABLES))), strict=True))
    # The entry points (frontend, http) send to the income proxy unless a preprocessor is put first.
    overrides["PIPELINE_IN_PORT"] = overrides["INCOME_PROXY_IN"]
    overrides.update(extra)
    return overrides


def _fresh_ipc_dir() -> Path:
    """A new folder for the stack's Unix sockets: short (a socket path holds about 100 bytes), named
    after this process, so that the folders of stacks killed with kill -9 (their pid gone) are
    removed here instead of piling up."""
    parent = Path("/tmp") if os.path.isdir("/tmp") else Path(tempfile.gettempdir())
    for old in parent.glob("gnes-ipc-*-*"):
        pid = old.name.split("-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"gnes-ipc-{os.getpid()}-", dir=parent))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class StackStartError(RuntimeError):
    """A process of the stack exited or did not become ready in time; the message holds its last log lines."""


class LocalStack:
    """The processes of one stack on this machine; use as ``with LocalStack(specs) as stack: stack.wait()``.

    ``stop_grace`` (None: each service's ``stop_grace_period``, else 10 s) is the wait between SIGTERM and
    SIGKILL when the stack stops; ``scale_grace`` the same when :meth:`scale` removes replicas.
    """

    def __init__(
        self,
        specs: Iterable[ProcessSpec],
        *,
        workdir: str | Path = ".gnes-local",
        quiet: bool = False,
        start_timeout: float = 120.0,
        stop_grace: float | None = None,
        scale_grace: float = DEFAULT_SCALE_GRACE,
        output: TextIO | None = None,
        ready_check: ReadyCheck | None = None,
        replica_factory: ReplicaFactory | None = None,
        ipc: bool | None = None,
    ) -> None:
        self.specs = list(specs)  # the running replicas (after start), in start order
        self.workdir = Path(workdir)
        self.quiet = quiet
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.scale_grace = scale_grace
        self._output = output
        self._ready_check = ready_check
        self._replica_factory = replica_factory
        # The processes of a local stack share this machine: their pipeline sockets also bind Unix
        # domain sockets in one fresh folder, and peers connect there (gnes/service/endpoints.py).
        # GNES_IPC=0 (or ipc=False) keeps them on TCP alone; a GNES_IPC_DIR already set is used as it is.
        self.ipc = os.environ.get("GNES_IPC", "1") != "0" if ipc is None else ipc
        self._ipc_dir: Path | None = None
        self._supervisor = Supervisor(on_event=self._emit, on_give_up=self._gave_up)
        self._live: dict[str, ManagedProcess] = {}  # supervised (running or waiting for a restart)
        self._launched: dict[str, ManagedProcess] = {}  # everything launched since start()
        self._given_up: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()
        self._stopped = threading.Event()
        self._scale_lock = threading.Lock()
        self._write_lock = threading.Lock()

    @classmethod
    def from_file(
        cls,
        compose_file: str | Path,
        *,
        workdir: str | Path = ".gnes-local",
        overrides: Mapping[str, str] | None = None,
        stack_name: str = "gnes",
        **options: object,
    ) -> LocalStack:
        """Expand ``compose_file`` (see :func:`gnes.stack.compose.expand_stack`) into a stack, not yet started;
        ``options`` are those of the constructor. Such a stack can also scale a service up."""
        where = {"workdir": workdir, "overrides": overrides, "stack_name": stack_name}
        factory = functools.partial(expand_replica, compose_file, **where)  # type: ignore[arg-type]
        return cls(expand_stack(compose_file, **where), workdir=workdir, replica_factory=factory, **options)  # type: ignore[arg-type]

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        """Process name (``service.slot``) -> current Popen of every process launched since start() (also
        after stop() or a scale-down, so callers can check the exit codes)."""
        return {name: proc.popen for name, proc in self._launched.items() if proc.popen is not None}

    def slots(self, service: str) -> list[int]:
        """The replica slots of ``service`` that are supervised now (running or about to be restarted)."""
        return sorted(spec.slot for spec in self.specs if spec.service == service and spec.name in self._live)

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
        if self._live:
            raise RuntimeError("this stack is already running")
        self._prepare(self.specs)
        if self.ipc and IPC_DIR_ENV not in os.environ and self._ipc_dir is None:
            self._ipc_dir = _fresh_ipc_dir()
        self._launched = {}
        self._stopped.clear()
        while not self._given_up.empty():
            self._given_up.get()
        groups: dict[str, list[ProcessSpec]] = {}
        for spec in self.specs:
            groups.setdefault(spec.service, []).append(spec)
        try:
            deadline = time.monotonic() + self.start_timeout
            for service_specs in groups.values():
                # Replicas of one service start together; dependants only once all of them are ready.
                self._start_ready(service_specs, deadline)
        except BaseException:  # KeyboardInterrupt included: never leave processes behind
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM every process group (reverse start order), SIGKILL what is left after the grace."""
        procs = list(reversed(self._live.values()))
        self._live = {}
        self._stopped.set()
        graces = {spec.name: self._stop_grace(spec) for spec in self.specs}
        for proc in self._supervisor.terminate(procs, DEFAULT_STOP_GRACE, graces=graces):
            self._emit(f"{proc.name} did not stop within {graces.get(proc.name, DEFAULT_STOP_GRACE):g}s; killed it")
        if self._ipc_dir is not None:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)
            self._ipc_dir = None

    def wait(self) -> int:
        """Keep the stack up (crashed processes restart per their policy) until Ctrl-C/SIGTERM (returns 0) or
        until a process is given up (returns its exit code, 128+N if killed by signal N); then stop it.
        Also returns 0 when another thread stops the stack."""
        if not self._live:
            raise RuntimeError("the stack is not running; call start() first")
        try:
            while True:
                try:
                    name, code = self._given_up.get(timeout=0.5)
                except queue.Empty:
                    if self._stopped.is_set():
                        return 0
                    continue
                self._emit(f"{name} has no restart left: the stack cannot serve without it; stopping the stack")
                self.stop()
                return code if code > 0 else 128 - code if code < 0 else 1  # an exit with 0 is still an end
        except KeyboardInterrupt:
            self.stop()
            return 0

    def scale(self, service: str, replicas: int, stop_grace: float | None = None) -> list[int]:
        """Run ``replicas`` replicas of ``service``; returns their slots. New replicas take the lowest free
        slots and are ready on return; removed ones (highest slots first) get SIGTERM and ``stop_grace``
        (default ``scale_grace``) seconds to exit on their own before SIGKILL."""
        if replicas < 0:
            raise ValueError(f"replicas must not be negative, got {replicas}")
        with self._scale_lock:
            if not self._live:
                raise RuntimeError("the stack is not running")
            current = self.slots(service)
            if service not in {spec.service for spec in self.specs} and self._replica_factory is None:
                raise ValueError(f"the stack has no service {service!r}")
            if replicas > len(current):
                free = [slot for slot in range(1, replicas + len(current) + 1) if slot not in current]
                self._scale_up(service, free[: replicas - len(current)])
                return self.slots(service)
            victims = [self._live[f"{service}.{slot}"] for slot in current[replicas:]][::-1]
            grace = self.scale_grace if stop_grace is None else stop_grace
            if victims:
                self._emit(f"scaling {service} to {replicas}: stopping {', '.join(p.name for p in victims)}")
            for proc in self._supervisor.terminate(victims, grace):
                self._emit(f"{proc.name} did not exit within {grace:g}s of SIGTERM; killed it")
            self._forget({proc.name for proc in victims})
            return self.slots(service)

    def add(self, specs: list[ProcessSpec]) -> None:
        """Start new services (a named model's encoders, gnes/models/stack_ops.py) in the running stack;
        they are ready on return, or stopped again and the reason raised."""
        with self._scale_lock:
            if not self._live:
                raise RuntimeError("the stack is not running")
            self._emit(f"adding {', '.join(spec.name for spec in specs)}")
            self._prepare(specs)
            self._start_ready(specs, time.monotonic() + self.start_timeout, on_failure_stop=True)

    def _scale_up(self, service: str, slots: list[int]) -> None:
        if self._replica_factory is None:
            raise RuntimeError("scaling up needs the stack file: create the stack with LocalStack.from_file")
        taken = {port for spec in self.specs for port in (*port_values(spec.argv), spec.ctrl_port)}
        specs = []
        for slot in slots:
            spec = self._replica_factory(service, slot, taken_ports=taken)
            taken.add(spec.ctrl_port)
            specs.append(spec)
        self._emit(f"scaling {service} up: starting {', '.join(spec.name for spec in specs)}")
        self._prepare(specs)
        self._start_ready(specs, time.monotonic() + self.start_timeout, on_failure_stop=True)

    def _start_ready(self, specs: list[ProcessSpec], deadline: float, on_failure_stop: bool = False) -> None:
        # Imported on use: the health check pulls in zmq and the service code, which --print does not need.
        from gnes.cli.healthcheck import check_ready

        check = self._ready_check or check_ready
        started = [(spec, self._launch(spec)) for spec in specs]
        try:
            for spec, proc in started:
                try:
                    proc.wait_ready(lambda t, s=spec: check(s.ctrl_host, s.ctrl_port, t), deadline - time.monotonic())
                except (ProcessExitedError, NotReadyError) as exc:
                    raise StackStartError(f"{exc} (control port {spec.ctrl_host}:{spec.ctrl_port})") from exc
                # Only a ready process is restarted: one that cannot even start fails the start at once.
                proc.policy = spec.restart
        except BaseException:
            if on_failure_stop:
                self._supervisor.terminate([proc for _, proc in started], DEFAULT_STOP_GRACE)
                self._forget({spec.name for spec in specs})
            raise

    def _forget(self, names: set[str]) -> None:
        """Replicas that are gone for good (scaled away): no longer part of the stack."""
        for name in names:
            self._live.pop(name, None)
        self.specs = [spec for spec in self.specs if spec.name not in names]

    def _launch(self, spec: ProcessSpec) -> ManagedProcess:
        # GNES_STACK_WORKDIR: a service's status overview (GET /status) finds the stack's processes through it.
        env = {**os.environ, "GNES_STACK_WORKDIR": str(self.workdir.resolve()), **spec.env, "PYTHONUNBUFFERED": "1"}
        if "OMP_NUM_THREADS" not in env and (spec.argv[0] if spec.argv else "") not in _PARALLEL_COMMANDS:
            # Every process of a local stack shares this machine's cores. A shard's faiss search of one
            # query woke a second OpenMP thread, which waited for a core that other services held: on
            # 2 cores a 10,000 x 64-d flat search took 836 us with 2 threads (OMP_WAIT_POLICY=PASSIVE)
            # against 408 us with one (idle between queries). A setting from the environment wins.
            env["OMP_NUM_THREADS"] = "1"
        # The children must import the same gnes as this process, installed or not.
        package_root = str(Path(gnes.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        if self._ipc_dir is not None:
            env.setdefault(IPC_DIR_ENV, str(self._ipc_dir))
        launch = LaunchSpec(
            spec.name,
            [sys.executable, "-m", "gnes", *spec.argv],
            env=env,
            log_file=self.workdir / "logs" / f"{spec.name}.log" if self.quiet else None,
            echo=None if self.quiet else lambda line, name=spec.name: self._write(f"{name} | {line}\n"),
        )
        if spec not in self.specs:  # a new replica; it replaces a given-up one of the same slot
            self.specs = [*(s for s in self.specs if s.name != spec.name), spec]
        # No restarts until it is ready (see _start_ready).
        proc = self._supervisor.start(launch, RestartPolicy.never())
        self._live[spec.name] = self._launched[spec.name] = proc
        return proc

    def _prepare(self, specs: list[ProcessSpec]) -> None:
        missing = sorted({str(path) for spec in specs for path in spec.config_files if not path.is_file()})
        if missing:
            raise StackStartError(f"config file(s) of the stack not found: {', '.join(missing)}")
        for spec in specs:
            for directory in spec.volume_dirs:
                directory.mkdir(parents=True, exist_ok=True)

    def _stop_grace(self, spec: ProcessSpec) -> float:
        if self.stop_grace is not None:
            return self.stop_grace
        return DEFAULT_STOP_GRACE if spec.stop_grace is None else spec.stop_grace

    def _gave_up(self, proc: ManagedProcess, code: int) -> None:
        self._live.pop(proc.name, None)
        self._given_up.put((proc.name, code))

    def _emit(self, message: str) -> None:
        self._write(f"gnes stack | {message}\n")

    def _write(self, text: str) -> None:
        with self._write_lock:
            stream = self._output or sys.stdout  # looked up late: sys.stdout may be replaced (pytest capture)
            stream.write(text)
            stream.flush()
