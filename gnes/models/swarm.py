"""The Swarm backend of the model controller: a named model is a Docker service on the stack's network.

It talks to the Docker Engine API over its unix socket (no docker CLI needed in the image). A model's
service, `<stack>_model-NAME`, copies the stack's encoder service (image, arguments, network,
environment, healthcheck, restart policy) with only the component changed: a plugin file or a YAML
file is sent as a Swarm config and mounted read-only; a package must be installed in the image. A
model directory cannot travel as a config (they hold at most 500 KB): build it into the image and
name it in a YAML. The process that runs this backend needs the Docker socket (on Swarm: the http
service with /var/run/docker.sock mounted, on a manager node).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from ..stack.argv import strip_flags
from .controller import ModelError
from .plugin import check_model_name

_OWN_FLAGS = {"--yaml_path", "--name", "--model_name", "--plugin", "--package"}
_MOUNT = {"plugin": "/gnes-model/plugin.py", "yaml_path": "/gnes-model/encoder.yml"}
LABEL = "gnes.model"
READY_TIMEOUT_S = 300.0


class SwarmBackend:
    kind = "swarm"

    def __init__(self, stack: str, socket: str = "/var/run/docker.sock", template: str = "encoder") -> None:
        self.stack = stack
        self.socket = socket
        self.template = template

    # ---- the Engine API ----------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        import httpx

        transport = httpx.HTTPTransport(uds=self.socket)
        try:
            with httpx.Client(transport=transport, base_url="http://docker", timeout=60) as client:
                response = client.request(method, path, json=body, params=params)
        except httpx.TransportError as exc:
            raise ModelError(f"the Docker engine at {self.socket} did not answer: {exc}", 409) from None
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            status = 404 if response.status_code == 404 else 409
            raise ModelError(f"docker {method} {path}: {response.status_code} {message}", status)
        return response.json() if response.content else None

    def _service(self, name: str) -> str:
        return f"{self.stack}_model-{check_model_name(name)}"

    # ---- the backend ---------------------------------------------------------------------
    def add(self, name: str, source: dict[str, str], replicas: int) -> dict[str, Any]:
        template = self._call("GET", f"/services/{self.stack}_{self.template}")["Spec"]
        task = json.loads(json.dumps(template["TaskTemplate"]))  # a deep copy to edit
        container = task["ContainerSpec"]
        flags, configs = self._component(name, source)
        container["Args"] = [*strip_flags(container.get("Args", []), _OWN_FLAGS), *flags, "--model_name", name]
        container["Args"] += ["--name", f"model-{name}"]
        container["Configs"] = configs  # the encoder's own config (its YAML) is not needed
        for network in task.get("Networks", []):
            network["Aliases"] = [f"model-{name}"]  # the stack gave the encoder's: its name is not ours
        service = self._service(name)
        spec = {
            "Name": service,
            "Labels": {LABEL: name, "com.docker.stack.namespace": self.stack},
            "TaskTemplate": task,
            "Mode": {"Replicated": {"Replicas": replicas}},
            "EndpointSpec": template.get("EndpointSpec", {"Mode": "dnsrr"}),
        }
        self._call("POST", "/services/create", spec)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while self._running(service) < replicas:
            if time.monotonic() > deadline:
                raise ModelError(
                    f"model {name!r}: {replicas} task(s) of {service} not running after {READY_TIMEOUT_S:g}s", 504
                )
            time.sleep(1.0)
        return {"service": service, "replicas": replicas}

    def _component(self, name: str, source: dict[str, str]) -> tuple[list[str], list[dict[str, Any]]]:
        ((kind, value),) = source.items()
        if kind == "package":
            return ["--package", value], []
        if kind == "path":
            raise ModelError(
                f"model {name!r}: a model directory cannot travel as a Swarm config; put it in the image and load it "
                "with a --plugin or --package",
                422,
            )
        data = Path(value).expanduser().read_bytes()
        digest = hashlib.sha256(data).hexdigest()[:12]
        config_name = f"{self._service(name)}-{kind}-{digest}"
        created = self._call(
            "POST",
            "/configs/create",
            {"Name": config_name, "Labels": {LABEL: name}, "Data": base64.b64encode(data).decode()},
        )
        target = _MOUNT[kind]
        mount = {"File": {"Name": target, "UID": "0", "GID": "0", "Mode": 0o444}}
        flag = "--plugin" if kind == "plugin" else "--yaml_path"
        return [flag, target], [{**mount, "ConfigID": created["ID"], "ConfigName": config_name}]

    def _running(self, service: str) -> int:
        filters = json.dumps({"service": [service], "desired-state": ["running"]})
        tasks = self._call("GET", "/tasks", params={"filters": filters})
        return sum(task.get("Status", {}).get("State") == "running" for task in tasks)

    def remove(self, name: str) -> None:
        self._call("DELETE", f"/services/{self._service(name)}")
        filters = json.dumps({"label": [f"{LABEL}={name}"]})
        for _ in range(30):  # a config is in use until the service's tasks are gone
            configs = self._call("GET", "/configs", params={"filters": filters})
            if not configs:
                return
            for config in configs:
                try:
                    self._call("DELETE", f"/configs/{config['ID']}")
                except ModelError:
                    pass
            time.sleep(1.0)

    def list(self) -> dict[str, dict[str, Any]]:
        filters = json.dumps({"label": [LABEL, f"com.docker.stack.namespace={self.stack}"]})
        models = {}
        for service in self._call("GET", "/services", params={"filters": filters}):
            spec = service["Spec"]
            name = spec["Labels"][LABEL]
            replicas = spec.get("Mode", {}).get("Replicated", {}).get("Replicas", 0)
            models[name] = {"service": spec["Name"], "replicas": replicas, "running": self._running(spec["Name"])}
        return models
