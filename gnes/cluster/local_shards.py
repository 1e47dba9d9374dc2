"""Index shards as `gnes index` processes on this machine: the command line every launcher
uses, and a group of local shards for tests, benchmarks and single-machine setups.

Each shard listens only on its direct port (no pipeline sockets); clients reach it with
IndexClient. A shard counts as started once its control port answers READY.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from ..cli.healthcheck import check_ready
from ..stack.compose import find_free_ports
from ..supervise import LaunchSpec, ManagedProcess, NotReadyError, ProcessExitedError, Supervisor


def index_shard_command(
    port: int,
    dump_path: str | Path,
    name: str,
    *,
    host: str = "127.0.0.1",
    port_ctrl: int = 0,
    discovery: str = "",
    rank: int = 0,
    yaml_path: str | None = None,
    save_interval: float = 0.0,
    python: str | None = None,
) -> list[str]:
    """The `gnes index` command line of a shard reachable only on its direct port."""
    command = [python or sys.executable, "-m", "gnes", "index", "--socket_in", "NONE", "--socket_out", "NONE"]
    command += ["--port_direct", str(port), "--host_direct", host, "--dump_path", str(dump_path), "--name", name]
    if port_ctrl:
        command += ["--port_ctrl", str(port_ctrl)]
    if discovery:
        command += ["--discovery", discovery, "--rank", str(rank)]
    if yaml_path:
        command += ["--yaml_path", yaml_path]
    if save_interval:
        command += ["--save_interval", str(save_interval)]
    return command


class LocalShards:
    """N shards on free loopback ports, data in `root/shard-I`; each can be killed and restarted.

    `threads` caps each shard's OpenMP threads (default: the cores divided among the shards,
    so that N shards on one machine do not oversubscribe it). Used as a context manager, it
    waits until every shard answers and stops them all on exit, whatever happens. The shards
    run under a :class:`~gnes.supervise.Supervisor` without restarts: a test that kills one
    decides itself when it comes back.
    """

    def __init__(
        self,
        n: int,
        root: Path,
        save_interval: float = 0.0,
        threads: int | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.root = root
        self.save_interval = save_interval
        self.start_timeout = start_timeout
        ports = find_free_ports(2 * n)
        self.ports, self.ctrl_ports = ports[:n], ports[n:]
        self.threads = threads or max(1, (os.cpu_count() or 1) // n)
        self._supervisor = Supervisor()
        self._shards: list[ManagedProcess | None] = [None] * n

    @property
    def procs(self) -> list[subprocess.Popen[bytes] | None]:
        """The Popen of each running shard; None for one that was killed or stopped."""
        return [None if shard is None else shard.popen for shard in self._shards]

    @property
    def addresses(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def log_path(self, i: int) -> Path:
        return self.root / f"shard-{i}.log"

    def start(self, i: int) -> None:
        """Start shard i (again: same port, same data) without waiting for it."""
        self.root.mkdir(parents=True, exist_ok=True)
        command = index_shard_command(
            self.ports[i],
            self.root / f"shard-{i}",
            f"shard-{i}",
            port_ctrl=self.ctrl_ports[i],
            save_interval=self.save_interval,
        )
        if self._shards[i] is not None:
            self.kill(i)  # a shard started twice would fight itself for its port and its files
        spec = LaunchSpec(
            f"shard-{i}",
            command,
            env={**os.environ, "OMP_NUM_THREADS": str(self.threads)},
            log_file=self.log_path(i),
            append_log=True,  # the log gathers every start of shard i: keep what the crash left in it
        )
        self._shards[i] = self._supervisor.start(spec)

    def wait_ready(self) -> None:
        """Wait until every running shard answers; raise with its log if one died or is too slow."""
        deadline = time.monotonic() + self.start_timeout
        for i, shard in enumerate(self._shards):
            if shard is None:
                continue
            port = self.ctrl_ports[i]
            try:
                shard.wait_ready(
                    lambda t, p=port: check_ready("127.0.0.1", p, timeout=min(t, 0.5)),
                    deadline - time.monotonic(),
                    poll=0.05,
                )
            except (ProcessExitedError, NotReadyError) as exc:
                code = None if shard.popen is None else shard.popen.poll()
                raise RuntimeError(f"shard-{i} did not start (exit code {code}): {exc}") from exc

    def kill(self, i: int) -> None:
        """kill -9 shard i, as a crash would."""
        shard, self._shards[i] = self._shards[i], None
        if shard is not None:
            self._supervisor.kill(shard)

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM every shard (they save and close), then SIGKILL what outlives `grace`."""
        shards = [shard for shard in self._shards if shard is not None]
        self._shards = [None] * len(self._shards)
        self._supervisor.terminate(shards, grace)

    def __enter__(self) -> LocalShards:
        try:
            for i in range(len(self._shards)):
                self.start(i)
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
