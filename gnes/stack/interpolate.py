"""Docker-compose style ``${VAR}`` interpolation and swarm ``{{.Task.Slot}}`` templates.

Kept separate from the stack expander so both rules can be tested on plain strings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["StackError", "interpolate", "interpolate_tree", "render_templates"]


class StackError(ValueError):
    """The stack file cannot be turned into local processes; the message says where and why."""


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The ":" forms also replace an empty value; the bare forms only an unset one.
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


def interpolate(text: str, env: Mapping[str, str], where: str = "") -> str:
    """Substitute variables in one string the way ``docker compose`` does.

    Supports ``$VAR``, ``${VAR}``, ``${VAR:-default}`` (unset or empty), ``${VAR-default}`` (unset),
    ``${VAR:?msg}``/``${VAR?msg}``, ``${VAR:+alt}``/``${VAR+alt}``, nested variables inside defaults and
    ``$$`` for a literal ``$``. Unlike docker (which warns and substitutes ""), an unset variable without
    a default is an error: a silently empty port or path only fails later, far from the cause.
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1 : i + 2]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            end = _matching_brace(text, i + 1, where)
            out.append(_substitute(text[i + 2 : end], env, where))
            i = end + 1
        else:
            match = _NAME.match(text, i + 1)
            if match is None:
                raise StackError(f"{_at(where)}invalid interpolation format in {text!r} (use $$ for a literal $)")
            out.append(_lookup(match.group(0), env, where))
            i = match.end()
    return "".join(out)


def _matching_brace(text: str, open_at: int, where: str) -> int:
    depth = 0
    for pos in range(open_at, len(text)):
        if text[pos] == "{":
            depth += 1
        elif text[pos] == "}":
            depth -= 1
            if depth == 0:
                return pos
    raise StackError(f"{_at(where)}unterminated '${{' in {text!r}")


def _substitute(body: str, env: Mapping[str, str], where: str) -> str:
    match = _NAME.match(body)
    if match is None:
        raise StackError(f"{_at(where)}invalid variable name in '${{{body}}}'")
    name, rest = match.group(0), body[match.end() :]
    if not rest:
        return _lookup(name, env, where)
    operator = next((op for op in _OPERATORS if rest.startswith(op)), None)
    if operator is None:
        raise StackError(f"{_at(where)}invalid interpolation format in '${{{body}}}'")
    value = env.get(name)
    # The ":" variants treat an empty value like an unset one.
    present = value is not None and (value != "" or not operator.startswith(":"))
    # The argument may itself contain variables; it is only evaluated when it is used (like a shell).
    argument = rest[len(operator) :]
    if operator.endswith("-"):
        return value if present else interpolate(argument, env, where)  # type: ignore[return-value]
    if operator.endswith("+"):
        return interpolate(argument, env, where) if present else ""
    if not present:
        reason = interpolate(argument, env, where) or "is not set"
        raise StackError(f"{_at(where)}required variable {name} {reason}")
    return value  # type: ignore[return-value]


def _lookup(name: str, env: Mapping[str, str], where: str) -> str:
    if name not in env:
        raise StackError(
            f"{_at(where)}variable {name} is not set and has no default; "
            f"set it in the environment, pass --env {name}=..., or write ${{{name}:-default}}"
        )
    return env[name]


def _at(where: str) -> str:
    return f"{where}: " if where else ""


def interpolate_tree(node: Any, env: Mapping[str, str], where: str = "") -> Any:
    """Interpolate every string value (not key) of a parsed YAML tree, as compose does."""
    if isinstance(node, str):
        return interpolate(node, env, where)
    if isinstance(node, Mapping):
        return {
            key: interpolate_tree(value, env, f"{where}.{key}" if where else str(key)) for key, value in node.items()
        }
    if isinstance(node, list):
        return [interpolate_tree(value, env, f"{where}[{index}]") for index, value in enumerate(node)]
    return node


_TEMPLATE = re.compile(r"\{\{\s*\.([A-Za-z][A-Za-z.]*)\s*\}\}")


def render_templates(text: str, values: Mapping[str, str], where: str = "") -> str:
    """Resolve swarm placeholders such as ``{{.Task.Slot}}`` (swarm does this per task at deploy time).

    Only the plain ``{{.Field.Path}}`` form is supported; Go template functions are not.
    """

    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            known = ", ".join(sorted(values))
            raise StackError(f"{_at(where)}unknown swarm template {match.group(0)!r} (known: {known})")
        return values[key]

    rendered = _TEMPLATE.sub(replace, text)
    if "{{" in rendered:
        raise StackError(f"{_at(where)}unsupported swarm template in {text!r}")
    return rendered
