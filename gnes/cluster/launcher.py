"""Start index shards as scheduler jobs with submitit, and stop them again.

Why submitit: the same code submits to SLURM (``sbatch`` with resources, logs and requeue handled for us) or
runs the jobs as local processes, which is how the launch is tested on a machine without a cluster.

Each job runs :func:`run_shard`, which starts ``gnes index`` as a child process and waits for it. The shard
itself appends its address to the discovery file once it listens; the launcher only writes the header.
A job holds ``shards_per_node`` shards (one submitit task each), so they are placed on the same node.

Stopping must not leave shards behind: the job forwards SIGTERM and SIGINT to its shard as SIGTERM (so the
shard saves and exits), kills it if the job itself ends, and on Linux the shard also gets SIGTERM when the
job process dies without a chance to clean up (``PR_SET_PDEATHSIG``). ``submitit`` is imported only when a
launch or stop needs it, so the rest of gnes works without the ``cluster`` extra.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from .discovery import PathLike, ShardAddress, read_discovery, write_header
from .local_shards import index_shard_command

if TYPE_CHECKING:
    import submitit

__all__ = [
    "EXECUTORS",
    "LaunchError",
    "ShardJobSpec",
    "launch_shards",
    "run_shard",
    "shard_command",
    "stop_shards",
    "wait_for_shards",
]

EXECUTORS = ("local", "slurm")
_PR_SET_PDEATHSIG = 1
_LOG_TAIL_CHARS = 3000

log = logging.getLogger(__name__)


class LaunchError(RuntimeError):
    """A shard job ended before its shard registered, or the launch could not be submitted."""


@dataclass(frozen=True)
class ShardJobSpec:
    """What one job needs to start its shards; pickled by submitit into the job folder.

    The job's shards are ranks ``first_rank .. first_rank + tasks - 1``: task ``i`` of the job runs rank
    ``first_rank + i`` and listens on ``base_port + rank``.
    """

    first_rank: int
    base_port: int
    save_dir: str
    discovery: str
    bind_host: str
    index_yaml: str | None = None
    stop_grace: float = 30.0


def shard_command(spec: ShardJobSpec, rank: int, python: str | None = None) -> list[str]:
    """The ``gnes index`` command line of shard ``rank``."""
    return index_shard_command(
        spec.base_port + rank,
        Path(spec.save_dir) / f"shard-{rank}",
        f"shard-{rank}",
        host=spec.bind_host,
        discovery=spec.discovery,
        rank=rank,
        yaml_path=spec.index_yaml,
        python=python,
    )


def run_shard(spec: ShardJobSpec) -> int:
    """The job function: run this task's shard until it exits or the job is told to stop.

    Returns the shard's exit code when it stopped because it was asked to (or exited cleanly); raises
    ``RuntimeError`` when it died on its own, so that submitit records the job as failed.
    """
    rank = spec.first_rank + _task_index()
    command = shard_command(spec, rank)
    print(f"gnes launch | shard {rank}: {shlex.join(command)}", flush=True)
    shard = _ChildShard(command, spec.stop_grace)
    code = shard.run()
    if code != 0 and not shard.stop_requested:
        raise RuntimeError(f"shard {rank} exited with code {code}; its log is this job's stderr")
    return code


def launch_shards(
    num_shards: int,
    base_port: int,
    save_dir: PathLike,
    discovery: PathLike,
    executor: str = "local",
    log_dir: PathLike = "gnes-launch-logs",
    partition: str | None = None,
    timeout_min: int = 24 * 60,
    mem_gb: float = 8.0,
    shards_per_node: int = 1,
    index_yaml: PathLike | None = None,
    bind_host: str | None = None,
    cpus_per_shard: int = 1,
    stop_grace: float = 30.0,
    extra_params: Mapping[str, Any] | None = None,
) -> list[submitit.Job[int]]:
    """Write the discovery header, then submit the shard jobs; returns them in rank order.

    ``executor="slurm"`` submits with sbatch (``partition``, ``timeout_min``, ``mem_gb`` and
    ``cpus_per_shard`` per shard; ``extra_params`` go to ``executor.update_parameters``, e.g.
    ``{"slurm_account": "x"}``); ``"local"`` runs the jobs as processes of this machine. Paths are made
    absolute, and on SLURM they must be on a file system every node shares. ``bind_host`` is the address the
    shards bind: 127.0.0.1 for local jobs and 0.0.0.0 on SLURM unless given.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if num_shards < 1 or shards_per_node < 1:
        raise ValueError(f"num_shards and shards_per_node must be >= 1, got {num_shards} and {shards_per_node}")
    if base_port < 1 or base_port + num_shards - 1 > 65535:
        raise ValueError(f"ports {base_port}..{base_port + num_shards - 1} are not all valid TCP ports")
    try:
        import submitit
    except ImportError as exc:
        raise ImportError("gnes launch needs submitit: pip install 'gnes[cluster]'") from exc

    spec_args = {
        "base_port": base_port,
        "save_dir": str(Path(save_dir).resolve()),
        "discovery": str(Path(discovery).resolve()),
        "bind_host": bind_host or ("127.0.0.1" if executor == "local" else "0.0.0.0"),
        "index_yaml": str(Path(index_yaml).resolve()) if index_yaml else None,
        "stop_grace": stop_grace,
    }
    Path(spec_args["save_dir"]).mkdir(parents=True, exist_ok=True)
    log_folder = Path(log_dir).resolve()
    log_folder.mkdir(parents=True, exist_ok=True)

    if executor == "local":
        runner: Any = submitit.LocalExecutor(folder=log_folder)
        common: dict[str, Any] = {"timeout_min": timeout_min}
    else:
        runner = submitit.AutoExecutor(folder=log_folder, cluster="slurm")
        common = {"timeout_min": timeout_min, "nodes": 1, "cpus_per_task": cpus_per_shard, "name": "gnes-shards"}
        if partition:
            common["slurm_partition"] = partition
    common.update(extra_params or {})

    def size_params(tasks: int) -> dict[str, Any]:
        params = {**common, "tasks_per_node": tasks}
        if executor == "slurm":
            params["mem_gb"] = mem_gb * tasks
        return params

    write_header(spec_args["discovery"], num_shards)
    full, remainder = divmod(num_shards, shards_per_node)
    jobs: list[submitit.Job[int]] = []
    if full:
        runner.update_parameters(**size_params(shards_per_node))
        with runner.batch():  # one SLURM job array for all full-size groups
            for group in range(full):
                spec = ShardJobSpec(first_rank=group * shards_per_node, **spec_args)
                jobs.append(runner.submit(run_shard, spec))
    if remainder:
        runner.update_parameters(**size_params(remainder))
        jobs.append(runner.submit(run_shard, ShardJobSpec(first_rank=full * shards_per_node, **spec_args)))
    log.info("submitted %d shard job(s): %s", len(jobs), ", ".join(str(job.job_id) for job in jobs))
    return jobs


