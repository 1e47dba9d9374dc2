"""Signal handling for the commands that own child processes (`gnes stack`, `gnes launch`).

The default SIGTERM handler ends the process at once and orphans its children; these helpers
turn SIGTERM into KeyboardInterrupt, so the command's cleanup runs. Handlers can be set from
the main thread only; elsewhere (a test calling the command in a thread) they do nothing.
Each returns a function that puts the previous handlers back.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType


def sigterm_as_interrupt() -> Callable[[], object]:
    """Make SIGTERM stop the command like Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


def ignore_interrupts() -> Callable[[], object]:
    """Ignore Ctrl-C and SIGTERM, e.g. while stopping children: an interrupted stop leaves them behind."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(sig, handler) for sig, handler in previous.items()]
