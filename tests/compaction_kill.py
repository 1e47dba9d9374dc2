"""kill -9 of a process that writes and compacts without pause: every acknowledged write survives,
and one segment file is left. Shared by tests/test_compaction.py (compactions in the writer's own
thread) and tests/test_compaction_background.py (copies in a thread while the next write goes on)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from gnes.indexer.logical import LogicalIndex

_CHILD = """
import sys
from pathlib import Path
import numpy as np
from gnes.indexer.config import IndexConfig
from gnes.indexer.logical import LogicalIndex

directory, dim, bulk = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
index = LogicalIndex.create("idx", IndexConfig(dim=dim, metric="l2", index_type="flat"), directory)
ids = np.arange(bulk)
for version in range(1, 10**6):
    index.add(ids, np.full((bulk, dim), version, dtype=np.float32))  # every write replaces all
    print(version, flush=True)  # acknowledged: durable
{compact}
"""


def kill_9_while_compacting(tmp_path: Path, compact: str, dim: int, bulk: int) -> None:
    """`compact`: the child's statements after each acknowledged write."""
    child_source = _CHILD.format(compact=textwrap.indent(textwrap.dedent(compact).strip(), "    "))
    for attempt, delay in enumerate((0.6, 1.1, 1.7)):
        directory = tmp_path / f"idx{attempt}"
        child = subprocess.Popen(
            [sys.executable, "-c", child_source, str(directory), str(dim), str(bulk)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        acknowledged = int(child.stdout.readline())  # the first write is in
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()
        child.wait(30)
        acknowledged = max([acknowledged, *map(int, rest.split())])
        index = LogicalIndex.open("idx", directory)
        try:
            stored, found = index.store.get_vectors(np.arange(bulk))
            assert found.all()
            version = stored[0, 0]
            # One version for every id: the last acknowledged, or the one in flight at the kill.
            assert version in (acknowledged, acknowledged + 1), (version, acknowledged)
            assert (stored == version).all()
            assert len(list((directory / "store").glob("vectors-*.seg"))) == 1
            hits = index.search(np.full((1, dim), version, dtype=np.float32), 3)
            assert len(hits[0]) == 3 and hits[0][0].score == 0.0
        finally:
            index.close()
