"""The stack's side of the local model backend: a named model is a new service of the running stack.

`gnes stack`'s control channel (gnes/stack/control.py) hands the ops model_add, model_remove and
model_list here. A model's service, `model-NAME`, is built from the stack's own encoder replica
(same input and output sockets, same restart policy): only the component changes (--plugin,
--package, or a YAML written for --path) and --model_name is added. Its replicas start and are
ready (READY on their control ports) when model_add returns.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..stack.argv import flag_value, port_values, strip_flags
from ..stack.compose import ProcessSpec, find_free_port
from ..stack.local import LocalStack
from ..stack.replica import with_ctrl_port
from .plugin import check_model_name

PREFIX = "model-"
TEMPLATE_SERVICE = "encoder"
_OWN_FLAGS = {"--yaml_path", "--name", "--model_name", "--plugin", "--package", "--port_ctrl", "--host_ctrl"}
OPS = ("model_add", "model_remove", "model_list")


def service_of(name: str) -> str:
    return PREFIX + check_model_name(name)


def component_flags(source: dict[str, Any], workdir: Path, name: str) -> list[str]:
    """The encoder flags of one model source: exactly one of plugin, package, path or yaml_path."""
    given = {key: str(source[key]) for key in ("plugin", "package", "path", "yaml_path") if source.get(key)}
    if len(given) != 1:
        got = sorted(given) or "none"
        raise ValueError(f"model {name!r}: give exactly one of --path, --plugin, --package (got {got})")
    key, value = next(iter(given.items()))
    if key == "package":
        return ["--package", value]
    path = Path(value).expanduser().resolve()
    if key == "plugin":
        if not path.is_file():
            raise ValueError(f"model {name!r}: plugin file {path} does not exist")
        return ["--plugin", str(path)]
    if key == "yaml_path":
        if not path.is_file():
            raise ValueError(f"model {name!r}: YAML file {path} does not exist")
        return ["--yaml_path", str(path)]
    if not path.is_dir():
        raise ValueError(f"model {name!r}: --path {path} is not a local model directory")
    # A sentence-transformers model directory: the encoder gets a YAML naming it.
    config = workdir / "models" / f"{name}.yml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"!SentenceTransformerEncoder\nmodel_path: {str(path)!r}\nnormalize: true\n", encoding="utf-8")
    return ["--yaml_path", str(config)]


def model_specs(stack: LocalStack, name: str, source: dict[str, Any], replicas: int) -> list[ProcessSpec]:
    """The replicas of a model's service, from the stack's running encoder."""
    service = service_of(name)
    if replicas < 1:
        raise ValueError(f"model {name!r}: replicas must be at least 1, got {replicas}")
    if stack.slots(service):
        raise ValueError(f"model {name!r} is already served ({len(stack.slots(service))} replicas)")
    template = next((spec for spec in stack.specs if spec.service == TEMPLATE_SERVICE), None)
    if template is None:
        raise ValueError(f"the stack has no {TEMPLATE_SERVICE!r} service to build a model's service from")
    argv = strip_flags(template.argv, _OWN_FLAGS)
    argv += [*component_flags(source, stack.workdir, name), "--model_name", name, "--name", service]
    taken = {port for spec in stack.specs for port in (*port_values(spec.argv), spec.ctrl_port)}
    specs = []
    for slot in range(1, replicas + 1):
        port = find_free_port()
        while port in taken:
            port = find_free_port()
        taken.add(port)
        base = replace(template, service=service, slot=slot, argv=tuple(argv), depends_on=())
        specs.append(with_ctrl_port(base, port))
    return specs


def served_models(stack: LocalStack) -> dict[str, dict[str, Any]]:
    models: dict[str, dict[str, Any]] = {}
    for spec in stack.specs:
        if spec.service.startswith(PREFIX) and spec.slot in stack.slots(spec.service):
            name = spec.service[len(PREFIX) :]
            entry = models.setdefault(name, {"service": spec.service, "replicas": 0, "controls": []})
            entry["replicas"] += 1
            entry["controls"].append([spec.ctrl_host, spec.ctrl_port])
            for flag in ("--plugin", "--package", "--yaml_path"):
                if flag_value(spec.argv, flag):
                    entry["source"] = {flag.lstrip("-"): flag_value(spec.argv, flag)}
    return models


def handle(stack: LocalStack, message: dict[str, Any]) -> dict[str, Any]:
    """One model op of the control channel; raises ValueError for what the caller got wrong."""
    op = message.get("op")
    if op == "model_add":
        name = str(message.get("name", ""))
        specs = model_specs(stack, name, dict(message.get("source") or {}), int(message.get("replicas", 1)))
        stack.add(specs)
    elif op == "model_remove":
        name = str(message.get("name", ""))
        service = service_of(name)
        if not stack.slots(service):
            raise ValueError(f"no model named {name!r} is served")
        grace = message.get("stop_grace")
        stack.scale(service, 0, None if grace is None else float(grace))
    return {"models": served_models(stack)}
