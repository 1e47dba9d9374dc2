"""Rewriting of ``gnes`` command lines for local mode: host flags, container paths, control flags."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

__all__ = ["HOST_FLAGS", "LOOPBACK", "flag_value", "port_values", "rewrite_argv", "strip_flags"]

LOOPBACK = "127.0.0.1"
# Flags whose value is a host name; a service name or alias there means "that container" in swarm.
HOST_FLAGS = frozenset({"--host_in", "--host_out", "--host_broadcast", "--grpc_host", "--http_host", "--host_ctrl"})


def flag_value(argv: Sequence[str], flag: str) -> str | None:
    """The last value given to ``flag`` in argv, in either the ``--flag value`` or ``--flag=value`` form."""
    found: str | None = None
    for index, token in enumerate(argv):
        if token == flag and index + 1 < len(argv):
            found = argv[index + 1]
        elif token.startswith(flag + "="):
            found = token[len(flag) + 1 :]
    return found


def strip_flags(argv: Sequence[str], flags: Iterable[str]) -> list[str]:
    """argv without ``flags`` (both the ``--flag value`` and the ``--flag=value`` form)."""
    flags = set(flags)
    out: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in flags:
            skip = True  # drop the flag and its value
        elif token.split("=", 1)[0] not in flags:
            out.append(token)
    return out


def rewrite_argv(argv: Sequence[str], hosts: set[str], mapper: Callable[[str], str]) -> list[str]:
    """Point service names/aliases (and 0.0.0.0: local mode listens on loopback only) in host flags at
    127.0.0.1, and map container paths in any other value to their local paths."""

    def value(flag: str | None, text: str) -> str:
        if flag in HOST_FLAGS:
            return LOOPBACK if text in hosts or text == "0.0.0.0" else text
        return mapper(text)

    out: list[str] = []
    previous: str | None = None
    for token in argv:
        if token.startswith("--") and "=" in token:
            flag, text = token.split("=", 1)
            out.append(f"{flag}={value(flag, text)}")
            previous = None
        else:
            out.append(value(previous, token))
            previous = token if token.startswith("-") else None
    return out


def port_values(argv: Sequence[str]) -> list[int]:
    """Numeric values of every port flag (``--port_in``, ``--grpc_port``, ...), so control ports never take a
    port the stack itself uses."""
    values = []
    for index, token in enumerate(argv):
        flag, _, text = token.partition("=")
        if flag.startswith("--") and "port" in flag:
            text = text or (argv[index + 1] if index + 1 < len(argv) else "")
            if text.isdigit():
                values.append(int(text))
    return values
