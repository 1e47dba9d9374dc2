"""Index shards as `gnes index` processes on this machine: the command line every launcher
uses, and a group of local shards for tests, benchmarks and single-machine setups.

Each shard listens only on its direct port (no pipeline sockets); clients reach it with
IndexClient. A shard counts as started once its control port answers READY.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from ..cli.healthcheck import check_ready
from ..stack.compose import find_free_ports


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
    waits until every shard answers and stops them all on exit, whatever happens.
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
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n

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
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        with self.log_path(i).open("ab") as log:
            self.procs[i] = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def wait_ready(self) -> None:
        """Wait until every running shard answers; raise with its log if one died or is too slow."""
        deadline = time.monotonic() + self.start_timeout
        for i, proc in enumerate(self.procs):
            while proc is not None and not check_ready("127.0.0.1", self.ctrl_ports[i], timeout=0.5):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = self.log_path(i).read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"shard-{i} did not start (exit code {proc.poll()}):\n{log}")
                time.sleep(0.05)

    def kill(self, i: int) -> None:
        """kill -9 shard i, as a crash would."""
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.procs[i] = None

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM every shard (they save and close), then SIGKILL what outlives `grace`."""
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for i, proc in enumerate(self.procs):
            if proc is None:
                continue
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill(i)
        self.procs = [None] * len(self.procs)

    def __enter__(self) -> LocalShards:
        try:
            for i in range(len(self.procs)):
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
