"""``gnes launch``: start N index shards as SLURM (or local) jobs and write the discovery file.

Kept apart from the main parser so that ``gnes --help`` does not need submitit: the launcher is imported
only when ``gnes launch`` runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..cli.signals import ignore_interrupts, sigterm_as_interrupt
from .discovery import ShardAddress

__all__ = ["add_arguments", "add_parser", "format_table", "run"]

_DESCRIPTION = """\
Start --num_shards index shards with submitit: as SLURM jobs (--executor slurm) or as processes of this
machine (--executor local). Shard RANK listens on --base_port + RANK, keeps its data in
<save_dir>/shard-RANK and appends 'RANK HOST PORT' to the discovery file once it listens; clients read that
file (IndexClient(discovery=...), gnes load --discovery ...). On SLURM, --save_dir, --discovery and
--log_dir must be on a file system that every node shares."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``launch`` subcommand to the main CLI's ``add_subparsers()`` object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "launch", help="start index shards as SLURM or local jobs (submitit)", description=_DESCRIPTION
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num_shards", type=int, required=True, help="how many shards to start")
    parser.add_argument(
        "--base_port", type=int, default=5600, help="shard RANK listens on base_port + RANK (default: 5600)"
    )
    parser.add_argument(
        "--save_dir", type=Path, default=Path("gnes-shards"), help="shard RANK keeps its data in save_dir/shard-RANK"
    )
    parser.add_argument(
        "--discovery", type=Path, default=None, help="discovery file to write (default: save_dir/discovery.txt)"
    )
    parser.add_argument(
        "--executor",
        choices=["local", "slurm"],
        default="local",
        help="slurm: submit with sbatch; local: run the jobs on this machine (default: local)",
    )
    parser.add_argument(
        "--log_dir", type=Path, default=None, help="submitit job folder with the shards' logs (default: save_dir/logs)"
    )
    parser.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's default)")
    parser.add_argument("--timeout_min", type=int, default=24 * 60, help="minutes a shard job may run (default: 1440)")
    parser.add_argument("--mem_gb", type=float, default=8.0, help="SLURM memory per shard in GB (default: 8)")
    parser.add_argument(
        "--cpus_per_shard", type=int, default=1, help="SLURM CPUs per shard, for faiss threads (default: 1)"
    )
    parser.add_argument(
        "--shards_per_node",
        type=int,
        default=1,
        help="shards that share one job and so one node (default: 1, a job per shard)",
    )
    parser.add_argument(
        "--yaml_path", default=None, help="YAML file of the shards' indexer (default: the shard's built-in one)"
    )
    parser.add_argument(
        "--bind_host", default=None, help="address the shards bind (default: 127.0.0.1 local, 0.0.0.0 on SLURM)"
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="wait until every shard registered, print them, and keep running until Ctrl-C or SIGTERM, "
        "then stop the shards",
    )
    parser.add_argument(
        "--start_timeout",
        type=float,
        default=600.0,
        help="with --wait: seconds for all shards to register, queueing included (default: 600)",
    )
    parser.add_argument(
        "--stop_grace", type=float, default=30.0, help="seconds a shard has to save and exit after SIGTERM"
    )


def format_table(addresses: Sequence[ShardAddress]) -> str:
    """The registered shards as an aligned text table."""
    rows = [("rank", "host", "port", "endpoint")]
    rows += [(str(a.rank), a.host, str(a.port), a.endpoint) for a in addresses]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def run(args: argparse.Namespace) -> int:
    """Run ``gnes launch`` with parsed arguments; returns the process exit code."""
    from .launcher import LaunchError, launch_shards, stop_shards, wait_for_shards

    discovery = args.discovery or args.save_dir / "discovery.txt"
    try:
        jobs = launch_shards(
            num_shards=args.num_shards,
            base_port=args.base_port,
            save_dir=args.save_dir,
            discovery=discovery,
            executor=args.executor,
            log_dir=args.log_dir or args.save_dir / "logs",
            partition=args.partition,
            timeout_min=args.timeout_min,
            mem_gb=args.mem_gb,
            shards_per_node=args.shards_per_node,
            index_yaml=args.yaml_path,
            bind_host=args.bind_host,
            cpus_per_shard=args.cpus_per_shard,
            stop_grace=args.stop_grace,
        )
    except (ImportError, ValueError, RuntimeError, OSError) as exc:
        print(f"gnes launch: {exc}", file=sys.stderr)
        return 2
    ids = " ".join(str(job.job_id) for job in jobs)
    print(f"gnes launch | submitted {len(jobs)} job(s): {ids}", flush=True)
    print(f"gnes launch | discovery file: {Path(discovery).resolve()}", flush=True)
    if not args.wait:
        stop = f"scancel {ids}" if args.executor == "slurm" else f"kill {ids}"
        print(f"gnes launch | stop the shards with: {stop}", flush=True)
        return 0

    restore = sigterm_as_interrupt()
    try:
        addresses = wait_for_shards(jobs, discovery, timeout=args.start_timeout, expected=args.num_shards)
        print(format_table(addresses), flush=True)
        print("gnes launch | all shards registered; press Ctrl-C to stop them", flush=True)
        while True:
            ended = [job for job in jobs if job.done()]
            if ended:
                print(f"gnes launch: shard job(s) {' '.join(str(j.job_id) for j in ended)} ended", file=sys.stderr)
                return 1
            time.sleep(2.0)
    except (LaunchError, TimeoutError) as exc:
        print(f"gnes launch: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gnes launch | stopping the shards", flush=True)
        return 0
    finally:
        # Ignore further Ctrl-C while stopping: an interrupted stop would leave shards behind.
        previous_int = ignore_interrupts()
        try:
            stop_shards(jobs, grace=args.stop_grace)
        finally:
            previous_int()
            restore()
