"""The wheel and sdist built from this tree: complete, installable without -e, and able to run a stack.

The wheel is installed into a fresh venv without its dependencies (no package index needed): those come from the
test's own environment through a ``.pth`` line. A ``.pth`` line only appends a directory to ``sys.path``; the ``.pth``
files inside that directory are not processed, so the editable install of gnes there (an import hook started by
``__editable__.gnes-*.pth``) stays off and ``import gnes`` can only find the installed wheel. The test asserts it.
"""

from __future__ import annotations

import os
import shutil
import signal
import site
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gnes.client import GnesClient
from gnes.stack.local import free_port_overrides

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _source_files() -> list[Path]:
    """Files a fresh clone of this tree would hold (tracked or new, not ignored, not deleted), repo-relative."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [Path(p) for p in out.split("\0") if p and (REPO / p).is_file()]


def _package_files(files: list[Path]) -> set[str]:
    """What the wheel must hold: every module and stub under gnes/ (posix paths)."""
    return {p.as_posix() for p in files if p.parts[0] == "gnes" and p.suffix in {".py", ".pyi"}}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build the wheel and sdist from a copy of the tree, so no build/ or egg-info lands in the checkout."""
    root = tmp_path_factory.mktemp("pkg")
    src, dist = root / "src", root / "dist"
    for rel in _source_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    # --no-isolation: the build backend comes from this environment (the test extra), so no index is needed.
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = dist.glob("gnes-*.whl")
    (sdist,) = dist.glob("gnes-*.tar.gz")
    return {"root": root, "wheel": wheel, "sdist": sdist}


def test_wheel_holds_every_module_and_stub(built: dict[str, Path]) -> None:
    with zipfile.ZipFile(built["wheel"]) as wheel:
        names = set(wheel.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "gnes = gnes.cli.main:main" in wheel.read(entry_points).decode()
    expected = _package_files(_source_files())
    assert "gnes/service/__init__.py" in expected and "gnes/proto/gnes_pb2.pyi" in expected
    missing = sorted(expected - names)
    assert not missing, f"the wheel lacks {missing} (a package folder without __init__.py?)"
    assert not [n for n in names if n.startswith(("tests/", "bench/"))], "tests or benchmarks leaked into the wheel"


def test_sdist_holds_the_package_and_the_stack_files(built: dict[str, Path]) -> None:
    with tarfile.open(built["sdist"]) as sdist:
        # Members are "gnes-<version>/<path>".
        names = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    files = _source_files()
    expected = _package_files(files) | {"setup.py", "pyproject.toml", "README.md", "proto/gnes.proto"}
    expected |= {p.as_posix() for p in files if p.parts[0] in {"compose", "yaml"} and p.suffix == ".yml"}
    missing = sorted(expected - names)
    assert not missing, f"the sdist lacks {missing}"


@pytest.fixture(scope="module")
def venv(built: dict[str, Path]) -> Path:
    """A fresh venv with the wheel installed (not editable); dependencies come from this environment."""
    venv = built["root"] / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index"]
        + [str(built["wheel"])],
        check=True,
        timeout=90,
    )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Appended after the venv's own site-packages, so the installed gnes is found first.
    Path(purelib, "zz_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv


def _clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_installed_wheel_imports_from_the_venv(venv: Path, tmp_path: Path) -> None:
    probe = (
        "import sys, gnes, gnes.service.frontend, gnes.service.indexer, gnes.proto.gnes_pb2;"
        "print(gnes.__file__);"
        "print(any('editable' in type(f).__name__.lower() or 'editable' in repr(f) for f in sys.meta_path))"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        cwd=tmp_path,  # not the checkout: the current directory is on sys.path
        env=_clean_env(venv),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    gnes_file, editable_hook = out.stdout.split()
    assert Path(gnes_file).resolve().is_relative_to(venv.resolve()), gnes_file
    assert editable_hook == "False"
    helped = subprocess.run(
        [str(venv / "bin" / "gnes"), "--help"], cwd=tmp_path, env=_clean_env(venv), capture_output=True, text=True
    )
    assert helped.returncode == 0, helped.stderr
    assert "stack" in helped.stdout
    # Outside a checkout, `gnes stack` finds the stack file and its YAML inside the package.
    printed = subprocess.run(
        [str(venv / "bin" / "gnes"), "stack", "--print"],
        cwd=tmp_path,
        env=_clean_env(venv),
        capture_output=True,
        text=True,
    )
    assert printed.returncode == 0, printed.stderr
    assert "gnes index" in printed.stdout and "encoder-minilm.yml" in printed.stdout


def _processes_of(python: Path) -> list[int]:
    """Pids whose program is this venv's python: the stack's services, found even if `gnes stack` died."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode()
        except OSError:
            continue
        if argv0 == str(python):
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def installed_stack(venv: Path, tmp_path: Path) -> Iterator[tuple[int, list[int]]]:
    """`gnes stack` from the venv, hash encoder, two shards; yields (grpc port, service pids). Stops it all."""
    overrides = free_port_overrides(
        INDEXER_REPLICAS="2",
        ENCODER_YAML_PATH=str(REPO / "yaml" / "encoder-hash.yml"),
        INDEXER_YAML_PATH=str(REPO / "yaml" / "indexer-hash.yml"),
    )
    argv = [str(venv / "bin" / "gnes"), "stack", "-f", str(REPO / "compose" / "gnes-swarm.yml")]
    argv += ["--workdir", str(tmp_path / "work"), "--quiet", "--start_timeout", "60", "--stop_grace", "10"]
    argv += ["--env", *(f"{k}={v}" for k, v in overrides.items())]
    log = (tmp_path / "stack.log").open("w")
    proc = subprocess.Popen(
        argv, cwd=tmp_path, env=_clean_env(venv), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    python = venv / "bin" / "python"
    try:
        deadline = time.monotonic() + 60
        while "press Ctrl-C to stop" not in (tmp_path / "stack.log").read_text():
            assert proc.poll() is None, (tmp_path / "stack.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the stack was not ready in 60 s"
            time.sleep(0.2)
        yield int(overrides["GRPC_PORT"]), [pid for pid in _processes_of(python) if pid != proc.pid]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # gnes stack stops its services on SIGTERM
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        for pid in _processes_of(python):  # anything left behind
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert not _processes_of(python), "services of the installed stack are still running"


def test_installed_wheel_runs_a_stack_that_indexes_and_queries(installed_stack: tuple[int, list[int]]) -> None:
    port, pids = installed_stack
    # frontend, http, income proxy, encoder, middleman proxy, 2 shards, outgoing proxy: all the venv's python.
    assert len(pids) == 8, pids
    docs = [
        "the bushfires near Sydney burned for a week",
        "the central bank raised interest rates again",
        "a new comet was seen over the southern sky",
        "the cricket team won the test match in Adelaide",
        "farmers asked for help after the long drought",
    ]
    with GnesClient("127.0.0.1", port, timeout=30) as client:
        client.wait_ready(timeout=30)
        summary = client.index(docs, batch_size=2)
        assert summary.errors == [] and summary.num_docs == len(docs)
        for doc_id, text in enumerate(docs):
            hits = client.query(text, top_k=3)
            assert hits and hits[0].doc_id == doc_id and hits[0].text == text, (doc_id, hits)
