"""Turn a Docker Swarm stack file into the list of ``gnes`` processes that local mode starts.

One stack file describes both deployments: ``docker stack deploy`` runs it as containers, and local mode runs
the same services as processes on this machine. Everything a container would get from swarm is emulated here:
replicas, ``{{.Task.Slot}}`` templates, service-name DNS (-> 127.0.0.1), configs (-> the source file) and
volumes (-> directories under the work dir). Nothing is created or started by this module.
"""

from __future__ import annotations

import platform
import posixpath
import random
import shlex
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from gnes.stack.argv import LOOPBACK, flag_value, port_values
from gnes.stack.interpolate import StackError, interpolate_tree
from gnes.supervise.policy import RestartPolicy

__all__ = [
    "ProcessSpec",
    "StackError",
    "expand_stack",
    "find_free_port",
    "find_free_ports",
    "flag_value",
    "load_stack_file",
    "service_order",
]

# Replicas would collide on a fixed control port, so local mode always picks its own.
_CTRL_FLAGS = frozenset({"--port_ctrl", "--host_ctrl"})


@dataclass(frozen=True)
class ProcessSpec:
    """One local process: replica ``slot`` (1-based, as swarm counts) of ``service``."""

    service: str
    slot: int
    argv: tuple[str, ...]  # arguments of the ``gnes`` command (the image's entrypoint)
    env: dict[str, str] = field(default_factory=dict)  # the service's environment only, not os.environ
    ctrl_port: int = 0
    ctrl_host: str = LOOPBACK
    depends_on: tuple[str, ...] = ()
    volume_dirs: tuple[Path, ...] = ()  # directories to create before the start (volumes, bind sources)
    config_files: tuple[Path, ...] = ()  # sources of the service's configs; must exist at start
    restart: RestartPolicy = field(default_factory=RestartPolicy)  # deploy.restart_policy (swarm's defaults)
    stop_grace: float | None = None  # stop_grace_period, when the file sets one

    @property
    def name(self) -> str:
        return f"{self.service}.{self.slot}"

    def command_line(self) -> str:
        """The process as a shell line (its own environment first), for ``gnes stack --print``."""
        assignments = [f"{key}={value}" for key, value in self.env.items()]
        return shlex.join([*assignments, "gnes", *self.argv])


# Ports handed out for later use are taken below the kernel's ephemeral range (32768-60999 on
# Linux): a port the OS picks for a bind to port 0 (every control socket) or for an outgoing
# connection can then never be one that was chosen here but is not bound yet.
_CHOSEN_PORTS = (20000, 32000)


def find_free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free right now (another process may still take it later)."""
    return find_free_ports(1, host)[0]


def find_free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """n distinct TCP ports, each free right now, outside the ephemeral range."""
    chosen: list[int] = []
    candidates = random.sample(range(*_CHOSEN_PORTS), k=min(4 * n + 64, _CHOSEN_PORTS[1] - _CHOSEN_PORTS[0]))
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue  # in use
        chosen.append(port)
        if len(chosen) == n:
            return chosen
    raise OSError(f"could not find {n} free ports on {host} in {_CHOSEN_PORTS[0]}-{_CHOSEN_PORTS[1]}")


def load_stack_file(path: str | Path, env: Mapping[str, str]) -> dict[str, Any]:
    """Parse the stack file (YAML safe loader) and interpolate ``${VAR}`` in every value."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as stream:
            raw = YAML(typ="safe", pure=True).load(stream)
    except OSError as exc:
        raise StackError(f"cannot read stack file {path}: {exc}") from exc
    except YAMLError as exc:
        raise StackError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("services"), dict) or not raw["services"]:
        raise StackError(f"{path}: a stack file needs a non-empty 'services' mapping")
    for name, service in raw["services"].items():
        if service is not None and not isinstance(service, dict):
            raise StackError(f"{path}: services.{name} must be a mapping")
    return interpolate_tree(raw, env)


def service_order(services: Mapping[str, Any]) -> list[str]:
    """Services in start order: every service after its ``depends_on``; otherwise file order."""
    deps = {name: _depends_on(name, spec or {}, services) for name, spec in services.items()}
    order: list[str] = []
    while len(order) < len(deps):
        ready = next((name for name in deps if name not in order and all(d in order for d in deps[name])), None)
        if ready is None:
            raise StackError(f"depends_on has a cycle: {' -> '.join(_find_cycle(deps, order))}")
        order.append(ready)
    return order


def _depends_on(name: str, spec: Mapping[str, Any], services: Mapping[str, Any]) -> tuple[str, ...]:
    raw = spec.get("depends_on") or []
    # Compose allows a list of names or a mapping name -> {condition: ...}.
    names = list(raw) if isinstance(raw, (list, dict)) else None
    if names is None:
        raise StackError(f"services.{name}.depends_on must be a list or a mapping")
    for dep in names:
        if dep not in services:
            raise StackError(f"services.{name}.depends_on names an unknown service {dep!r}")
    return tuple(str(dep) for dep in names)


