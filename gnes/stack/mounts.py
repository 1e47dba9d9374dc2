"""Swarm configs and volumes as local files and directories.

A config target (``/encoder_config``) maps to the config's source file; a path under a volume mount maps to
``<workdir>/volumes/<volume name>/...`` (the name rendered per replica, so ``{{.Task.Slot}}`` gives every
shard its own directory); a bind mount maps to its host path, relative to the stack file.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gnes.stack.interpolate import StackError, render_templates

__all__ = ["PathMapper", "config_files", "config_targets", "volume_mounts"]

_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def config_files(decl: Mapping[str, Any], base: Path) -> dict[str, Path]:
    """Top-level ``configs``: name -> source file, relative to the stack file's directory (as docker does)."""
    files = {}
    for key, spec in decl.items():
        source = (spec or {}).get("file")
        if not source:
            raise StackError(f"configs.{key}: local mode needs a 'file:' to read the config from")
        files[key] = (base / Path(source).expanduser()).resolve()
    return files


def config_targets(name: str, spec: Mapping[str, Any], configs: Mapping[str, Path]) -> dict[str, Path]:
    """A service's ``configs``: container path -> source file."""
    targets = {}
    for item in spec.get("configs") or []:
        source, target = (item, None) if isinstance(item, str) else (item.get("source"), item.get("target"))
        if source not in configs:
            raise StackError(f"services.{name}.configs uses {source!r}, which is not in the top-level configs")
        targets[posixpath.normpath(target or f"/{source}")] = configs[source]  # swarm's default target
    return targets


def volume_mounts(
    name: str,
    slot: int,
    spec: Mapping[str, Any],
    decl: Mapping[str, Any],
    templates: Mapping[str, str],
    base: Path,
    workdir: Path,
    stack_name: str,
) -> dict[str, Path]:
    """Container mount point -> local directory, for one replica."""
    result: dict[str, Path] = {}
    for index, item in enumerate(spec.get("volumes") or []):
        where = f"services.{name}.volumes[{index}]"
        kind, source, target = _parse_volume(item, where)
        if kind == "bind":
            local = (base / Path(render_templates(source, templates, where)).expanduser()).resolve()
        else:
            if kind == "volume" and source:
                volume = _volume_name(source, decl, stack_name, where)
            else:  # anonymous volume or tmpfs: private to this replica
                volume = f"{stack_name}_{name}_{slot}_" + re.sub(r"[^A-Za-z0-9_.-]", "_", target.strip("/"))
            volume = render_templates(volume, templates, where)
            if not _VOLUME_NAME.fullmatch(volume):
                raise StackError(f"{where}: volume name {volume!r} is not a valid docker volume name")
            local = workdir / "volumes" / volume
        result[posixpath.normpath(target)] = local
    return result


def _parse_volume(item: Any, where: str) -> tuple[str, str, str]:
    """(type, source or "" for an anonymous volume, container path) of a short- or long-syntax volume."""
    if isinstance(item, dict):
        kind, source, target = item.get("type", "volume"), item.get("source"), item.get("target")
    else:
        parts = str(item).split(":")
        source, target = (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
        # Docker's rule: a source that looks like a path is a bind mount, anything else names a volume.
        kind = "bind" if source and ("/" in source or source.startswith((".", "~"))) else "volume"
    if not target or not str(target).startswith("/"):
        raise StackError(f"{where}: a volume needs an absolute container path, got {target!r}")
    if kind not in ("volume", "bind", "tmpfs"):
        raise StackError(f"{where}: volume type {kind!r} is not supported in local mode")
    if kind == "bind" and not source:
        raise StackError(f"{where}: a bind mount needs a source")
    return kind, str(source or ""), str(target)


def _volume_name(key: str, decl: Mapping[str, Any], stack_name: str, where: str) -> str:
    if key not in decl:
        raise StackError(f"{where}: volume {key!r} is not declared in the top-level volumes")
    spec = decl[key] or {}
    if spec.get("name"):
        return str(spec["name"])
    return key if spec.get("external") else f"{stack_name}_{key}"  # swarm namespaces non-external volumes


class PathMapper:
    """Maps a container path (config target or anything under a mount point) to its local path."""

    def __init__(self, configs: Mapping[str, Path], mounts: Mapping[str, Path]) -> None:
        self._configs = configs
        # Longest mount point first, so a nested mount wins over its parent.
        self._mounts = sorted(mounts.items(), key=lambda item: len(item[0]), reverse=True)

    def __call__(self, value: str) -> str:
        if not value.startswith("/"):
            return value
        if value in self._configs:
            return str(self._configs[value])
        for target, local in self._mounts:
            if value == target:
                return str(local)
            if value.startswith(target.rstrip("/") + "/"):
                return str(local / value[len(target.rstrip("/")) + 1 :])
        return value
