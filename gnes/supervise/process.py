"""One supervised command: how it is launched, its current Popen, its output, its restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from gnes.supervise.orphans import die_with_parent
from gnes.supervise.policy import RestartPolicy

__all__ = ["LaunchSpec", "ManagedProcess", "NotReadyError", "ProcessExitedError", "ReadyCheck", "describe_exit"]

ReadyCheck = Callable[[float], bool]
"""``check(timeout) -> bool``: is the process ready (e.g. does its control port answer READY)?"""

_TAIL_LINES = 40


class ProcessExitedError(RuntimeError):
    """The process ended while it was awaited; the message holds its last output lines."""


class NotReadyError(RuntimeError):
    """The ready check did not pass in time; the message holds the process's last output lines."""


@dataclass(frozen=True)
class LaunchSpec:
    """How to start one process; a restart launches the same spec again (same ports, same data)."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None  # the whole environment; None inherits ours
    cwd: Path | None = None
    log_file: Path | None = None  # output goes here (the first start truncates it, restarts append)
    append_log: bool = False  # the first start appends too (the log of an earlier run of the same thing)
    # Called with each output line (then the output is piped through us); None: only the log file gets it.
    echo: Callable[[str], None] | None = None


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


@dataclass(eq=False)
class ManagedProcess:
    """A process under a :class:`~gnes.supervise.Supervisor`; ``popen`` is its current incarnation."""

    spec: LaunchSpec
    policy: RestartPolicy = field(default_factory=RestartPolicy.never)
    popen: subprocess.Popen[bytes] | None = None
    # running | backoff (restart due at `restart_due`) | stopping | stopped | given-up
    state: str = "new"
    restarts: list[float] = field(default_factory=list)  # monotonic times of the policy's restarts
    restart_due: float = 0.0
    last_exit: int | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_TAIL_LINES))
    _reader: threading.Thread | None = None
    _launches: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return None if self.popen is None else self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def launch(self) -> None:
        """Start (again). Must run on the supervisor's thread: the child dies with the thread that forks it."""
        spec = self.spec
        log: IO[bytes] | None = None
        if spec.log_file is not None:
            spec.log_file.parent.mkdir(parents=True, exist_ok=True)
            log = spec.log_file.open("ab" if self._launches or spec.append_log else "wb")
        try:
            self.popen = subprocess.Popen(
                list(spec.argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if spec.echo is not None or log is None else log,
                stderr=subprocess.STDOUT,
                env=None if spec.env is None else dict(spec.env),
                cwd=spec.cwd,
                # Own process group: a Ctrl-C in the terminal reaches only the supervisor, which then signals
                # each group, and a group signal also reaches whatever the service started itself.
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        except BaseException:
            if log is not None:
                log.close()
            raise
        if log is not None and spec.echo is None:
            log.close()  # the child holds its own copy
        self._launches += 1
        self.state = "running"
        if self.popen.stdout is not None:
            self._reader = threading.Thread(
                target=self._pump, args=(self.popen.stdout, log), name=f"log-{spec.name}", daemon=True
            )
            self._reader.start()

    def _pump(self, stream: IO[bytes], log: IO[bytes] | None) -> None:
        try:
            for raw in stream:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                self.tail.append(line)
                if log is not None:
                    log.write(raw)
                    log.flush()
                if self.spec.echo is not None:
                    self.spec.echo(line)
        finally:
            stream.close()
            if log is not None:
                log.close()

    def signal_group(self, sig: signal.Signals) -> None:
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, sig)  # start_new_session made the pid the group id
        except ProcessLookupError:
            pass  # the whole group has already exited

    def wait_exit(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the current incarnation to exit; True if it has."""
        if self.popen is None:
            return True
        try:
            self.popen.wait(timeout=max(0.0, timeout))
            return True
        except subprocess.TimeoutExpired:
            return False

    def join_output(self, timeout: float = 2.0) -> None:
        """Let the last lines of an exited process arrive (its pipe closes when the whole group has gone)."""
        if self._reader is not None:
            self._reader.join(timeout=timeout)

    def wait_ready(self, check: ReadyCheck, timeout: float, poll: float = 0.2) -> None:
        """Return once ``check`` passes; raise if the process exits first or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            popen = self.popen
            code = None if popen is None else popen.poll()
            if popen is None or code is not None:
                self.join_output()
                what = "was never started" if popen is None else f"exited with code {code}"
                raise ProcessExitedError(f"{self.name} {what} before it was ready{self.tail_text()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NotReadyError(f"{self.name} was not ready within {timeout:g}s{self.tail_text()}")
            if check(min(1.0, remaining)):
                return
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    def tail_text(self) -> str:
        """The last output lines, for error messages."""
        lines = list(self.tail)
        if not lines and self.spec.log_file is not None and self.spec.echo is None:
            try:
                with self.spec.log_file.open("rb") as log:
                    log.seek(max(0, log.seek(0, os.SEEK_END) - 8192))
                    lines = log.read().decode("utf-8", errors="replace").splitlines()[-_TAIL_LINES:]
            except OSError:
                lines = []
        if not lines:
            return " (it printed nothing)"
        return f"; its last {len(lines)} log lines:\n" + "\n".join(f"  {line}" for line in lines)
