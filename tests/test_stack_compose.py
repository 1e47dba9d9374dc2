"""The stack file expander of local mode (gnes.stack.compose) and the swarm stack file itself."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gnes.stack.cli import main as stack_main
from gnes.stack.compose import ProcessSpec, expand_stack, flag_value, service_order
from gnes.stack.interpolate import StackError, interpolate, render_templates
from gnes.stack.local import LocalStack

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "compose" / "gnes-swarm.yml"
SEED = Path(__file__).resolve().parent / "data" / "seed-stack.yml"
HOST_FLAGS = ("--host_in", "--host_out", "--host_broadcast", "--grpc_host", "--host_ctrl")


def _counter(start: int = 40000) -> Iterator[int]:
    port = start
    while True:
        yield port
        port += 1


def expand(
    path: Path, tmp_path: Path, environ: dict[str, str] | None = None, overrides: dict[str, str] | None = None
) -> list[ProcessSpec]:
    """Expand with an empty (or the given) environment and deterministic control ports."""
    ports = _counter()
    return expand_stack(
        path, workdir=tmp_path / "work", environ=environ or {}, overrides=overrides, free_port=lambda: next(ports)
    )


def write_stack(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stack" / "stack.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def by_name(specs: list[ProcessSpec]) -> dict[str, ProcessSpec]:
    return {spec.name: spec for spec in specs}


# --- interpolation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${A}", "1"),
        ("$A-x", "1-x"),
        ("${UNSET:-d}", "d"),
        ("${EMPTY:-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${UNSET-d}", "d"),
        ("${A:-d}", "1"),
        ("${UNSET:-${A}0}", "10"),
        ("${A:+set}|${UNSET:+set}", "set|"),
        ("cost $$5 and $${A}", "cost $5 and ${A}"),
        ("{{.Task.Slot}}", "{{.Task.Slot}}"),
    ],
)
def test_interpolate(text: str, expected: str) -> None:
    assert interpolate(text, {"A": "1", "EMPTY": ""}) == expected


def test_interpolate_missing_variable_names_it() -> None:
    with pytest.raises(StackError, match=r"services\.x\.command: variable MISSING_PORT is not set"):
        interpolate("--port ${MISSING_PORT}", {}, "services.x.command")
    with pytest.raises(StackError, match="required variable NEED needs a value"):
        interpolate("${NEED:?needs a value}", {})
    with pytest.raises(StackError, match="invalid interpolation"):
        interpolate("price $5", {})


def test_render_templates() -> None:
    values = {"Task.Slot": "2", "Service.Name": "gnes_indexer"}
    assert render_templates("{{.Service.Name}}-{{ .Task.Slot }}", values) == "gnes_indexer-2"
    with pytest.raises(StackError, match="unknown swarm template"):
        render_templates("{{.Task.Nope}}", values)


# --- the real stack file -------------------------------------------------------------------------------------


def test_real_stack_expands_with_no_environment(tmp_path: Path) -> None:
    specs = expand(COMPOSE, tmp_path)
    names = [spec.name for spec in specs]
    assert sorted(names) == sorted(
        ["frontend.1", "http.1", "income-proxy.1", "encoder.1", "middleman-proxy.1"]
        + [f"indexer.{slot}" for slot in (1, 2, 3)]
        + ["outgoing-proxy.1"]
    )
    # Dependencies start first; the entry points (the frontend and http depend on everything) last.
    assert names.index("income-proxy.1") < names.index("encoder.1")
    assert names.index("middleman-proxy.1") < names.index("indexer.1")
    assert names.index("outgoing-proxy.1") < names.index("indexer.1")
    assert sorted(names[-2:]) == ["frontend.1", "http.1"]

    for spec in specs:
        for flag in HOST_FLAGS:
            assert flag_value(spec.argv, flag) in (None, "127.0.0.1"), (spec.name, flag)
        assert "0.0.0.0" not in spec.argv
        assert spec.argv.count("--port_ctrl") == 1
        assert flag_value(spec.argv, "--port_ctrl") == str(spec.ctrl_port)

    work = (tmp_path / "work").resolve()
    specs_by_name = by_name(specs)
    assert flag_value(specs_by_name["encoder.1"].argv, "--yaml_path") == str(REPO / "yaml" / "encoder-minilm.yml")
    for slot in (1, 2, 3):
        indexer = specs_by_name[f"indexer.{slot}"]
        volume = work / "volumes" / f"gnes_shard_{slot}_data"
        assert flag_value(indexer.argv, "--yaml_path") == str(REPO / "yaml" / "indexer-flat-ip.yml")
        assert flag_value(indexer.argv, "--dump_path") == str(volume / "index")
        assert indexer.volume_dirs == (volume,)
        assert indexer.env["TASK_SLOT"] == str(slot)
        assert indexer.env["TASK_NAME"].startswith(f"gnes_indexer.{slot}.")
        assert indexer.env["SERVICE_NAME"] == "gnes_indexer"
    assert not work.exists(), "expanding must not create anything"

    frontend = specs_by_name["frontend.1"]
    assert flag_value(frontend.argv, "--grpc_port") == "8800"
    assert LocalStack(specs).endpoints() == {"frontend": "127.0.0.1:8800"}
    http = specs_by_name["http.1"]
    assert flag_value(http.argv, "--http_port") == "8080"
    assert flag_value(http.argv, "--http_host") == "127.0.0.1"
    assert flag_value(http.argv, "--queue_length") == "1024"
    # the Swarm peers of the status overview, one per service (tasks.<service>: every replica)
    for spec in (frontend, http):
        peers = dict(item.split("=", 1) for item in spec.env["GNES_STATUS_PEERS"].split(","))
        assert sorted(peers) == sorted({s.service for s in specs}), spec.name
        assert all(where == f"tasks.{name}:5399" for name, where in peers.items())


def test_real_stack_overrides_win_over_environment(tmp_path: Path) -> None:
    specs = expand(
        COMPOSE,
        tmp_path,
        environ={"INDEXER_REPLICAS": "5", "GRPC_PORT": "9000"},
        overrides={"INDEXER_REPLICAS": "2", "GNES_STACK_NAME": "demo"},
    )
    indexers = [spec for spec in specs if spec.service == "indexer"]
    assert [spec.slot for spec in indexers] == [1, 2]
    assert indexers[1].volume_dirs == ((tmp_path / "work" / "volumes" / "demo_shard_2_data").resolve(),)
    assert flag_value(by_name(specs)["frontend.1"].argv, "--grpc_port") == "9000"


def test_real_stack_uses_one_default_per_variable() -> None:
    # The same variable appears in several services; differing defaults would wire the stack wrongly.
    defaults: dict[str, set[str]] = {}
    for name, default in re.findall(r"\$\{(\w+):-([^}]*)\}", COMPOSE.read_text(encoding="utf-8")):
        defaults.setdefault(name, set()).add(default)
    assert defaults, "the stack file should give every variable a default"
    assert {name: values for name, values in defaults.items() if len(values) > 1} == {}
    assert re.findall(r"\$\{\w+\}", COMPOSE.read_text(encoding="utf-8")) == [], "every variable needs a default"


def test_real_stack_control_ports_avoid_stack_ports(tmp_path: Path) -> None:
    offered = iter([5310, 5331, 8800, 8080, 45000, 45000, 45001, 45002, 45003, 45004, 45005, 45006, 45007, 45008])
    specs = expand_stack(COMPOSE, workdir=tmp_path, environ={}, free_port=lambda: next(offered))
    assert sorted(spec.ctrl_port for spec in specs) == list(range(45000, 45009))


def test_docker_stack_config_accepts_the_stack_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker CLI is not installed, cannot run `docker stack config`")
    # No stack variables set: every one must have a default.
    env = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    result = subprocess.run(
        [docker, "stack", "config", "-c", str(COMPOSE)], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "not set" not in result.stderr, result.stderr
    assert "gnes_shard_{{.Task.Slot}}_data" in result.stdout


def test_seed_stack_file_expands(tmp_path: Path) -> None:
    env = {
        "DOCKER_IMG_URL": "gnes:seed",
        "GNES_STACK_NAME": "seed",
        "ENCODER_YAML_PATH": "enc.yml",
        "INDEXER_YAML_PATH": "idx.yml",
        "MODEL_DIR": str(tmp_path / "models"),
        "OUTPUT_DIR": str(tmp_path / "output"),
        "HOST_PORT_IN": "8598",
        "HOST_PORT_OUT": "8599",
    }
    env.update({name: str(5500 + i) for i, name in enumerate(
        ["INCOME_PROXY_IN", "INCOME_PROXY_OUT", "MIDDLEMAN_PROXY_IN", "MIDDLEMAN_PROXY_OUT",
         "OUTGOING_PROXY_IN", "OUTGOING_PROXY_OUT"]
    )})  # fmt: skip
    specs = by_name(expand(SEED, tmp_path, environ=env))
    assert len(specs) == 7
    encoder, indexer = specs["encoder.1"], specs["indexer.3"]
    assert flag_value(encoder.argv, "--yaml_path") == str(SEED.parent / "enc.yml")
    assert flag_value(encoder.argv, "--dump_path") == str(tmp_path / "output" / "model.bin")
    assert flag_value(encoder.argv, "--host_in") == "127.0.0.1"
    assert flag_value(indexer.argv, "--dump_path") == str(
        (tmp_path / "work" / "volumes" / "seed_shard_3_data" / "index.bin").resolve()
    )
    assert indexer.env["TASK_SLOT"] == "3"
    assert flag_value(specs["middleman-proxy.1"].argv, "--proxy_type") == "ProxyService"


# --- small stack files ---------------------------------------------------------------------------------------


def test_missing_variable_is_an_error_naming_it(tmp_path: Path) -> None:
    path = write_stack(tmp_path, "services:\n  a:\n    command: proxy --port_in ${NO_SUCH_PORT}\n")
    with pytest.raises(StackError, match=r"services\.a\.command: variable NO_SUCH_PORT is not set"):
        expand(path, tmp_path)
    assert flag_value(expand(path, tmp_path, overrides={"NO_SUCH_PORT": "7"})[0].argv, "--port_in") == "7"


def test_replicas_get_their_own_volumes_and_environment(tmp_path: Path) -> None:
    path = write_stack(
        tmp_path,
        """
