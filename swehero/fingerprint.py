"""Fingerprints of what a result was made from, cheap enough to take on every run: the recipe engine's manifests and
the eval's teacher-forced score record them, and a rerun compares."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def short_digest(data: Any) -> str:
    """sha256 (16 hex digits) of a JSON-like value, keys sorted."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint_path(path: str) -> str:
    """Size and mtime of a file, or of every file under a folder (stat only: content hashing of a 60 GB
    checkpoint on every run would cost minutes)."""
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"
    entries = []
    for root, dirs, files in os.walk(p):
        dirs.sort()
        for name in sorted(files):
            st = os.stat(os.path.join(root, name))
            entries.append((os.path.relpath(os.path.join(root, name), p), st.st_size, st.st_mtime_ns))
    return short_digest(entries)
