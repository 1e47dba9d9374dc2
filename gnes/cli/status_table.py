"""The deployment overview of `gnes client status` as a table (gnes/metrics/deployment.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_COLUMNS = ("service", "kind", "ready", "address", "model", "dim", "documents", "detail")


def rows(view: Mapping[str, Any]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for s in view.get("services", []):
        docs = s.get("count")
        detail = s.get("error") or _indexes(s.get("indexes")) or ""
        if s.get("members"):
            detail = f"shards {', '.join(map(str, s['members']))}"
        out.append(
            (
                str(s.get("name", "?")),
                str(s.get("kind") or "-"),
                "yes" if s.get("ready") else "NO",
                str(s.get("address", "")),
                str(s.get("model") or "-"),
                str(s.get("dim") or "-"),
                "-" if docs is None else str(docs),
                str(detail),
            )
        )
    return out


def render(view: Mapping[str, Any]) -> str:
    lines: list[str] = []
    table = rows(view)
    if table:
        widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(_COLUMNS)]
        lines.append("  ".join(c.upper().ljust(w) for c, w in zip(_COLUMNS, widths, strict=True)).rstrip())
        lines.extend("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in table)
    else:
        lines.append("no service control addresses known: run in the stack's --workdir or set $GNES_STATUS_PEERS")
    front = view.get("frontend") or {}
    if front:
        lines.append(
            f"\nfrontend: served {front.get('served', 0)}, in flight {front.get('in_flight', 0)}, "
            f"partial {front.get('partial', 0)}"
        )
    shards = view.get("shards") or []
    if shards:
        lines.append("shards (STATS through the pipeline):")
        for shard in shards:
            name = shard.get("shard_id") or shard.get("shard") or shard.get("name") or "?"
            lines.append(f"  {name}: {shard.get('count', 0)} documents {_indexes(shard.get('indexes'))}".rstrip())
    totals = view.get("indexes") or {}
    if totals:
        lines.append("documents per logical index: " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())))
    for problem in view.get("problems") or []:
        lines.append(f"note: {problem}")
    return "\n".join(lines)


def _indexes(indexes: object) -> str:
    if not isinstance(indexes, Mapping) or not indexes:
        return ""
    parts = []
    for name, value in sorted(indexes.items()):
        count = value.get("count", 0) if isinstance(value, Mapping) else value
        parts.append(f"{name}={count}")
    return "(" + ", ".join(parts) + ")"
