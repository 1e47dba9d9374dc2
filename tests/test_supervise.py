"""The supervisor with real child processes: restart policies, grace, kill -9, and no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import gone, wait_for  # noqa: I001 (the tests folder is on sys.path)

from gnes.supervise import LaunchSpec, ProcessExitedError, RestartPolicy, Supervisor, parse_duration

pytestmark = pytest.mark.timeout(60)

PY = sys.executable


@pytest.fixture
def supervisor():  # type: ignore[no-untyped-def]
    events: list[str] = []
    given_up: list[tuple[str, int]] = []
    sup = Supervisor(on_event=events.append, on_give_up=lambda p, code: given_up.append((p.name, code)))
    sup.events, sup.given_up = events, given_up  # type: ignore[attr-defined]
    try:
        yield sup
    finally:
        sup.close(grace=2.0)


def test_durations_and_policies_read_as_swarm_does() -> None:
    assert parse_duration("5s") == 5.0 and parse_duration("1m30s") == 90.0 and parse_duration("250ms") == 0.25
    assert parse_duration(3) == 3.0 and parse_duration("1.5h") == 5400.0
    for bad in ("5 s", "s", "", "5x", True):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert RestartPolicy.from_compose(None) == RestartPolicy("any", 5.0, None, 0.0)  # swarm's defaults
    policy = RestartPolicy.from_compose({"condition": "on-failure", "delay": "1s", "max_attempts": 2, "window": "60s"})
    assert (policy.wants_restart(1), policy.wants_restart(-9), policy.wants_restart(0)) == (True, True, False)
    assert not RestartPolicy.from_compose({"condition": "none"}).wants_restart(1)
    assert RestartPolicy.from_compose({"condition": "any"}).wants_restart(0)
    # max_attempts counts the restarts within the window only
    assert policy.allows_restart([100.0], now=110.0) and not policy.allows_restart([100.0, 105.0], now=110.0)
    assert policy.allows_restart([10.0, 20.0], now=110.0)
    unbounded = RestartPolicy.from_compose({"max_attempts": 2})
    assert not unbounded.allows_restart([10.0, 20.0], now=1e6)  # no window: counted since the start
    for bad in ({"condition": "always"}, {"max_attempts": "x"}, {"delay": "soon"}, {"retries": 1}):
        with pytest.raises(ValueError):
            RestartPolicy.from_compose(bad)


def test_on_failure_restarts_a_failing_process_then_gives_up(supervisor: Supervisor, tmp_path: Path) -> None:
    log = tmp_path / "fail.log"
    spec = LaunchSpec("fail", [PY, "-c", "print('started', flush=True); raise SystemExit(3)"], log_file=log)
    proc = supervisor.start(spec, RestartPolicy("on-failure", delay=0.1, max_attempts=2))
    wait_for(lambda: supervisor.given_up, 20, "the process given up")  # type: ignore[attr-defined]
    assert supervisor.given_up == [("fail", 3)]  # type: ignore[attr-defined]
    assert log.read_text().count("started") == 3  # the first start and two restarts, in one log
    events = supervisor.events  # type: ignore[attr-defined]
    assert any("exit code 3; restart attempt 1 of 2 in 0.1s" in e for e in events), events
    assert any("restart attempt 2 of 2" in e for e in events), events
    assert any("GIVING UP (all 2 restart attempts used)" in e for e in events), events
    assert proc.state == "given-up" and supervisor.processes == []


def test_on_failure_leaves_a_clean_exit_and_any_restarts_it(supervisor: Supervisor) -> None:
    clean = LaunchSpec("clean", [PY, "-c", "pass"])
    supervisor.start(clean, RestartPolicy("on-failure", delay=0.0))
    wait_for(lambda: supervisor.given_up, 20, "the clean exit given up")  # type: ignore[attr-defined]
    assert supervisor.given_up == [("clean", 0)]  # type: ignore[attr-defined]
    again = supervisor.start(LaunchSpec("again", [PY, "-c", "pass"]), RestartPolicy("any", delay=0.0))
    wait_for(lambda: len(again.restarts) >= 3, 20, "three restarts after exit 0")
    assert again.state in ("running", "backoff")


def test_a_killed_process_is_restarted_with_the_same_command(supervisor: Supervisor) -> None:
    proc = supervisor.start(LaunchSpec("sleeper", [PY, "-c", "import time; time.sleep(60)"]), RestartPolicy(delay=0.0))
    first = proc.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: proc.pid != first and proc.alive(), 20, "a new incarnation")
    assert any("killed by SIGKILL; restart attempt 1 of unlimited" in e for e in supervisor.events)  # type: ignore[attr-defined]
    assert gone(first)


def test_terminate_gives_grace_then_kills(supervisor: Supervisor, tmp_path: Path) -> None:
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    )
    polite = "import time; print('up', flush=True); time.sleep(60)"
    procs = [
        supervisor.start(LaunchSpec(name, [PY, "-c", code], log_file=tmp_path / f"{name}.log"), RestartPolicy(delay=0))
        for name, code in (("stubborn", stubborn), ("polite", polite))
    ]
    for proc in procs:
        proc.wait_ready(lambda t, p=proc: "up" in p.spec.log_file.read_text(), 20)  # type: ignore[union-attr]
    began = time.monotonic()
    killed = supervisor.terminate(procs, grace=1.0)
    assert 0.9 < time.monotonic() - began < 10
    assert [p.name for p in killed] == ["stubborn"]
    assert procs[0].popen.returncode == -signal.SIGKILL and procs[1].popen.returncode == -signal.SIGTERM  # type: ignore[union-attr]
    assert supervisor.processes == [] and supervisor.events == []  # type: ignore[attr-defined]  # no restart


def test_wait_ready_fails_fast_with_the_output_of_a_dead_process(supervisor: Supervisor) -> None:
    proc = supervisor.start(LaunchSpec("oops", [PY, "-c", "print('bad config'); raise SystemExit(2)"]))
    with pytest.raises(ProcessExitedError, match=r"(?s)oops exited with code 2 before it was ready.*bad config"):
        proc.wait_ready(lambda t: False, 30)


def test_a_child_started_from_a_short_lived_thread_outlives_that_thread(supervisor: Supervisor) -> None:
    # PDEATHSIG fires when the forking thread ends: the supervisor must fork on its own thread.
    started = []
    worker = threading.Thread(
        target=lambda: started.append(supervisor.start(LaunchSpec("t", [PY, "-c", "import time; time.sleep(60)"])))
    )
    worker.start()
    worker.join()
    time.sleep(1.0)
    assert started[0].alive()


DRIVER = textwrap.dedent(
    """
    import sys, threading, time
    from gnes.supervise import LaunchSpec, Supervisor
    sup = Supervisor()
    sleep = [sys.executable, "-c", "import time; time.sleep(120)"]
    procs = [sup.start(LaunchSpec("main", sleep))]
    t = threading.Thread(target=lambda: procs.append(sup.start(LaunchSpec("thread", sleep))))
    t.start(); t.join()
    print(" ".join(str(p.pid) for p in procs), flush=True)
    time.sleep(120)
    """
)


def test_kill_9_of_the_supervisor_kills_every_child() -> None:
    driver = subprocess.Popen([PY, "-c", DRIVER], stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        assert driver.stdout is not None
        pids = [int(pid) for pid in driver.stdout.readline().split()]
        assert len(pids) == 2 and not any(gone(pid) for pid in pids)
        driver.kill()
        driver.wait()
        wait_for(lambda: all(gone(pid) for pid in pids), 5, f"children {pids} gone")
    finally:
        driver.kill()
        driver.wait()
        for pid in pids:
            if not gone(pid):
                os.killpg(pid, signal.SIGKILL)
