"""One supervisor for every process gnes starts on this machine: the local stack, the local shards, tests and
benchmarks. It starts a command in its own process group, captures its output, waits until a ready check
passes, restarts it per a Swarm-style restart policy, and terminates (SIGTERM, grace, SIGKILL) or kills it.

Children never outlive the supervisor: on Linux each one gets SIGKILL when the supervisor dies, even by
``kill -9`` (see :mod:`gnes.supervise.orphans`).
"""

from gnes.supervise.policy import RestartPolicy, parse_duration
from gnes.supervise.process import LaunchSpec, ManagedProcess, NotReadyError, ProcessExitedError, describe_exit
from gnes.supervise.supervisor import Supervisor

__all__ = [
    "LaunchSpec",
    "ManagedProcess",
    "NotReadyError",
    "ProcessExitedError",
    "RestartPolicy",
    "Supervisor",
    "describe_exit",
    "parse_duration",
]
