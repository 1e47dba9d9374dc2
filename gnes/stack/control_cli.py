"""``gnes stack scale SERVICE=N ...`` and ``gnes stack ps``: talk to the stack running in a work dir."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from gnes.stack.control import ControlError, request

__all__ = ["parse_scale", "run_action"]


def parse_scale(pairs: Sequence[str]) -> dict[str, int]:
    """``["encoder=3", ...]`` -> ``{"encoder": 3}``; raises ValueError on anything else."""
    if not pairs:
        raise ValueError("scale needs at least one SERVICE=N")
    result = {}
    for pair in pairs:
        service, sep, count = pair.partition("=")
        if not sep or not service or not count.isdigit():
            raise ValueError(f"scale expects SERVICE=N with N >= 0, got {pair!r}")
        result[service] = int(count)
    return result


def run_action(action: Sequence[str], workdir: Path, stop_grace: float | None) -> int:
    verb, rest = action[0], list(action[1:])
    try:
        if verb == "scale":
            message = {"op": "scale", "replicas": parse_scale(rest), "stop_grace": stop_grace}
        elif verb == "ps" and not rest:
            message = {"op": "status"}
        else:
            raise ValueError(f"unknown action {' '.join(action)!r}; expected 'scale SERVICE=N ...' or 'ps'")
    except ValueError as exc:
        print(f"gnes stack: {exc}", file=sys.stderr)
        return 2
    try:
        # A scale-down waits for shards to hand their documents over, so no short client timeout.
        answer = request(workdir, message, timeout=None)
    except ControlError as exc:
        print(f"gnes stack: {exc}", file=sys.stderr)
        return 1
    pids = answer.get("pids", {})
    for service, slots in answer.get("replicas", {}).items():
        running = ", ".join(f"{service}.{slot} (pid {pids.get(f'{service}.{slot}', '-')})" for slot in slots)
        print(f"{service}: {len(slots)} replica(s){': ' + running if running else ''}")
    return 0
