"""The Kubernetes manifests in k8s/: what `gnes stack k8s` writes from the stack file, valid against the
Kubernetes schemas (offline, kubernetes-validate), and wired so that every service finds the others."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from gnes.stack.argv import flag_value
from gnes.stack.cli import main as stack_main
from gnes.stack.k8s import k8s_manifests

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "compose" / "gnes-swarm.yml"
K8S = REPO / "k8s"
K8S_VERSION = "1.30.0"  # no newer feature is used: the manifests work on any current cluster


def committed() -> dict[str, list[dict[str, Any]]]:
    return {path.name: list(YAML(typ="safe").load_all(path.read_text())) for path in sorted(K8S.glob("*.yaml"))}


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for docs in committed().values() for doc in docs if doc["kind"] == kind}


def container(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]["containers"][0]


def test_the_committed_manifests_are_what_the_generator_writes_now(tmp_path: Path) -> None:
    assert stack_main(["k8s", "-f", str(COMPOSE), "-o", str(tmp_path)]) == 0
    fresh = {path.name: path.read_text() for path in sorted(tmp_path.iterdir())}
    old = {path.name: path.read_text() for path in sorted(K8S.glob("*.yaml"))}
    hint = "k8s/ is stale: run `gnes stack k8s -f compose/gnes-swarm.yml -o k8s/` and commit it"
    assert sorted(fresh) == sorted(old), hint
    for name in fresh:
        assert fresh[name] == old[name], f"{name}: {hint}"


def test_every_manifest_is_valid_for_kubernetes() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = [doc for docs in committed().values() for doc in docs]
    assert len(docs) >= 13
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    # The validator does check: a misspelt field is refused.
    broken = k8s_manifests(COMPOSE)["encoder.yaml"][1]
    container(broken)["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_the_indexer_is_a_stateful_set_with_a_claim_per_pod_and_the_others_are_deployments() -> None:
    sets, deployments = by_kind("StatefulSet"), by_kind("Deployment")
    assert sorted(sets) == ["indexer"]
    assert sorted(deployments) == [
        "encoder",
        "frontend",
        "http",
        "income-proxy",
        "middleman-proxy",
        "outgoing-proxy",
        "preprocess",  # 0 replicas unless chunking is wanted
    ]
    indexer = sets["indexer"]
    claim = indexer["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounts = {m["name"]: m["mountPath"] for m in container(indexer)["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/out_data"
    assert flag_value(container(indexer)["args"], "--dump_path") == "/out_data/index"
    assert indexer["spec"]["serviceName"] == "indexer" and indexer["spec"]["replicas"] == 3


def test_services_are_headless_except_the_published_entry_points_and_every_peer_is_reachable() -> None:
    services = by_kind("Service")
    workloads = {**by_kind("Deployment"), **by_kind("StatefulSet")}
    assert sorted(services) == sorted(workloads)
    assert "clusterIP" not in services["frontend"]["spec"]
    assert "clusterIP" not in services["http"]["spec"]
    for name in ("frontend", "http"):  # the status overview asks every Service's control port
        peers = {item["name"]: item["value"] for item in container(workloads[name])["env"]}["GNES_STATUS_PEERS"]
        where = dict(item.split("=") for item in peers.split(","))
        running = [n for n, w in workloads.items() if w["spec"]["replicas"]]  # not the optional preprocess (0)
        assert sorted(where) == sorted(running) and all(w == f"{n}:5399" for n, w in where.items()), peers
    assert {"name": "http", "port": 8080} in services["http"]["spec"]["ports"]
    for name in ("indexer", "income-proxy", "middleman-proxy", "outgoing-proxy"):
        assert services[name]["spec"]["clusterIP"] == "None", name
    for name, workload in workloads.items():
        args = container(workload)["args"]
        pairs = (("--host_in", "--port_in"), ("--host_out", "--port_out"), ("--host_broadcast", "--port_broadcast"))
        for host_flag, port_flag in pairs:
            host, port = flag_value(args, host_flag), flag_value(args, port_flag)
            if host is None or host in ("0.0.0.0", "127.0.0.1") or port is None:
                continue
            # The peer's Service name resolves in the cluster, and that Service has the port.
            assert host in services, f"{name} connects to {host}, which has no Service"
            assert int(port) in [p["port"] for p in services[host]["spec"]["ports"]], f"{name} -> {host}:{port}"


def test_probes_ask_the_control_port_and_configs_come_from_config_maps() -> None:
    configs = by_kind("ConfigMap")
    for name, workload in {**by_kind("Deployment"), **by_kind("StatefulSet")}.items():
        main = container(workload)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = main[probe]["exec"]["command"]
            assert command[:6] == ["gnes", "healthcheck", "--host", "127.0.0.1", "--port", "5399"], name
        assert flag_value(main["args"], "--port_ctrl") == "5399"
        for volume in workload["spec"]["template"]["spec"].get("volumes", []):
            assert volume["configMap"]["name"] in configs
    indexer_config = configs["indexer-config"]["data"]["indexer_config"]
    assert indexer_config == (REPO / "yaml" / "indexer-flat-ip.yml").read_text()


def test_the_wrapper_gives_each_indexer_pod_its_ordinal_plus_one_as_task_slot(tmp_path: Path) -> None:
    main = container(by_kind("StatefulSet")["indexer"])
    assert "TASK_SLOT" not in [item["name"] for item in main["env"]]  # the wrapper sets it
    fake = tmp_path / "gnes"  # stands in for the image's gnes: prints what it got
    fake.write_text('#!/bin/sh\necho "$TASK_SLOT $*"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    for pod, slot in (("indexer-0", "1"), ("indexer-2", "3"), ("gnes-indexer-11", "12")):
        out = subprocess.run(
            [*main["command"], *main["args"]], env={**env, "HOSTNAME": pod}, capture_output=True, text=True, timeout=10
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [slot, *main["args"]]
