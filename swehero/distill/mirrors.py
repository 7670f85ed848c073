"""The repository cache: a bare mirror of each task repository, cloned once (`git clone --mirror`, from a URL or a
local path) and shared by every task and rollout of that repository. 150k tasks come from ~3.5k repositories,
so cloning per task or rollout would fetch the same history thousands of times. Rollouts then take their checkout
from the mirror through the agent's runtime (history up to the base commit only, later commits stripped).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from swehero.jsonio import exclusive
from swehero.rollout.tasks import repo_dir

PARTIAL = ".partial-"
"""A clone in progress is `<name>.partial-<random>` beside its mirror, renamed to `<name>` when complete."""


def mirror_url(template: str, repo: str) -> str:
    """`{repo}` is `owner/name`, `{repo_dir}` its `owner__name` spelling (SWE-bench's folder names)."""
    return template.format(repo=repo, repo_dir=repo.replace("/", "__"))


MIRRORED = ("cloned", "cached")


CLONES_AT_ONCE = 8
"""Clones a process runs at once: a clone waits on the network and the remote's packing, rarely on this machine."""


def ensure_mirrors(repos: set[str], url_template: str, cache: Path) -> dict[str, str]:
    """Clone the repositories that have no mirror in `cache` yet, `CLONES_AT_ONCE` at a time; returns {repo:
    outcome}, the outcome "cloned", "cached", or why there is no mirror.

    A repository that cannot be cloned (deleted, renamed, private) gets no mirror, and its git error on stderr at
    once: the runner then skips its tasks and attempts the others. Several processes (a sharded run's array tasks) may
    fill one cache at once: each repository is cloned by one of them while the others wait for its mirror. Each
    process takes the repositories in an order of its own, so that they clone different ones at once (all in the
    same order, each shard waited for every clone of the others: no faster than one process)."""
    from swehero.progress import progress

    cache.mkdir(parents=True, exist_ok=True)
    missing = [repo for repo in repos if not repo_dir(cache, repo).exists()]
    random.Random(uuid.uuid4().int).shuffle(missing)
    outcomes = {repo: "cached" for repo in repos}
    if missing:
        with progress("mirrors", "repo", len(missing)) as bar, ThreadPoolExecutor(CLONES_AT_ONCE) as pool:
            for repo, outcome in zip(missing, pool.map(lambda repo: ensure_mirror(repo, url_template, cache), missing)):
                outcomes[repo] = outcome
                bar.update(1)
    return outcomes


def ensure_mirror(repo: str, url_template: str, cache: Path) -> str:
    """One repository's mirror, under a lock of its own beside it."""
    target = repo_dir(cache, repo)
    if target.exists():  # a mirror appears only complete (renamed into place): no lock needed to use it
        return "cached"
    with exclusive(target.with_name(target.name + ".lock")):
        if target.exists():  # cloned by the process that held the lock before this one
            return "cached"
        for stale in cache.glob(target.name + PARTIAL + "*"):  # left by a killed clone: none runs without the lock
            shutil.rmtree(stale, ignore_errors=True)
        return clone_mirror(repo, mirror_url(url_template, repo), target)


def clone_mirror(repo: str, url: str, target: Path) -> str:
    """`git clone --mirror url target` through a folder of its own, so an interrupted clone is never used."""
    partial = target.with_name(target.name + PARTIAL + uuid.uuid4().hex)
    try:
        # a private or deleted repository over https would otherwise ask for credentials on the terminal, holding
        # the repository's lock, and every process waiting for it, until someone answers
        done = subprocess.run(["git", "clone", "--mirror", "--quiet", url, str(partial)], capture_output=True,
                              text=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"}, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            why = f"{repo}: no mirror, git clone --mirror {url} failed: {' '.join(done.stderr.split())[-2000:]}"
            print(why, file=sys.stderr)
            return why
        partial.rename(target)
        return "cloned"
    finally:
        shutil.rmtree(partial, ignore_errors=True)