services:
  shard:
    command: ["index", "--dump_path", "/data/idx", "--cache", "/cache", "--model", "/models/m.bin", "--tmp=/scratch"]
    deploy: {replicas: "${N:-3}"}
    environment:
      SLOT: "{{.Task.Slot}}"
      NODE: "{{.Node.ID}}"
      PLAIN: 5
      FROM_CALLER:
      NOT_SET:
    volumes:
      - data:/data
      - shared:/cache
      - ./models:/models:ro
      - /scratch
volumes:
  data:
    name: "s_{{.Service.Name}}_{{ .Task.Slot }}"
  shared: {}
""",
    )
    specs = expand(path, tmp_path, overrides={"FROM_CALLER": "hi"})
    work = (tmp_path / "work" / "volumes").resolve()
    assert [spec.name for spec in specs] == ["shard.1", "shard.2", "shard.3"]
    for spec in specs:
        slot = spec.slot
        assert flag_value(spec.argv, "--dump_path") == str(work / f"s_gnes_shard_{slot}" / "idx")
        assert flag_value(spec.argv, "--cache") == str(work / "gnes_shared")  # one volume, shared by all
        assert flag_value(spec.argv, "--model") == str(tmp_path / "stack" / "models" / "m.bin")
        assert flag_value(spec.argv, "--tmp") == str(work / f"gnes_shard_{slot}_scratch")
        assert spec.env == {"SLOT": str(slot), "NODE": "local", "PLAIN": "5", "FROM_CALLER": "hi"}
        assert work / f"s_gnes_shard_{slot}" in spec.volume_dirs
    assert len(expand(path, tmp_path, overrides={"N": "0"})) == 0


def test_host_flags_are_rewritten_in_both_forms(tmp_path: Path) -> None:
    path = write_stack(
        tmp_path,
        """
