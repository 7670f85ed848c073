"""A seeded selection of trajectories: at most `per_instance` per task, then at most `limit` in all.

Used where a release holds more than a paper trained on: the public SWE-Hero set has several rollouts per task
where the paper trained on one (see docs/data.md). Each trajectory gets the key sha256(seed, id); a task
keeps the `per_instance` trajectories with the smallest keys, and `limit` keeps the smallest keys of what is left.
The choice depends only on the seed and the ids, not on how the input is split into files or ordered (ids
repeated in the input are told apart by their order), and the kept records stay in their input order.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from swehero.jsonio import partial_path


@dataclass(frozen=True)
class Selection:
    """Which trajectories an import keeps."""

    per_instance: int | None = None
    """At most this many trajectories per `instance_id` (None: all); at least 1, as the settings it comes from
    are bounded (`Range`)."""
    limit: int | None = None
    """At most this many trajectories in all, after `per_instance` (None: all); at least 1 likewise."""
    seed: int = 1234
    """Seeds the choice."""

    @property
    def active(self) -> bool:
        return self.per_instance is not None or self.limit is not None


def select(records: Iterable[tuple[str, str]], selection: Selection) -> list[int]:
    """Positions (in input order) of the kept records, given each record's (instance_id, id) in input order."""
    by_instance: dict[str, list[tuple[bytes, int]]] = {}
    for position, (instance_id, record_id) in enumerate(records):
        key = hashlib.sha256(f"{selection.seed}\0{record_id}".encode()).digest()  # ties (repeated ids): input order
        by_instance.setdefault(instance_id, []).append((key, position))
    kept = [item for group in by_instance.values()
            for item in (heapq.nsmallest(selection.per_instance, group) if selection.per_instance else group)]
    if selection.limit is not None:
        kept = heapq.nsmallest(selection.limit, kept)
    return sorted(position for _, position in kept)


def select_lines(path: Path, records: list[tuple[str, str]], selection: Selection) -> dict:
    """Keep only the lines of JSONL file `path` that `selection` picks, given each line's (instance_id, id), by
    rewriting it line by line. Returns what it kept: trajectories, tasks, and the selection's settings."""
    keep = select(records, selection)
    _keep_lines(path, keep)
    return {"trajectories": len(keep), "instances": len({records[i][0] for i in keep}),
            **{k: v for k, v in vars(selection).items() if v is not None}}


def _keep_lines(path: Path, positions: list[int]) -> None:
    """Rewrite a JSONL file with only the lines at `positions` (sorted), streaming."""
    wanted = iter(positions)
    nxt = next(wanted, None)
    with partial_path(path) as kept, open(path, encoding="utf-8") as src, open(kept, "w", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i == nxt:
                dst.write(line)
                nxt = next(wanted, None)
