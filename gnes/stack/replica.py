"""One replica of one service of a stack file: what :func:`gnes.stack.compose.expand_stack` builds for each
slot, and what scaling a running stack builds for a new slot."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gnes.stack import mounts as _mounts
from gnes.stack.argv import LOOPBACK, flag_value, port_values, rewrite_argv, strip_flags
from gnes.stack.compose import (
    _CTRL_FLAGS,
    ProcessSpec,
    _depends_on,
    _environment,
    _replicas,
    _service_argv,
    _service_hosts,
    _template_values,
    _unused_port,
    find_free_port,
    load_stack_file,
)
from gnes.stack.interpolate import StackError, render_templates
from gnes.supervise.policy import RestartPolicy, parse_duration

__all__ = ["StackContext", "expand_replica", "with_ctrl_port"]


def expand_replica(
    compose_file: str | Path,
    service: str,
    slot: int,
    *,
    taken_ports: Iterable[int] = (),
    workdir: str | Path = ".gnes-local",
    overrides: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    stack_name: str = "gnes",
    free_port: Callable[[], int] = find_free_port,
) -> ProcessSpec:
    """Replica ``slot`` of one service, as :func:`expand_stack` would give it (used to scale a running stack;
    ``taken_ports``: ports of the running processes, which its control port must avoid)."""
    ctx = StackContext.load(compose_file, workdir, overrides, environ, stack_name)
    if service not in ctx.services:
        raise StackError(f"the stack has no service {service!r} (it has {', '.join(ctx.services)})")
    if slot < 1:
        raise StackError(f"replica slots count from 1, got {slot}")
    spec = ctx.replica(service, slot)
    taken = set(taken_ports) | set(port_values(spec.argv))
    return with_ctrl_port(spec, _unused_port(free_port, taken))


@dataclass(frozen=True)
class StackContext:
    """The parsed stack file and what every replica's expansion needs from it."""

    services: dict[str, Any]
    stack_name: str
    base: Path
    workdir: Path
    hosts: set[str]
    configs: dict[str, Path]
    volumes_decl: dict[str, Any]
    env: dict[str, str]

    @classmethod
    def load(
        cls,
        compose_file: str | Path,
        workdir: str | Path,
        overrides: Mapping[str, str] | None,
        environ: Mapping[str, str] | None,
        stack_name: str,
    ) -> StackContext:
        compose_file = Path(compose_file).resolve()
        env = {**(os.environ if environ is None else environ), **(overrides or {})}
        stack = load_stack_file(compose_file, env)
        services: dict[str, Any] = stack["services"]
        base = compose_file.parent
        configs = _mounts.config_files(stack.get("configs") or {}, base)
        return cls(
            services, stack_name, base, Path(workdir).resolve(), _service_hosts(services), configs,
            stack.get("volumes") or {}, env,
        )  # fmt: skip

    def replicas(self, name: str) -> int:
        return _replicas(name, self.services[name] or {})

    def replica(self, name: str, slot: int) -> ProcessSpec:
        """Replica ``slot`` of service ``name``, without its control port."""
        spec = self.services[name] or {}
        argv = strip_flags(_service_argv(name, spec), _CTRL_FLAGS)
        targets = _mounts.config_targets(name, spec, self.configs)
        templates = _template_values(self.stack_name, name, slot)
        mounts = _mounts.volume_mounts(
            name, slot, spec, self.volumes_decl, templates, self.base, self.workdir, self.stack_name
        )
        mapper = _mounts.PathMapper(targets, mounts)
        proc_env = {
            key: mapper(render_templates(value, templates, f"services.{name}.environment.{key}"))
            for key, value in _environment(name, spec, self.env).items()
        }
        # Swarm mounts every config of the service (and deploy fails if one is missing), so require all.
        files = tuple(dict.fromkeys(targets.values()))
        return ProcessSpec(
            name,
            slot,
            tuple(rewrite_argv(argv, self.hosts, mapper)),
            proc_env,
            0,
            LOOPBACK,
            _depends_on(name, spec, self.services),
            tuple(mounts.values()),
            files,
            restart=_restart_policy(name, spec),
            stop_grace=_stop_grace(name, spec),
        )


def with_ctrl_port(spec: ProcessSpec, port: int) -> ProcessSpec:
    argv = list(spec.argv)
    if flag_value(argv, "--grpc_port") is not None and flag_value(argv, "--grpc_host") is None:
        argv += ["--grpc_host", LOOPBACK]  # the frontend's own default may be every interface
    argv += ["--port_ctrl", str(port), "--host_ctrl", LOOPBACK]
    return replace(spec, argv=tuple(argv), ctrl_port=port)


def _restart_policy(name: str, spec: Mapping[str, Any]) -> RestartPolicy:
    try:
        return RestartPolicy.from_compose(
            (spec.get("deploy") or {}).get("restart_policy"), f"services.{name}.deploy.restart_policy"
        )
    except ValueError as exc:
        raise StackError(str(exc)) from exc


def _stop_grace(name: str, spec: Mapping[str, Any]) -> float | None:
    raw = spec.get("stop_grace_period")
    try:
        return None if raw is None else parse_duration(raw, f"services.{name}.stop_grace_period")
    except ValueError as exc:
        raise StackError(str(exc)) from exc
