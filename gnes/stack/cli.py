"""``gnes stack``: start the services of a stack file as local processes, or print their command lines."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gnes
from gnes.cli.signals import sigterm_as_interrupt
from gnes.stack.compose import expand_stack
from gnes.stack.control import ControlServer
from gnes.stack.interpolate import StackError
from gnes.stack.local import DEFAULT_SCALE_GRACE, DEFAULT_STOP_GRACE, LocalStack, StackStartError
from gnes.stack.replica import expand_replica

__all__ = ["DEFAULT_COMPOSE_FILE", "add_arguments", "add_parser", "main", "parse_env", "run"]

DEFAULT_COMPOSE_FILE = Path("compose") / "gnes-swarm.yml"

_DESCRIPTION = """\
Run the services of a Docker Swarm stack file as processes on this machine: replicas become separate
processes, service names resolve to 127.0.0.1, configs are read from their files and volumes become
directories under the work dir. A process that dies is restarted per its deploy.restart_policy; once one
is given up (no restart left) the whole stack stops with a non-zero exit code, else it runs until Ctrl-C.

  gnes stack [-f FILE] [--workdir DIR]                  start the stack and keep it up
  gnes stack scale SERVICE=N [...] --workdir DIR        change replica counts of the stack running in DIR
  gnes stack ps --workdir DIR                           the replicas and pids of the stack running in DIR
  gnes stack k8s [-f FILE] -o DIR                       write the stack as Kubernetes manifests to DIR"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``stack`` subcommand to the main CLI's ``add_subparsers()`` object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "stack",
        help="run a stack file as local processes",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="*",
        metavar="ACTION",
        help="nothing (run the stack), 'scale SERVICE=N ...' or 'ps' (for the stack running in --workdir), "
        "or 'k8s' (write manifests to --output)",
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("k8s"), help="where 'k8s' writes (default: k8s)")
    parser.add_argument(
        "-f",
        "--file",
        type=Path,
        default=None,
        help=f"stack file (default: ./{DEFAULT_COMPOSE_FILE}, else the one next to the gnes package)",
    )
    parser.add_argument(
        "--env",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="set a variable of the stack file; wins over the environment (repeatable)",
    )
    parser.add_argument("--workdir", type=Path, default=Path(".gnes-local"), help="volumes and logs go here")
    parser.add_argument("--quiet", action="store_true", help="write process output to <workdir>/logs, not stdout")
    parser.add_argument(
        "--print", dest="print_only", action="store_true", help="print the process command lines and exit"
    )
    parser.add_argument("--stack_name", default="gnes", help="the stack name swarm templates see (default: gnes)")
    parser.add_argument("--start_timeout", type=float, default=120.0, help="seconds for the whole stack to be ready")
    parser.add_argument(
        "--stop_grace",
        type=float,
        default=None,
        help="seconds between SIGTERM and SIGKILL (default: when stopping, each service's stop_grace_period "
        f"or {DEFAULT_STOP_GRACE:g}; when scaling down, {DEFAULT_SCALE_GRACE:g})",
    )


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` -> dict; a pair without ``=`` is an error."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise StackError(f"--env expects KEY=VALUE, got {pair!r}")
        result[key] = value
    return result


def _compose_file(given: Path | None) -> Path:
    if given is not None:
        return given
    # Next to the package covers running from a checkout while in another directory; inside it
    # (gnes/data, written by the wheel build) covers an installed wheel.
    package = Path(gnes.__file__).resolve().parent
    candidates = [DEFAULT_COMPOSE_FILE, package.parent / DEFAULT_COMPOSE_FILE, package / "data" / DEFAULT_COMPOSE_FILE]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise StackError(f"no stack file given and none found at {', '.join(map(str, candidates))}; use -f FILE")


def run(args: argparse.Namespace) -> int:
    """Run ``gnes stack`` with parsed arguments; returns the process exit code."""
    if args.action == ["k8s"]:
        return _write_k8s(args)
    if args.action:
        from gnes.stack.control_cli import run_action  # the client side needs nothing of the stack code

        return run_action(args.action, args.workdir, args.stop_grace)
    try:
        compose_file = _compose_file(args.file)
        where = {"workdir": args.workdir, "overrides": parse_env(args.env), "stack_name": args.stack_name}
        specs = expand_stack(compose_file, **where)  # type: ignore[arg-type]
    except StackError as exc:
        print(f"gnes stack: {exc}", file=sys.stderr)
        return 2
    if args.print_only:
        for spec in specs:
            print(f"{spec.name} | {spec.command_line()}")
        return 0

    stack = LocalStack(
        specs,
        workdir=args.workdir,
        quiet=args.quiet,
        start_timeout=args.start_timeout,
        stop_grace=args.stop_grace,
        replica_factory=functools.partial(expand_replica, compose_file, **where),  # type: ignore[arg-type]
    )
    restore = sigterm_as_interrupt()
    try:
        with stack, ControlServer(stack, args.workdir):
            for service, endpoint in stack.endpoints().items():
                print(f"gnes stack | ready: {service} serves gRPC at {endpoint}", flush=True)
            if args.quiet:
                print(f"gnes stack | logs in {args.workdir / 'logs'}", flush=True)
            print(f"gnes stack | scale with: gnes stack scale SERVICE=N --workdir {args.workdir}", flush=True)
            print("gnes stack | press Ctrl-C to stop", flush=True)
            return stack.wait()
    except StackStartError as exc:
        print(f"gnes stack: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # during start(), which has already stopped what it started
        return 130
    finally:
        restore()


def _write_k8s(args: argparse.Namespace) -> int:
    from gnes.stack.k8s import write_manifests

    try:
        written = write_manifests(
            _compose_file(args.file), args.output, overrides=parse_env(args.env), stack_name=args.stack_name
        )
    except (StackError, OSError, ValueError) as exc:
        print(f"gnes stack k8s: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point (``python -m gnes.stack.cli``), same as ``gnes stack``."""
    parser = argparse.ArgumentParser(prog="gnes stack", description=_DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
