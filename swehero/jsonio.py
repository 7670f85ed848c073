"""JSON files the pipeline relies on after a crash: whole-or-old writes, JSONL reading that splits lines only where
JSON does, and append-only JSONL logs that make runs resumable. Standard library only (the agent imports it too).

An append-only log is keyed by `instance_id` (or another key). A line is the commit point of one item: it is
written whole, flushed and fsynced under a lock, and anything it refers to (a trajectory file) is written before
it. A `kill -9` can only leave a torn last line, which opening the log cuts off, so a restarted run redoes exactly
the items without a complete line: nothing lost, nothing twice.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from swehero.errors import InputError, MissingInput


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSONL file."""
    return [record for _, record in numbered_jsonl(path)]


def existing_file(path: str | Path) -> Path:
    """`path`, which must be a file: a folder or nothing there is a `MissingInput` naming it."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path}: {'a folder, where a file is read' if path.is_dir() else 'no such file'}")
    return path


def numbered_jsonl(path: Path) -> list[tuple[int, Any]]:
    """(line number, record) of a JSONL file's non-blank lines; a line that is not JSON is an `InputError` naming
    file:line. Lines end at `\\n` only: `str.splitlines` also breaks at U+2028, U+0085, U+001C and others, which JSON
    written with `ensure_ascii=False` carries raw inside strings (model output does)."""
    records = []
    for number, line in enumerate(existing_file(path).read_text().split("\n"), 1):
        if line.strip():
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{number}: not JSON: {e}") from None
    return records


def write_json_atomic(path: Path, data: Any, indent: int | None = None, sort_keys: bool = False) -> None:
    """Write-then-rename, fsynced: readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, ensure_ascii=False, indent=indent, sort_keys=sort_keys, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
