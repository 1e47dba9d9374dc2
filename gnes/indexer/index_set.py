"""The logical indexes one shard holds, each in its own directory under `<root>/indexes/`.

At start every index found on disk is opened (snapshot + log replay); nothing is loaded
that is not one of our own formats (JSON, faiss, numpy without pickle, LMDB).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .config import DEFAULT_INDEX, IndexConfig, check_index_name
from .logical import CONFIG_FILE, LogicalIndex

# The start of a shard's error for an unknown index: the HTTP service answers such requests 404.
NO_SUCH_INDEX = "no index named"

log = logging.getLogger(__name__)


class IndexSet:
    def __init__(self, root: Path | None, default_config: IndexConfig | None = None) -> None:
        self.root = root / "indexes" if root is not None else None
        self._indexes: dict[str, LogicalIndex] = {}
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            for directory in sorted(self.root.iterdir()):
                if (directory / CONFIG_FILE).exists():
                    self._indexes[directory.name] = LogicalIndex.open(directory.name, directory)
                    log.info("opened index %s: %s", directory.name, self._indexes[directory.name].state()["state"])
        if default_config is not None:
            self.create(DEFAULT_INDEX, default_config, exist_ok=True)

    def names(self) -> list[str]:
        return sorted(self._indexes)

    def get(self, name: str) -> LogicalIndex:
        name = name or DEFAULT_INDEX
        index = self._indexes.get(name)
        if index is None:
            known = ", ".join(self.names()) or "none"
            raise ValueError(f"{NO_SUCH_INDEX} {name!r} on this shard (indexes: {known}); create it first")
        return index

    def create(self, name: str, config: IndexConfig, exist_ok: bool = False) -> bool:
        """Create an index; True if created, False if an identical one exists and exist_ok."""
        name = check_index_name(name or DEFAULT_INDEX)
        existing = self._indexes.get(name)
        if existing is not None:
            if exist_ok and existing.config.to_dict() == config.to_dict():
                return False
            if exist_ok:
                raise ValueError(f"index {name!r} exists with another configuration: {existing.config.to_json()}")
            raise ValueError(f"index {name!r} already exists")
        directory = self.root / name if self.root is not None else None
        self._indexes[name] = LogicalIndex.create(name, config, directory)
        return True

    def drop(self, name: str) -> None:
        self.get(name)
        self._indexes.pop(name or DEFAULT_INDEX).drop()

    def reload(self, name: str) -> LogicalIndex:
        """Close an index and open it again from disk (snapshot plus log)."""
        index = self.get(name)
        if index.directory is None:
            raise ValueError(f"index {index.name!r} is in memory only: there is nothing to load")
        index.close()
        self._indexes[index.name] = reopened = LogicalIndex.open(index.name, index.directory)
        return reopened

    def states(self) -> dict[str, Any]:
        return {name: index.state() for name, index in self._indexes.items()}

    def poll(self) -> None:
        for index in self._indexes.values():
            index.poll()

    def is_training(self) -> bool:
        return any(index.vectors.is_training for index in self._indexes.values())

    def is_compacting(self) -> bool:
        return any(index.store.compaction is not None for index in self._indexes.values())

    def save(self) -> None:
        for index in self._indexes.values():
            index.save()

    def close(self) -> None:
        errors = []
        for index in self._indexes.values():
            try:
                index.close()
            except Exception as exc:  # close the others, then report
                errors.append(f"{index.name}: {exc}")
        self._indexes.clear()
        if errors:
            raise RuntimeError("could not close every index: " + "; ".join(errors))
