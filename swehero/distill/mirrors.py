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
from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from swehero.jsonio import exclusive
from swehero.rollout.tasks import repo_dir

PARTIAL = ".partial-"
"""A clone in progress is `<name>.partial-<random>` beside its mirror, renamed to `<name>` when complete."""


def mirror_url(template: str, repo: str) -> str:
    """`{repo}` is `owner/name`, `{repo_dir}` its `owner__name` spelling (SWE-bench's folder names)."""
    return template.format(repo=repo, repo_dir=repo.replace("/", "__"))


MIRRORED = ("cloned", "cached", "updated", "stale")
"""The outcomes of a repository that has a mirror ("stale": one that lacks a commit its tasks need, the fetch of it
having failed: those tasks fail, the others run)."""


CLONES_AT_ONCE = 8
"""Clones a process runs at once: a clone waits on the network and the remote's packing, rarely on this machine."""


def base_commits(tasks: Iterable[dict]) -> dict[str, set[str]]:
    """{repo: the base commits of its tasks}, what `ensure_mirrors` makes sure each mirror has."""
    needed: dict[str, set[str]] = {}
    for task in tasks:
        commits = needed.setdefault(task["repo"], set())
        if task.get("base_commit"):
            commits.add(task["base_commit"])
    return needed


def ensure_mirrors(needed: Mapping[str, Collection[str]], url_template: str, cache: Path) -> dict[str, str]:
    """Clone the repositories of `needed` ({repo: the commits its tasks start at}, see `base_commits`) that have no
    mirror in `cache` yet, and fetch into each mirror that lacks one of its commits, `CLONES_AT_ONCE` at a time.
    Returns {repo: outcome}, the outcome "cloned", "cached", "updated", "stale", or why there is
    no mirror.

    A mirror is cloned once, but its source goes on gaining commits: a task added to the run later may start at one
    of them, and would fail on every rerun if the mirror were never fetched into.

    A repository that cannot be cloned (deleted, renamed, private) gets no mirror, and its git error on stderr at
    once: the runner then skips its tasks and attempts the others. Several processes (a sharded run's array tasks) may
    fill one cache at once: each repository is cloned by one of them while the others wait for its mirror. Each
    process takes the repositories in an order of its own, so that they clone different ones at once (all in the
    same order, each shard waited for every clone of the others: no faster than one process)."""
    from swehero.progress import progress

    cache.mkdir(parents=True, exist_ok=True)
    outcomes = {repo: "cached" for repo in needed}
    with ThreadPoolExecutor(CLONES_AT_ONCE) as pool:
        # one git process a mirror: thousands of them, on a shared file system, one after another would take minutes
        ready = pool.map(lambda repo: has_commits(repo_dir(cache, repo), needed[repo]), needed)
        todo = [repo for repo, has in zip(needed, ready) if not has]
        random.Random(uuid.uuid4().int).shuffle(todo)
        if todo:
            with progress("mirrors", "repo", len(todo)) as bar:
                for repo, outcome in zip(todo, pool.map(
                        lambda repo: ensure_mirror(repo, url_template, cache, needed[repo]), todo)):
                    outcomes[repo] = outcome
                    bar.update(1)
    return outcomes


def ensure_mirror(repo: str, url_template: str, cache: Path, commits: Collection[str] = ()) -> str:
    """One repository's mirror, holding `commits`, under a lock of its own beside it."""
    target = repo_dir(cache, repo)
    # a mirror appears only complete (renamed into place), and a fetch into it adds to it: no lock needed to use it
    if has_commits(target, commits):
        return "cached"
    with exclusive(target.with_name(target.name + ".lock")):
        if target.exists():  # cloned, or fetched into, by the process that held the lock before this one
            return "cached" if has_commits(target, commits) else update_mirror(repo, mirror_url(url_template, repo),
                                                                               target)
        for stale in cache.glob(target.name + PARTIAL + "*"):  # left by a killed clone: none runs without the lock
            shutil.rmtree(stale, ignore_errors=True)
        return clone_mirror(repo, mirror_url(url_template, repo), target)


def has_commits(mirror: Path, commits: Collection[str]) -> bool:
    """Whether `mirror` exists and holds every one of `commits`, asked of one `git cat-file` for them all."""
    if not mirror.exists():
        return False
    if not commits:
        return True
    asked = "".join(f"{commit}^{{commit}}\n" for commit in commits)
    found = subprocess.run(["git", "-C", str(mirror), "cat-file", "--batch-check"], input=asked,
                           capture_output=True, text=True).stdout.splitlines()
    # "<sha> commit <size>" for each one there, "<what was asked> missing" (or "ambiguous") for the others
    return sum(line.split()[1:2] == ["commit"] for line in found) == len(commits)


def update_mirror(repo: str, url: str, target: Path) -> str:
    """Fetch every ref of `url` into the mirror `target`, as its clone did (from the run's URL, which may have moved
    since). Not `--prune`: a ref deleted at the source may be the only one that reaches a base commit of a task
    that ran from this mirror before. A fetch that fails leaves the mirror usable (git moves a ref only once the
    objects it needs are in): the tasks at a commit it still lacks fail, the others run."""
    done = subprocess.run(["git", "-C", str(target), "fetch", "--quiet", url, "+refs/*:refs/*"],
                          capture_output=True, text=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        print(f"{repo}: mirror not updated, its tasks at a commit it lacks fail: git fetch {url} failed: "
              f"{' '.join(done.stderr.split())[-2000:]}", file=sys.stderr)
        return "stale"
    return "updated"


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
