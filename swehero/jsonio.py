"""JSON files the pipeline relies on after a crash: whole-or-old writes, and JSONL reading that splits lines
only where JSON does. Standard library only (the agent imports it too)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSONL file. Lines end at `\\n` only: `str.splitlines` also breaks at U+2028, U+0085, U+001C
    and others, which JSON written with `ensure_ascii=False` carries raw inside strings (model output does)."""
    return [json.loads(line) for line in Path(path).read_text().split("\n") if line.strip()]


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
