"""The supervisor: one long-lived thread forks every child, watches them, and restarts them per policy."""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import TypeVar

from gnes.supervise.policy import RestartPolicy
from gnes.supervise.process import LaunchSpec, ManagedProcess, describe_exit

__all__ = ["Supervisor"]

T = TypeVar("T")
log = logging.getLogger(__name__)


class Supervisor:
    """Processes that are started, watched and stopped together.

    Every fork happens on the supervisor's own thread, whoever asks for it: PR_SET_PDEATHSIG kills a child
    when the thread that forked it ends, so a fork from a short-lived thread (a request handler, a timer)
    would lose its child with that thread. The thread runs while anything is supervised.

    ``on_event`` gets a line for every restart and give-up; ``on_give_up(process, returncode)`` is called
    (on the supervisor's thread: keep it short) when a process ended and its policy allows no restart.
    """

    def __init__(
        self,
        *,
        on_event: Callable[[str], None] | None = None,
        on_give_up: Callable[[ManagedProcess, int], None] | None = None,
        poll_interval: float = 0.1,
    ) -> None:
        self._on_event = on_event or log.warning
        self._on_give_up = on_give_up
        self.poll_interval = poll_interval
        self._lock = threading.RLock()
        self._procs: list[ManagedProcess] = []
        self._jobs: queue.SimpleQueue[tuple[Callable[[], object], Future[object]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    @property
    def processes(self) -> list[ManagedProcess]:
        """Supervised processes (running or waiting for a restart), in start order."""
        with self._lock:
            return list(self._procs)

    def start(self, spec: LaunchSpec, policy: RestartPolicy | None = None) -> ManagedProcess:
        """Start ``spec`` and supervise it; returns at once (see :meth:`ManagedProcess.wait_ready`)."""
        proc = ManagedProcess(spec, policy or RestartPolicy.never())

        def launch() -> None:
            with self._lock:
                proc.launch()
                self._procs.append(proc)

        self._on_thread(launch)
        return proc

    def kill(self, proc: ManagedProcess) -> None:
        """kill -9 the process group, as a crash would, and stop supervising it (no restart)."""
        self.terminate([proc], grace=0.0, sig=signal.SIGKILL)

    def restart(self, proc: ManagedProcess, grace: float = 10.0) -> None:
        """Stop the process (SIGTERM, ``grace``, SIGKILL) and start it again with the same spec and policy."""
        self.terminate([proc], grace)

        def launch() -> None:
            with self._lock:
                proc.launch()
                self._procs.append(proc)

        self._on_thread(launch)

    def terminate(
        self,
        procs: Iterable[ManagedProcess],
        grace: float,
        sig: signal.Signals = signal.SIGTERM,
        graces: Mapping[str, float] | None = None,
    ) -> list[ManagedProcess]:
        """Send ``sig`` to each group, wait up to ``grace`` seconds (``graces``: by process name, where it
        differs) for each to exit, SIGKILL what is left; the processes are no longer supervised afterwards.
        All wait at the same time. Returns those that had to be killed."""
        procs = list(procs)
        graces = graces or {}
        with self._lock:
            for proc in procs:
                # From here the watcher leaves them alone: an exit is now expected, never a reason to restart.
                proc.state = "stopping"
        for proc in procs:
            proc.signal_group(sig)
        killed = []
        try:
            begun = time.monotonic()
            for proc in procs:
                proc.wait_exit(begun + graces.get(proc.name, grace) - time.monotonic())
        finally:
            # Also reached on a second Ctrl-C during the grace: then everything is killed at once.
            for proc in procs:
                if proc.alive():
                    killed.append(proc)
                # The group may hold children of the service even when the service itself has exited.
                proc.signal_group(signal.SIGKILL)
                if proc.popen is not None:
                    proc.popen.wait()
            for proc in procs:
                proc.join_output()
            with self._lock:
                for proc in procs:
                    proc.state = "stopped"
                    if proc in self._procs:
                        self._procs.remove(proc)
        return killed

    def close(self, grace: float = 10.0) -> None:
        """Terminate everything, newest first."""
        self.terminate(reversed(self.processes), grace)

    # -- the supervisor thread ------------------------------------------------------------------------

    def _on_thread(self, job: Callable[[], T]) -> T:
        if threading.current_thread() is self._thread:
            return job()
        future: Future[object] = Future()
        with self._lock:
            self._jobs.put((job, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="gnes-supervisor", daemon=True)
                self._thread.start()
        return future.result()  # type: ignore[return-value]

    def _run(self) -> None:
        while True:
            try:
                job, future = self._jobs.get(timeout=self.poll_interval)
            except queue.Empty:
                pass
            else:
                try:
                    future.set_result(job())
                except BaseException as exc:  # handed to the caller, who waits on the future
                    future.set_exception(exc)
            gave_up = self._watch()
            for proc in gave_up:
                if self._on_give_up is not None:
                    self._on_give_up(proc, proc.last_exit if proc.last_exit is not None else 0)
            with self._lock:
                # Ending the thread kills its children (PDEATHSIG), so only end with nothing to watch.
                if not self._procs and self._jobs.empty():
                    self._thread = None
                    return

    def _watch(self) -> list[ManagedProcess]:
        gave_up = []
        now = time.monotonic()
        with self._lock:
            for proc in list(self._procs):
                if proc.state == "running" and proc.popen is not None:
                    code = proc.popen.poll()
                    if code is not None and self._after_exit(proc, code, now):
                        gave_up.append(proc)
                elif proc.state == "backoff" and now >= proc.restart_due:
                    self._relaunch(proc)
        return gave_up

    def _after_exit(self, proc: ManagedProcess, code: int, now: float) -> bool:
        """Schedule the restart the policy asks for; True if the process is given up instead."""
        proc.last_exit = code
        policy = proc.policy
        # The group may still hold the service's own children; a restart must not meet them on its ports.
        proc.signal_group(signal.SIGKILL)
        if policy.wants_restart(code) and policy.allows_restart(proc.restarts, now):
            attempt = policy.attempts_used(proc.restarts, now) + 1
            of = "unlimited" if policy.max_attempts is None else str(policy.max_attempts)
            self._on_event(
                f"{proc.name} (pid {proc.pid}) {describe_exit(code)}; restart attempt {attempt} of {of} "
                f"in {policy.delay:g}s"
            )
            proc.restarts.append(now)
            proc.state, proc.restart_due = "backoff", now + policy.delay
            return False
        if not policy.wants_restart(code):
            why = f"restart condition {policy.condition}"
        else:
            why = f"all {policy.max_attempts} restart attempts used" + (
                f" within {policy.window:g}s" if policy.window > 0 else ""
            )
        self._on_event(f"{proc.name} (pid {proc.pid}) {describe_exit(code)}; GIVING UP ({why})")
        proc.state = "given-up"
        self._procs.remove(proc)
        return True

    def _relaunch(self, proc: ManagedProcess) -> None:
        proc.join_output(timeout=0.5)
        try:
            proc.launch()
        except OSError as exc:  # e.g. out of processes: count it as a failed attempt, as an exit would be
            self._on_event(f"{proc.name} could not be restarted: {exc}")
            proc.state = "running"
            proc.popen = None
            self._after_exit(proc, 1, time.monotonic())
            return
        self._on_event(f"{proc.name} restarted as pid {proc.pid}")
