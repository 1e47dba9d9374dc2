"""The lifecycle every pluggable part (encoder, indexer, doc store) shares.

Construction is cheap and only checks parameters, so a YAML config can be loaded and
validated without loading a model or opening a file; `start()` does the heavy work and
`close()` undoes it. Both are safe to call twice.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self


class Component:
    """Base of encoders and indexers: `__init__` validates, `start()` loads, `close()` releases.

    Subclasses that override `start`/`close` call `super().start()` last and
    `super().close()` last, so `started` is only True once everything is loaded.
    Used as a context manager, `__enter__` starts it unless it is already started (so
    `ix.start(path)` followed by `with ix:` keeps the chosen path) and `__exit__` closes it.
    """

    def __init__(self) -> None:
        self._started = False

    @property
    def started(self) -> bool:
        return self._started

    def start(self) -> None:
        self._started = True

    def close(self) -> None:
        self._started = False

    def _require_started(self) -> None:
        if not self._started:
            raise RuntimeError(f"{type(self).__name__} is not started; call start() or use it in a `with` block")

    def __enter__(self) -> Self:
        if not self._started:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


# Parameter checks shared by the constructors. They reject bool where an int is wanted
# (YAML `true` would otherwise silently become 1) and name the parameter in the message,
# because the config loader shows these messages to users next to the file and line.


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value}")
    return value


def check_optional_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int | None:
    return None if value is None else check_int(name, value, minimum, maximum)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false, got {type(value).__name__} {value!r}")
    return value


def check_str(name: str, value: Any, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty string, got {type(value).__name__} {value!r}")
    if choices is not None and value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value