def wait_for_shards(
    jobs: Sequence[submitit.Job[Any]], discovery: PathLike, timeout: float, expected: int | None = None
) -> list[ShardAddress]:
    """Wait until every shard registered; fail early, with the job's log, if a job ends before that."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read_discovery(discovery, expected=expected, timeout=0.0)
        except (TimeoutError, FileNotFoundError) as exc:
            pending: Exception = exc
        for job in jobs:
            if job.done():
                raise LaunchError(f"shard job {job.job_id} ended before all shards registered{_log_tail(job)}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{pending} (waited {timeout:g}s for the shard jobs)") from pending
        time.sleep(0.5)


def stop_shards(jobs: Sequence[submitit.Job[Any]], grace: float = 30.0) -> None:
    """Stop the shard jobs; each shard gets SIGTERM (to save its data) and, for local jobs, is waited for.

    SLURM jobs are cancelled with scancel, which sends SIGTERM and kills what is left after the cluster's
    KillWait. A local job's controller gets SIGTERM, which it passes to the job, which passes it to the
    shard; a job still running after ``grace`` seconds is cancelled hard (SIGINT, then SIGKILL by submitit,
    and the shard gets SIGTERM when its job process dies).
    """
    from submitit import LocalJob

    local = [job for job in jobs if isinstance(job, LocalJob)]
    for job in jobs:
        if not isinstance(job, LocalJob):
            job.cancel(check=False)
    for job in local:
        if not job.done():  # not done: the controller has not been reaped, so its pid is still ours
            _signal_pid(int(job.job_id), signal.SIGTERM)
    if not _wait_done(local, grace):
        for job in local:
            if not job.done():
                log.warning("shard job %s did not stop within %gs; cancelling it", job.job_id, grace)
                job.cancel(check=False)
        if not _wait_done(local, 10.0):
            for job in local:
                if not job.done():
                    log.error("shard job %s is still running after cancel", job.job_id)


class _ChildShard:
    """The shard process of one job task, with the signal forwarding that stops it cleanly."""

    def __init__(self, command: list[str], stop_grace: float) -> None:
        self.command = command
        self.stop_grace = stop_grace
        self.stop_requested = False
        self.proc: subprocess.Popen[bytes] | None = None

    def run(self) -> int:
        # Handlers go in before the child starts, so a stop that arrives meanwhile is not lost (submitit's
        # own SIGTERM handler would only log it).
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.proc = subprocess.Popen(self.command, preexec_fn=_parent_death_signal())
            if self.stop_requested:
                self.proc.terminate()
            return self.proc.wait()
        finally:
            if self.proc is not None:
                _stop_process(self.proc, self.stop_grace)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requested = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()


def _stop_process(proc: subprocess.Popen[bytes], grace: float) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when this process dies (Linux only, else None)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: the child only calls it
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _task_index() -> int:
    """This task's index within its submitit job (0 outside submitit)."""
    try:
        import submitit

        return submitit.JobEnvironment().global_rank
    except (ImportError, RuntimeError):
        return 0


def _signal_pid(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_done(jobs: Sequence[submitit.Job[Any]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not all(job.done() for job in jobs):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _log_tail(job: submitit.Job[Any]) -> str:
    try:
        text = job.stderr() or ""
    except Exception:  # the log is a courtesy; the caller raises anyway
        text = ""
    text = text.strip()[-_LOG_TAIL_CHARS:]
    return f"; end of its log ({job.paths.stderr}):\n{text}" if text else ""
