"""A Hugging Face hub cache written in the layout huggingface_hub itself keeps (for offline tests)."""

import hashlib
import os
from pathlib import Path


def add_to_cache(cache: Path, repo_id: str, commit: str, files: dict[str, bytes], ref: str | None = "main",
                 repo_type: str = "dataset") -> Path:
    """One snapshot of a repository, stored as huggingface_hub stores downloads: content-addressed blobs,
    the snapshot's files as relative symlinks to them, and the branch's commit under refs/."""
    folder = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = folder / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / ref).write_text(commit)
    return folder / "snapshots" / commit