def _find_cycle(deps: Mapping[str, tuple[str, ...]], placed: Sequence[str]) -> list[str]:
    # Every unplaced service has an unplaced dependency, so walking those must revisit a node.
    node = next(name for name in deps if name not in placed)
    path: list[str] = []
    while node not in path:
        path.append(node)
        node = next(dep for dep in deps[node] if dep not in placed)
    return [*path[path.index(node) :], node]


def expand_stack(
    compose_file: str | Path,
    *,
    workdir: str | Path = ".gnes-local",
    overrides: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    stack_name: str = "gnes",
    free_port: Callable[[], int] = find_free_port,
) -> list[ProcessSpec]:
    """Expand the stack file into one :class:`ProcessSpec` per replica, in start order.

    ``environ`` (default: ``os.environ``) plus ``overrides`` is the interpolation environment;
    ``workdir`` is where named volumes become directories.
    """
    # replica.py builds on this module's readers of the service keys, hence the import here.
    from gnes.stack.replica import StackContext, with_ctrl_port

    ctx = StackContext.load(compose_file, workdir, overrides, environ, stack_name)
    # Everything but the control port first: picking one needs every port of every argv.
    partial = [
        ctx.replica(name, slot) for name in service_order(ctx.services) for slot in range(1, ctx.replicas(name) + 1)
    ]
    taken = {port for spec in partial for port in port_values(spec.argv)}
    result = []
    for spec in partial:
        port = _unused_port(free_port, taken)
        taken.add(port)
        result.append(with_ctrl_port(spec, port))
    return result


def _service_argv(name: str, spec: Mapping[str, Any]) -> list[str]:
    entrypoint = spec.get("entrypoint")
    # The image's entrypoint is `gnes`; local mode runs `python -m gnes`, so nothing else can be honoured.
    if entrypoint is not None and [posixpath.basename(e) for e in _as_argv(entrypoint)] != ["gnes"]:
        raise StackError(f"services.{name}.entrypoint: local mode only runs the gnes entrypoint")
    command = spec.get("command")
    if not command:
        raise StackError(f"services.{name} has no command; local mode needs the gnes subcommand to run")
    return _as_argv(command)


def _as_argv(value: Any) -> list[str]:
    # A string command is split like a shell would (compose does the same); a list is used as is.
    return shlex.split(value) if isinstance(value, str) else [str(item) for item in value]


def _replicas(name: str, spec: Mapping[str, Any]) -> int:
    deploy = spec.get("deploy") or {}
    if deploy.get("mode", "replicated") == "global":
        return 1  # one node here
    try:
        count = int(deploy.get("replicas", 1))
    except (TypeError, ValueError) as exc:
        raise StackError(f"services.{name}.deploy.replicas must be an integer, got {deploy['replicas']!r}") from exc
    if count < 0:
        raise StackError(f"services.{name}.deploy.replicas must not be negative")
    return count


def _service_hosts(services: Mapping[str, Any]) -> set[str]:
    """Every name by which swarm DNS reaches a service: the service names and their network aliases."""
    hosts = set(services)
    for spec in services.values():
        networks = (spec or {}).get("networks") or {}
        if isinstance(networks, dict):
            for net in networks.values():
                hosts.update(str(alias) for alias in ((net or {}).get("aliases") or []))
    return hosts


def _template_values(stack_name: str, service: str, slot: int) -> dict[str, str]:
    service_name = f"{stack_name}_{service}"  # swarm prefixes services with the stack name
    task_id = f"local-{service}-{slot}"
    return {
        "Service.ID": f"local-{service}",
        "Service.Name": service_name,
        "Service.Labels": f"map[com.docker.stack.namespace:{stack_name}]",
        "Node.ID": "local",
        "Node.Hostname": socket.gethostname(),
        "Node.Platform.OS": platform.system().lower(),
        "Node.Platform.Architecture": platform.machine(),
        "Task.ID": task_id,
        "Task.Name": f"{service_name}.{slot}.{task_id}",
        "Task.Slot": str(slot),
    }


def _environment(name: str, spec: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    raw = spec.get("environment") or {}
    if isinstance(raw, list):
        pairs = [(item.split("=", 1)[0], item.split("=", 1)[1] if "=" in item else None) for item in map(str, raw)]
    elif isinstance(raw, dict):
        pairs = [(str(key), value) for key, value in raw.items()]
    else:
        raise StackError(f"services.{name}.environment must be a list or a mapping")
    result: dict[str, str] = {}
    for key, value in pairs:
        if value is None:
            # A bare KEY passes the caller's value through, and is left out when unset (as compose does).
            if key in env:
                result[key] = env[key]
        else:
            result[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return result


def _unused_port(free_port: Callable[[], int], taken: set[int]) -> int:
    for _ in range(100):
        port = free_port()
        if port not in taken:
            return port
    raise StackError("could not find a free TCP port for a control socket")
