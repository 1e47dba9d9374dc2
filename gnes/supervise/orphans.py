"""No child outlives its supervisor: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` in the child (Linux only).

The kernel sends the signal when the *thread* that forked the child ends, not the process; so the
:class:`~gnes.supervise.Supervisor` forks every child from its own long-lived thread, which ends only when
nothing is left to supervise.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when its parent thread dies; None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    # Resolved here, in the parent: the child runs between fork and exec, where loading a library is unsafe.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        # The parent may have died between fork and prctl: then no signal will ever come, so end now.
        if os.getppid() != parent:
            os._exit(1)

    return preexec
