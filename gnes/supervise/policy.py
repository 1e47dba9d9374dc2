"""Swarm's ``deploy.restart_policy``: when a task that ended is started again, and when it is given up.

As Docker documents it: ``condition`` is ``none`` (never restart), ``on-failure`` (restart after a non-zero
exit; a kill by a signal counts as one) or ``any`` (always, the default); ``delay`` is the wait before each
restart (swarm's default: 5s); ``max_attempts`` caps the restarts (default: no cap), counted within the
last ``window`` when one is set (swarmkit counts the restarts whose time falls in the window), else in total.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CONDITIONS", "RestartPolicy", "parse_duration"]

CONDITIONS = ("none", "on-failure", "any")

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: Any, what: str = "duration") -> float:
    """Seconds of a Go duration as compose files write them (``5s``, ``1m30s``, ``250ms``); a bare number
    is seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a duration such as 5s, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _PART.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"{what}: expected a duration such as 5s or 1m30s, got {value!r}")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


@dataclass(frozen=True)
class RestartPolicy:
    condition: str = "any"
    delay: float = 5.0
    max_attempts: int | None = None  # None: never give up
    window: float = 0.0  # 0: count every restart since the start

    @classmethod
    def never(cls) -> RestartPolicy:
        return cls(condition="none")

    @classmethod
    def from_compose(cls, raw: Mapping[str, Any] | None, where: str = "restart_policy") -> RestartPolicy:
        """The policy of a ``deploy.restart_policy`` mapping; absent keys take swarm's defaults."""
        raw = raw or {}
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where} must be a mapping")
        unknown = set(raw) - {"condition", "delay", "max_attempts", "window"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        condition = str(raw.get("condition", "any"))
        if condition not in CONDITIONS:
            raise ValueError(f"{where}.condition must be one of {', '.join(CONDITIONS)}, got {condition!r}")
        attempts = raw.get("max_attempts")
        try:
            max_attempts = None if attempts is None else int(attempts)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}.max_attempts must be an integer, got {attempts!r}") from exc
        if max_attempts is not None and max_attempts < 0:
            raise ValueError(f"{where}.max_attempts must not be negative")
        if max_attempts == 0:
            max_attempts = None  # swarm reads 0 as "no limit"
        delay = parse_duration(raw.get("delay", 5.0), f"{where}.delay")
        window = parse_duration(raw.get("window", 0.0), f"{where}.window")
        return cls(condition, delay, max_attempts, window)

    def wants_restart(self, returncode: int) -> bool:
        """Does an exit with ``returncode`` (negative: killed by that signal) call for a restart at all?"""
        if self.condition == "any":
            return True
        return self.condition == "on-failure" and returncode != 0

    def attempts_used(self, restarts: Sequence[float], now: float) -> int:
        """Restarts that count against ``max_attempts`` at time ``now`` (``restarts``: their monotonic times)."""
        if self.window > 0:
            return sum(1 for when in restarts if when > now - self.window)
        return len(restarts)

    def allows_restart(self, restarts: Sequence[float], now: float) -> bool:
        return self.max_attempts is None or self.attempts_used(restarts, now) < self.max_attempts

    def describe(self) -> str:
        limit = "no limit" if self.max_attempts is None else f"at most {self.max_attempts}"
        window = f" per {self.window:g}s" if self.window > 0 and self.max_attempts is not None else ""
        return f"condition {self.condition}, delay {self.delay:g}s, {limit}{window}"
