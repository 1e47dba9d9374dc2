"""The `gnes` command line: every command documents its flags; bad configs fail at start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gnes.cli.parser import build_parser
from gnes.config import ConfigError, load_component
from gnes.encoder.base import BaseEncoder
from gnes.indexer.config import IndexConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command", ["proxy", "encode", "index", "frontend", "client", "healthcheck", "stack", "launch", "load", "indexes"]
)
def test_every_command_documents_its_flags(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    flags = [a for a in out.split() if a.startswith("--") and a != "--help"]
    assert flags, out
    sub = build_parser()._subparsers._group_actions[0].choices[command]  # noqa: SLF001
    undocumented = [
        opt
        for action in sub._actions  # noqa: SLF001
        for opt in action.option_strings
        if not action.help and opt not in ("-h", "--help")
    ]
    assert undocumented == []


def test_the_seed_stack_command_lines_parse_as_written() -> None:
    lines = [
        "proxy --proxy_type MapProxyService --port_in 1 --port_out 2 --socket_in PULL_BIND --socket_out PUSH_BIND"
        " --batch_size=128",
        "proxy --proxy_type=ProxyService --port_in 1 --port_out 2 --socket_in PULL_BIND --socket_out PUSH_BIND"
        " --unk_msg_route DEFAULT",
        "proxy --proxy_type=ProxyService --port_in 1 --port_out 2 --socket_in PULL_BIND --socket_out PUB_BIND"
        " --unk_msg_route DEFAULT",
        "encode --port_in 1 --port_out 2 --socket_in PULL_CONNECT --socket_out PUSH_CONNECT --host_in income-proxy"
        " --host_out middleman-proxy --mode INDEX --yaml_path /encoder_config --dump_path /dump/model.bin",
        "index --port_in 1 --port_out 2 --socket_in PULL_CONNECT --socket_out PUSH_CONNECT --host_in middleman-proxy"
        " --host_out outgoing-proxy --mode INDEX --yaml_path /indexer_config --dump_path /out_data/index.bin",
    ]
    for line in lines:
        args = build_parser().parse_args(line.split())
        assert args.port_in == 1 and args.port_out == 2


BAD_CONFIGS = [
    ("!HashEncoder\ndim: 64\nfoo: 1\n", BaseEncoder, ":3: !HashEncoder has no parameter 'foo'"),
    ("# a comment\n!NoSuchThing\ndim: 3\n", BaseEncoder, ":2: unknown tag !NoSuchThing"),
    ("!HashEncoder\ndim: [64\n", BaseEncoder, "invalid YAML"),
    ("!HashEncoder\ndim: -3\n", BaseEncoder, ":1: !HashEncoder: dim must be"),
    ("!HashEncoder\ndim: 64\n", IndexConfig, ":1: !HashEncoder is not a IndexConfig"),
    ("!builtins:dict\n", BaseEncoder, "is not a gnes component"),
    ("!gnes.encoder.hash:HashEncoder\ndim: 8\n", IndexConfig, "is not a IndexConfig"),
    ("!IndexConfig\ndim: 8\nindex_type: hnsw\n", IndexConfig, ":1: !IndexConfig: index_type must be one of"),
    ("dim: 64\n", BaseEncoder, ":1: the top node needs a component tag"),
]


@pytest.mark.parametrize(("text", "kind", "message"), BAD_CONFIGS)
def test_bad_configs_name_the_file_line_and_reason(tmp_path: Path, text: str, kind: type, message: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_component(path, kind)
    assert str(error.value).startswith(str(path)) and message in str(error.value), str(error.value)


def test_a_dotted_path_tag_and_nested_components_load() -> None:
    encoder = load_component("!gnes.encoder.hash:HashEncoder\ndim: 8\n", BaseEncoder)
    with encoder:
        assert encoder.encode(["a"]).shape == (1, 8)
    assert load_component(REPO / "yaml/indexer-flat-ip.yml", IndexConfig).factory == "Flat"


def test_a_service_with_a_bad_config_exits_at_start_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "encoder.yml"
    bad.write_text("!HashEncoder\ndimension: 64\n")
    run = subprocess.run(
        [sys.executable, "-m", "gnes", "encode", "--port_in", "1", "--port_out", "2", "--yaml_path", str(bad)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode != 0
    assert f"{bad}:2: !HashEncoder has no parameter 'dimension'" in run.stderr
