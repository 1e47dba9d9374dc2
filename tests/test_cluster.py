"""Discovery file, shard launch with submitit, and shards that always stop.

Every process started here binds 127.0.0.1 and is gone when its test ends: the launch fixture stops the
jobs and then looks for anything still running with the test's tmp_path in its command line.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from gnes.cli.healthcheck import check_ready
from gnes.client import IndexClient
from gnes.cluster import ShardAddress, parse_addresses, read_discovery, register_shard, write_header
from gnes.cluster.cli import format_table

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- discovery file


def test_header_then_registrations_read_back_sorted(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "discovery.txt"
    write_header(path, 3)
    register_shard(path, 2, "node-b", 5602)
    register_shard(path, 0, "node-a", 5600)
    register_shard(path, 1, "node-a", 5601)
    assert path.read_text().splitlines()[0] == "# gnes discovery num_shards=3"
    assert read_discovery(path) == [
        ShardAddress(0, "node-a", 5600),
        ShardAddress(1, "node-a", 5601),
        ShardAddress(2, "node-b", 5602),
    ]


def test_the_last_registration_of_a_rank_wins(tmp_path: Path) -> None:
    path = tmp_path / "discovery.txt"
    write_header(path, 2)
    register_shard(path, 0, "old-node", 5600)
    register_shard(path, 1, "node-b", 5601)
    register_shard(path, 0, "new-node", 5700)  # shard 0 restarted elsewhere
    assert read_discovery(path) == [ShardAddress(0, "new-node", 5700), ShardAddress(1, "node-b", 5601)]


def test_write_header_starts_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "discovery.txt"
    write_header(path, 1)
    register_shard(path, 0, "node-a", 5600)
    write_header(path, 2)
    assert path.read_text() == "# gnes discovery num_shards=2\n"
    assert read_discovery(path, expected=0) == []


def test_timeout_names_the_missing_ranks(tmp_path: Path) -> None:
    path = tmp_path / "discovery.txt"
    write_header(path, 4)
    register_shard(path, 0, "node-a", 5600)
    register_shard(path, 2, "node-a", 5602)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"rank\(s\) 1, 3 of 4 not registered after 0\.3s"):
        read_discovery(path, timeout=0.3)
    assert time.monotonic() - start >= 0.3
    with pytest.raises(TimeoutError, match=r"rank\(s\) 1 of 2"):  # expected overrides the header
        read_discovery(path, expected=2)


def test_read_waits_for_late_shards_and_for_the_file(tmp_path: Path) -> None:
    path = tmp_path / "discovery.txt"

    def late_launch() -> None:
        time.sleep(0.3)
        write_header(path, 2)
        register_shard(path, 1, "node-b", 5601)
        time.sleep(0.3)
        register_shard(path, 0, "node-a", 5600)

    thread = threading.Thread(target=late_launch)
    thread.start()
    try:
        assert [a.rank for a in read_discovery(path, expected=2, timeout=10)] == [0, 1]
    finally:
        thread.join()


def test_a_missing_file_without_expected_count(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no discovery file"):
        read_discovery(tmp_path / "nothing.txt", timeout=0.1)
    with pytest.raises(TimeoutError, match=r"rank\(s\) 0, 1 of 2"):
        read_discovery(tmp_path / "nothing.txt", expected=2)


def test_a_file_without_header_returns_what_is_registered(tmp_path: Path) -> None:
    path = tmp_path / "discovery.txt"
    register_shard(path, 1, "node-b", 5601)
    assert read_discovery(path) == [ShardAddress(1, "node-b", 5601)]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("0 node-a", "expected 'rank host port'"),
        ("0 node-a 5600 extra", "expected 'rank host port'"),
        ("x node-a 5600", "expected 'rank host port'"),
        ("0 node-a 70000", "port must be in 1..65535"),
        ("5 node-a 5600", "rank 5 but the header says num_shards=2"),
        ("# gnes discovery shards=2", "bad header"),
    ],
)
def test_a_malformed_line_names_file_and_line(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "discovery.txt"
    write_header(path, 2)
    register_shard(path, 0, "node-a", 5600)
    with open(path, "a") as f:
        f.write(f"\n# a comment is fine\n{line}\n")
    with pytest.raises(ValueError, match=rf"discovery\.txt:5: .*{reason}"):
        read_discovery(path)


def test_register_rejects_what_could_not_be_read_back(tmp_path: Path) -> None:
    path = tmp_path / "discovery.txt"
    for rank, host, port in [(-1, "h", 1), (0, "two words", 1), (0, "", 1), (0, "h#1", 1), (0, "h", 0)]:
        with pytest.raises(ValueError):
            register_shard(path, rank, host, port)
    assert not path.exists()


def test_concurrent_registration_from_many_processes(tmp_path: Path) -> None:
    path = tmp_path / "discovery.txt"
    num_shards, rounds = 8, 25
    write_header(path, num_shards)
    long_host = "node-" + "x" * 3000  # long lines make torn or interleaved appends visible
    calls = [(str(path), rank, f"{long_host}-{rank}", 5000 + i) for i in range(rounds) for rank in range(num_shards)]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.starmap(register_shard, calls, chunksize=5)
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + len(calls)
    for line in lines[1:]:
        rank, host, port = line.split(" ")
        assert host == f"{long_host}-{rank}" and 5000 <= int(port) < 5000 + rounds
    addresses = read_discovery(path, timeout=0)
    assert [a.rank for a in addresses] == list(range(num_shards))
    # Latest wins: each rank's address is the one of its last line in the file.
    last = {int(line.split(" ")[0]): int(line.split(" ")[2]) for line in lines[1:]}
    assert {a.rank: a.port for a in addresses} == last


def test_parse_addresses() -> None:
    assert parse_addresses("node-a:5600, tcp://node-b:5601,[::1]:5602") == [
        ShardAddress(0, "node-a", 5600),
        ShardAddress(1, "node-b", 5601),
        ShardAddress(2, "::1", 5602),
    ]
    assert ShardAddress(0, "node-a", 5600).endpoint == "tcp://node-a:5600"
    assert ShardAddress(2, "::1", 5602).endpoint == "tcp://[::1]:5602"
    for bad in ["", "node-a", "node-a:", ":5600", "node-a:5600,,node-b:5601", "node-a:port", "node-a:0"]:
        with pytest.raises(ValueError):
            parse_addresses(bad)


def test_format_table() -> None:
    table = format_table([ShardAddress(0, "node-a", 5600), ShardAddress(1, "n", 5601)])
    assert table.splitlines() == [
        "rank  host    port  endpoint",
        "0     node-a  5600  tcp://node-a:5600",
        "1     n       5601  tcp://n:5601",
    ]


# ---------------------------------------------------------------- the job's child process


_FAKE_SHARD = """\
import os, signal, sys, time
marker = sys.argv[1]
def stop(signum, frame):
    with open(marker, "a") as f:
        f.write(f"stopped by {signal.Signals(signum).name}\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
with open(marker, "a") as f:
    f.write(f"{os.getpid()}\\n")
while True:
    time.sleep(0.1)
"""

_JOB = """\
import sys
from gnes.cluster.launcher import _ChildShard
sys.exit(_ChildShard([sys.executable, "-c", sys.argv[1], sys.argv[2]], stop_grace=10).run())
"""


def _start_fake_job(marker: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A stand-in for the job process: runs a fake shard through _ChildShard; returns (job, shard pid)."""
    job = subprocess.Popen([sys.executable, "-c", _JOB, _FAKE_SHARD, str(marker)], cwd=REPO)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (marker.exists() and marker.read_text().endswith("\n")):
        time.sleep(0.05)
    assert marker.exists(), "the fake shard did not start"
    return job, int(marker.read_text().split()[0])


def _alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie may wait a while for the container's init to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _wait_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_job_forwards_stop_signals_to_the_shard(tmp_path: Path, sig: signal.Signals) -> None:
    marker = tmp_path / "marker"
    job, shard_pid = _start_fake_job(marker)
    try:
        job.send_signal(sig)
        assert job.wait(timeout=15) == 0
        assert _wait_gone(shard_pid)
        assert "stopped by SIGTERM" in marker.read_text()
    finally:
        job.kill()
        job.wait()
        _kill_quietly(shard_pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_shard_gets_sigterm_when_its_job_is_killed(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    job, shard_pid = _start_fake_job(marker)
    try:
        job.kill()  # SIGKILL: the job has no chance to stop its shard itself
        job.wait()
        assert _wait_gone(shard_pid), "the shard outlived its job"
        assert "stopped by SIGTERM" in marker.read_text()
    finally:
        _kill_quietly(shard_pid)


def test_shard_command(tmp_path: Path) -> None:
    from gnes.cluster.launcher import ShardJobSpec, shard_command

    spec = ShardJobSpec(
        first_rank=2, base_port=7000, save_dir="/data", discovery="/d.txt", bind_host="0.0.0.0", index_yaml="/i.yml"
    )
    assert shard_command(spec, 3, python="py") == [
        *("py", "-m", "gnes", "index", "--socket_in", "NONE", "--socket_out", "NONE"),
        *("--port_direct", "7003", "--host_direct", "0.0.0.0", "--dump_path", "/data/shard-3"),
        *("--name", "shard-3", "--discovery", "/d.txt", "--rank", "3", "--yaml_path", "/i.yml"),
    ]


# ---------------------------------------------------------------- SLURM submission, with fake sbatch/scancel


def test_slurm_launch_submits_the_expected_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gnes.cluster.launcher import launch_shards, stop_shards

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "record"
    record.mkdir()
    scripts = {
        "srun": "exit 1",
        "sbatch": f'n=$(ls {record} | wc -l); cp "$1" {record}/sbatch-$n.sh; echo "Submitted batch job $((4242 + n))"',
        "scancel": f'echo "$@" >> {record}/scancel.txt',
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    jobs = launch_shards(
        num_shards=5,
        base_port=7000,
        save_dir=tmp_path / "data",
        discovery=tmp_path / "discovery.txt",
        executor="slurm",
        log_dir=tmp_path / "logs",
        partition="dev",
        timeout_min=90,
        mem_gb=4,
        shards_per_node=2,
        cpus_per_shard=3,
    )
    assert (tmp_path / "discovery.txt").read_text() == "# gnes discovery num_shards=5\n"
    # Two full groups of 2 shards as one job array, then a job for the fifth shard.
    assert [str(job.job_id) for job in jobs] == ["4242_0", "4242_1", "4243"]
    array, single = (record / "sbatch-0.sh").read_text(), (record / "sbatch-1.sh").read_text()
    for text in (array, single):
        assert "#SBATCH --partition=dev" in text
        assert "#SBATCH --time=90" in text
        assert "#SBATCH --cpus-per-task=3" in text
        assert "#SBATCH --nodes=1" in text
    assert "#SBATCH --array=0-1" in array
    assert "#SBATCH --ntasks-per-node=2" in array and "#SBATCH --mem=8GB" in array
    assert "#SBATCH --ntasks-per-node=1" in single and "#SBATCH --mem=4GB" in single

    stop_shards(jobs, grace=1)
    assert (record / "scancel.txt").read_text().split() == ["4242_0", "4242_1", "4243"]


def test_launch_rejects_bad_arguments(tmp_path: Path) -> None:
    from gnes.cluster.launcher import launch_shards

    common = {"save_dir": tmp_path, "discovery": tmp_path / "d.txt", "log_dir": tmp_path}
    with pytest.raises(ValueError, match="executor"):
        launch_shards(1, 7000, executor="kubernetes", **common)
    with pytest.raises(ValueError, match="num_shards"):
        launch_shards(0, 7000, **common)
    with pytest.raises(ValueError, match="valid TCP ports"):
        launch_shards(3, 65534, **common)
    assert not (tmp_path / "d.txt").exists()


def test_launch_help_documents_every_flag() -> None:
    from gnes.cli.parser import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    launch = sub.choices["launch"]  # type: ignore[attr-defined]
    for action in launch._actions:
        assert action.help, f"gnes launch {action.option_strings} has no help"


# ---------------------------------------------------------------- end to end: real shards as local jobs


def _free_port_range(n: int) -> int:
    """A base port such that base .. base+n-1 are all free on 127.0.0.1."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + n > 65535:
            continue
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports")


def _processes_mentioning(text: str) -> list[int]:
    """Pids of processes whose command line contains text (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def _direct_status(address: ShardAddress, timeout: float = 10.0) -> dict:
    """A STATUS request on the shard's direct port (what IndexClient talks to); returns its info."""
    import zmq

    from gnes.proto import pb
    from gnes.service.message import BodyType

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    try:
        sock.connect(address.endpoint)
        request = pb.Request(request_id=1)
        request.control.command = pb.Request.ControlRequest.STATUS
        envelope = pb.Envelope(request_id=1, body_type=BodyType.CONTROL)
        sock.send_multipart([envelope.SerializeToString(), request.SerializeToString()])
        _, body = sock.recv_multipart()
    finally:
        sock.close()
    response = pb.Response.FromString(body)
    assert response.control.status == pb.Response.READY, response
    return json.loads(response.control.info_json)


@dataclass
class LocalCluster:
    jobs: list
    discovery: Path
    base_port: int
    root: Path


@pytest.fixture
def local_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    from gnes.cluster.launcher import launch_shards, stop_shards

    root = tmp_path / "cluster"
    base_port = _free_port_range(2)
    jobs = launch_shards(
        num_shards=2,
        base_port=base_port,
        save_dir=root / "data",
        discovery=root / "discovery.txt",
        executor="local",
        log_dir=root / "logs",
        timeout_min=10,
        bind_host="127.0.0.1",
        stop_grace=20,
    )
    try:
        yield LocalCluster(jobs, root / "discovery.txt", base_port, root)
    finally:
        stop_shards(jobs, grace=20)
        deadline = time.monotonic() + 10
        while _processes_mentioning(str(root)) and time.monotonic() < deadline:
            time.sleep(0.1)
        leftovers = _processes_mentioning(str(root))
        for pid in leftovers:
            _kill_quietly(pid)
        assert not leftovers, f"processes left after stop_shards: {leftovers}"


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="checks for leftover processes through /proc")
def test_launched_local_shards_register_serve_and_stop(local_cluster: LocalCluster) -> None:
    from gnes.cluster.launcher import stop_shards, wait_for_shards

    addresses = wait_for_shards(local_cluster.jobs, local_cluster.discovery, timeout=60)
    base = local_cluster.base_port
    assert [(a.rank, a.port) for a in addresses] == [(0, base), (1, base + 1)]
    assert read_discovery(local_cluster.discovery, timeout=60) == addresses
    for address in addresses:
        info = _direct_status(address)  # the shard answers where it registered ...
        assert info["name"] == f"shard-{address.rank}" and info["direct_port"] == address.port
        assert check_ready("127.0.0.1", int(info["ctrl_port"]), timeout=5)  # ... and on its control port

    with IndexClient(discovery=str(local_cluster.discovery)) as client:
        assert "launched" not in client.list_indexes()
        client.create_index("launched", {"dim": 8, "metric": "ip", "index_type": "flat"})
        vectors = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
        client.add("launched", vectors, ids=list(range(20)))
        assert client.count("launched") == 20

    stop_shards(local_cluster.jobs, grace=20)
    assert all(job.done() for job in local_cluster.jobs)
    deadline = time.monotonic() + 10
    while _processes_mentioning(str(local_cluster.root)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_mentioning(str(local_cluster.root))


def test_a_shard_job_that_fails_is_reported_with_its_log(tmp_path: Path) -> None:
    from gnes.cluster.launcher import LaunchError, launch_shards, stop_shards, wait_for_shards

    jobs = launch_shards(
        num_shards=1,
        base_port=_free_port_range(1),
        save_dir=tmp_path / "data",
        discovery=tmp_path / "discovery.txt",
        log_dir=tmp_path / "logs",
        index_yaml=tmp_path / "no-such-indexer.yml",
        timeout_min=5,
        stop_grace=5,
    )
    try:
        with pytest.raises(LaunchError, match=r"ended before all shards registered; end of its log"):
            wait_for_shards(jobs, tmp_path / "discovery.txt", timeout=120)
    finally:
        stop_shards(jobs, grace=5)


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="checks for leftover processes through /proc")
def test_gnes_launch_wait_prints_the_shards_and_stops_them_on_sigterm(tmp_path: Path) -> None:
    base = _free_port_range(2)
    command = [sys.executable, "-m", "gnes", "launch", "--num_shards", "2", "--base_port", str(base), "--wait"]
    command += ["--save_dir", str(tmp_path / "s"), "--timeout_min", "10", "--start_timeout", "90"]
    launcher = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    try:
        assert launcher.stdout is not None
        for line in launcher.stdout:
            output.append(line)
            if "press Ctrl-C" in line:
                break
        assert any(line.split()[:3] == ["1", "127.0.0.1", str(base + 1)] for line in output), "".join(output)
        launcher.send_signal(signal.SIGTERM)
        rest, _ = launcher.communicate(timeout=60)
        output.append(rest)
        assert launcher.returncode == 0, "".join(output)
        assert "stopping the shards" in rest
        assert not _processes_mentioning(str(tmp_path)), "".join(output)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        for pid in _processes_mentioning(str(tmp_path)):
            _kill_quietly(pid)
