"""Load a component from YAML: `!ClassName` tags, mapping keys as constructor arguments.

Every error names the file and line (1-based) and the reason, so a bad config fails at
start with something a user can fix.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any, TypeVar

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..component import Component
from .registry import COMPONENT_CLASSES

T = TypeVar("T", bound=Component)


class ConfigError(ValueError):
    """A config that cannot be loaded; the message reads `file:line: reason`."""


def load_component(source: str | Path, expected: type[T]) -> T:
    text, where = _read(source)
    yaml = YAML(typ="safe", pure=True)
    try:
        node = yaml.compose(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError(f"{where}:{line}: invalid YAML: {exc.problem or exc.context}") from None
    except YAMLError as exc:
        raise ConfigError(f"{where}:1: invalid YAML: {exc}") from None
    if node is None:
        raise ConfigError(f"{where}:1: the file is empty; expected a tagged component such as !HashEncoder")
    if not _is_component_tag(node.tag):
        raise ConfigError(f"{where}:{_line(node)}: the top node needs a component tag such as !{expected.__name__}")
    component = _build(node, where)
    if not isinstance(component, expected):
        raise ConfigError(f"{where}:{_line(node)}: !{_tag_name(node.tag)} is not a {expected.__name__}")
    return component


def _read(source: str | Path) -> tuple[str, str]:
    if isinstance(source, str) and ("\n" in source or source.lstrip().startswith("!")):
        return source, "<string>"
    path = Path(source)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except OSError as exc:
        raise ConfigError(f"{path}:1: cannot read the config: {exc.strerror or exc}") from None


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _is_component_tag(tag: str | None) -> bool:
    return bool(tag) and tag.startswith("!") and not tag.startswith("!!")


def _tag_name(tag: str) -> str:
    return tag[1:]


def _resolve(node: Node, where: str) -> type[Component]:
    name = _tag_name(node.tag)
    target = COMPONENT_CLASSES.get(name)
    if target is None and ":" in name:
        target = name
    if target is None:
        known = ", ".join(f"!{k}" for k in sorted(COMPONENT_CLASSES))
        raise ConfigError(f"{where}:{_line(node)}: unknown tag !{name}; known tags: {known}, or !package.module:Class")
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:
        raise ConfigError(f"{where}:{_line(node)}: !{name}: cannot import {module_name}: {exc}") from None
    except AttributeError:
        raise ConfigError(f"{where}:{_line(node)}: !{name}: {module_name} has no {class_name}") from None
    if not (inspect.isclass(cls) and issubclass(cls, Component)):
        raise ConfigError(f"{where}:{_line(node)}: !{name} is not a gnes component (a Component subclass)")
    return cls


def _build(node: Node, where: str) -> Any:
    if _is_component_tag(node.tag):
        return _construct(node, where)
    if isinstance(node, MappingNode):
        return {_scalar(k, where): _build(v, where) for k, v in node.value}
    if isinstance(node, SequenceNode):
        return [_build(item, where) for item in node.value]
    return _scalar(node, where)


def _scalar(node: Node, where: str) -> Any:
    if not isinstance(node, ScalarNode):
        raise ConfigError(f"{where}:{_line(node)}: expected a plain value here")
    # The safe constructor turns a plain scalar node into int/float/bool/None/str.
    return YAML(typ="safe", pure=True).constructor.construct_object(node, deep=True)


def _construct(node: Node, where: str) -> Component:
    cls = _resolve(node, where)
    name = _tag_name(node.tag)
    if isinstance(node, MappingNode):
        kwargs = {}
        for key_node, value_node in node.value:
            kwargs[_scalar(key_node, where)] = (_line(key_node), _build(value_node, where))
    elif isinstance(node, ScalarNode) and node.value in ("", "~", "null"):
        kwargs = {}
    else:
        raise ConfigError(f"{where}:{_line(node)}: !{name} takes a mapping of parameters")
    signature = inspect.signature(cls.__init__)
    params = [p for p in list(signature.parameters)[1:] if p not in ("args", "kwargs")]
    for key, (line, _) in kwargs.items():
        if key not in signature.parameters or key == "self":
            raise ConfigError(f"{where}:{line}: !{name} has no parameter {key!r}; its parameters: {', '.join(params)}")
    values = {k: v for k, (_, v) in kwargs.items()}
    try:
        signature.bind(None, **values)
    except TypeError as exc:
        raise ConfigError(f"{where}:{_line(node)}: !{name}: {exc}; its parameters: {', '.join(params)}") from None
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}:{_line(node)}: !{name}: {exc}") from None
