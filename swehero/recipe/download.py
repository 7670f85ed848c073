"""Stage kind `download`: Hugging Face Hub datasets and models, at pinned revisions, into the hub cache.

Each entry of `repos` is fetched with `huggingface_hub.snapshot_download` (the library's own resumable download:
an interrupted file continues from its `.incomplete` part; finished files are never fetched again), into the
Hugging Face cache (`HF_HUB_CACHE`, or `cache_dir`), so a model shared by several runs is stored once. The stage
folder gets one symlink per entry, `<stage>/<name>` -> the cache's `snapshots/<commit>` folder, which later
stages read as `${stages.<stage>.dir}/<name>`. The token comes from the environment (`HF_TOKEN`, or the login
`hf auth login` stored); with `HF_HUB_OFFLINE=1` the stage resolves everything from the cache.

The manifest's `provenance` records, per entry, the repository, the revision asked for and the commit it
resolved to: a run from a branch name (`main`) is still traceable, and `--set` with that commit repeats it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from swehero.errors import SettingError, Unavailable
from swehero.recipe.stage import StageContext

RESUMABLE = True  # partial downloads live in the hub cache and resume; the stage folder only holds symlinks
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class Repo:
    """One Hugging Face repository to fetch."""

    repo_id: str
    """Hub id, e.g. `nvidia/SWE-Hero-openhands-trajectories`."""
    revision: str
    """A commit (40 hex digits: the data can never change under the recipe), or a branch or tag (resolved at
    download time; the manifest records the commit). Required: an empty value stops the stage with a message."""
    repo_type: Literal["dataset", "model"] = "dataset"
    """What the repository holds."""
    allow_patterns: list[str] | None = None
    """Only files matching these globs (e.g. `["data/*.parquet"]`); default: every file."""


@dataclass
class Settings:
    repos: dict[str, Repo]
    """Output name -> repository; each becomes `<stage>/<name>`."""
    cache_dir: str | None = None
    """Hub cache to download into; default: the environment's (`HF_HUB_CACHE`, `HF_HOME`, ~/.cache/huggingface)."""


def check(settings: Settings, name: str, recipe, step) -> None:
    unpinned = [SettingError(("repos", entry, "revision"), (
        f"empty: pin {repo.repo_id} to a commit (40 hex digits, from the repository's 'Files and versions' page), "
        "or write `main` to take the latest (the manifest then records the commit it was)"))
        for entry, repo in settings.repos.items() if not repo.revision.strip()]
    if unpinned:  # every one at once: a recipe's downloads are often all unset, from one run's environment
        raise ExceptionGroup(f"stage {name}: unpinned revisions", unpinned)


def run(settings: Settings, ctx: StageContext) -> dict[str, str]:
    from huggingface_hub import snapshot_download

    outputs = {}
    for name, repo in settings.repos.items():
        try:
            snapshot = Path(snapshot_download(
                repo.repo_id, repo_type=repo.repo_type, revision=repo.revision, allow_patterns=repo.allow_patterns,
                cache_dir=settings.cache_dir,
            ))
        except OSError as e:  # offline and not cached, unknown repository or revision, no access: the hub's words
            raise Unavailable(f"stage {ctx.name}: cannot fetch {repo.repo_type} {repo.repo_id} at {repo.revision} "
                              f"from the Hugging Face hub ({name}): {' '.join(str(e).split())}") from None
        commit = snapshot.name  # the cache keeps every snapshot under snapshots/<commit>
        if not _COMMIT.match(commit):
            raise RuntimeError(f"{repo.repo_id}: snapshot_download returned {snapshot}, not a cache snapshot folder")
        link = ctx.dir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(snapshot, target_is_directory=True)
        ctx.provenance[name] = {"repo_id": repo.repo_id, "repo_type": repo.repo_type, "revision": repo.revision,
                                "commit": commit, "snapshot": str(snapshot)}
        outputs[name] = str(link)
    return outputs