services:
  proxy-a:
    command: proxy --port_in 1
    networks:
      net: {aliases: [proxy_a]}
  worker:
    command: >
      encode --host_in proxy-a --host_out=proxy_a --host_broadcast=0.0.0.0 --grpc_host elsewhere.example
      --name proxy-a --host_ctrl 0.0.0.0 --port_ctrl 5000
networks:
  net: {}
""",
    )
    worker = by_name(expand(path, tmp_path))["worker.1"]
    assert worker.argv[:8] == (
        "encode",
        "--host_in",
        "127.0.0.1",
        "--host_out=127.0.0.1",
        "--host_broadcast=127.0.0.1",
        "--grpc_host",
        "elsewhere.example",  # not a service: left alone
        "--name",
    )
    assert worker.argv[8] == "proxy-a"  # only host flags are rewritten
    assert worker.argv[9:] == ("--port_ctrl", str(worker.ctrl_port), "--host_ctrl", "127.0.0.1")


def test_control_port_is_replaced_and_unique(tmp_path: Path) -> None:
    path = write_stack(
        tmp_path,
        """
services:
  a:
    command: proxy --port_ctrl 5000 --port_in 40001
    deploy: {replicas: 2}
  b:
    command: ["proxy", "--port_ctrl=5000", "--host_ctrl=0.0.0.0", "--grpc_port", "40000"]
