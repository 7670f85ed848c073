"""Append-only JSONL files keyed by `instance_id` (or another key): what makes runs resumable and safe to kill.

A line is the commit point of one instance: it is written whole, flushed and fsynced under a lock, and anything it
refers to (a trajectory file) is written before it. A `kill -9` can only leave a torn last line, which opening the
file cuts off, so a restarted run redoes exactly the instances without a complete line: nothing lost, nothing twice.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Hashable
from pathlib import Path

from swehero.jsonio import read_jsonl


def by_instance_id(record: dict) -> str:
    return record["instance_id"]


class JsonlLog:
    def __init__(self, path: Path, key: Callable[[dict], Hashable] = by_instance_id) -> None:
        self.path = Path(path)
        self.key = key
        self.lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()

    def _repair(self) -> None:
        """Drop a torn last line (a killed writer) so the next append starts on a line of its own."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
                f.flush()
                os.fsync(f.fileno())

    def records(self) -> dict:
        """Complete records by key (the first one wins, though appends never repeat a key)."""
        out: dict = {}
        if self.path.exists():
            for record in read_jsonl(self.path):
                out.setdefault(self.key(record), record)
        return out

    def append(self, record: dict) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        with self.lock, open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