""",
    )
    specs = expand(path, tmp_path)  # the fake free ports start at 40000, which the stack itself uses
    ctrl_ports = [spec.ctrl_port for spec in specs]
    assert len(set(ctrl_ports)) == 3 and not {40000, 40001} & set(ctrl_ports)
    for spec in specs:
        assert "5000" not in spec.argv and "--port_ctrl=5000" not in spec.argv
        assert spec.argv[-4:] == ("--port_ctrl", str(spec.ctrl_port), "--host_ctrl", "127.0.0.1")
    # A gRPC server with no host gets loopback, so local mode never listens on every interface.
    assert flag_value(by_name(specs)["b.1"].argv, "--grpc_host") == "127.0.0.1"


def test_configs_map_to_their_files(tmp_path: Path) -> None:
    path = write_stack(
        tmp_path,
        """
services:
  enc:
    command: encode --yaml_path /encoder_config --other=/etc/idx.yml --plain /not/a/config
    configs:
      - encoder_config
      - source: idx
        target: /etc/idx.yml
configs:
  encoder_config: {file: "${CFG:-../cfg/enc.yml}"}
  idx: {file: /abs/idx.yml}
""",
    )
    spec = expand(path, tmp_path)[0]
    assert flag_value(spec.argv, "--yaml_path") == str(tmp_path / "cfg" / "enc.yml")
    assert flag_value(spec.argv, "--other") == "/abs/idx.yml"
    assert flag_value(spec.argv, "--plain") == "/not/a/config"
    assert spec.config_files == (tmp_path / "cfg" / "enc.yml", Path("/abs/idx.yml"))


def test_unknown_config_is_an_error(tmp_path: Path) -> None:
    path = write_stack(tmp_path, "services:\n  a:\n    command: encode\n    configs: [nope]\n")
    with pytest.raises(StackError, match="'nope', which is not in the top-level configs"):
        expand(path, tmp_path)


def test_depends_on_orders_services(tmp_path: Path) -> None:
    services = {
        "front": {"depends_on": {"mid": {"condition": "service_started"}}},
        "mid": {"depends_on": ["back", "other"]},
        "other": None,
        "back": {},
    }
    assert service_order(services) == ["other", "back", "mid", "front"]


def test_depends_on_cycle_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"cycle: (a -> b -> c -> a|b -> c -> a -> b|c -> a -> b -> c)"):
        service_order({"a": {"depends_on": ["b"]}, "b": {"depends_on": ["c"]}, "c": {"depends_on": ["a"]}})
    with pytest.raises(StackError, match="unknown service 'ghost'"):
        service_order({"a": {"depends_on": ["ghost"]}})
    path = write_stack(tmp_path, "services:\n  a: {command: x, depends_on: [a]}\n")
    with pytest.raises(StackError, match="cycle: a -> a"):
        expand(path, tmp_path)


def test_non_gnes_entrypoint_is_refused(tmp_path: Path) -> None:
    path = write_stack(tmp_path, "services:\n  a: {command: x, entrypoint: [python, -c]}\n")
    with pytest.raises(StackError, match="only runs the gnes entrypoint"):
        expand(path, tmp_path)
    path = write_stack(tmp_path, "services:\n  a: just a string\n")
    with pytest.raises(StackError, match="services.a must be a mapping"):
        expand(path, tmp_path)


# --- the CLI without starting anything -------------------------------------------------------------------------


def test_cli_print_lists_processes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = stack_main(["-f", str(COMPOSE), "--print", "--workdir", str(tmp_path), "--env", "INDEXER_REPLICAS=2"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert [line.split(" | ")[0] for line in lines][-4:] == ["indexer.1", "indexer.2", "frontend.1", "http.1"]
    assert all(" gnes " in line or line.split(" | ")[1].startswith("gnes ") for line in lines)
    assert not (tmp_path / "volumes").exists()


def test_cli_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert stack_main(["-f", str(COMPOSE), "--print", "--env", "NO_EQUALS_SIGN"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert stack_main(["-f", str(tmp_path / "missing.yml"), "--print"]) == 2
    assert "cannot read stack file" in capsys.readouterr().err
