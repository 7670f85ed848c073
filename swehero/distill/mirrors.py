"""The repository cache: a bare mirror of each task repository, cloned once (`git clone --mirror`, from a URL or a
local path) and shared by every task and rollout of that repository. 150k tasks come from ~3.5k repositories,
so cloning per task or rollout would fetch the same history thousands of times. Rollouts then take their checkout
from the mirror through the agent's runtime (history up to the base commit only, later commits stripped).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from swehero.errors import ProcessFailed
from swehero.rollout.tasks import repo_dir


def mirror_url(template: str, repo: str) -> str:
    """`{repo}` is `owner/name`, `{repo_dir}` its `owner__name` spelling (SWE-bench's folder names)."""
    return template.format(repo=repo, repo_dir=repo.replace("/", "__"))


def ensure_mirrors(repos: set[str], url_template: str, cache: Path) -> dict[str, str]:
    """Clone the repositories that have no mirror in `cache` yet; returns {repo: "cloned" | "cached"}.

    A clone goes to `<name>.partial` and is renamed when complete, so an interrupted clone is redone, never used.
    """
    cache.mkdir(parents=True, exist_ok=True)
    status = {}
    for repo in sorted(repos):
        target = repo_dir(cache, repo)
        if target.exists():
            status[repo] = "cached"
            continue
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        url = mirror_url(url_template, repo)
        done = subprocess.run(["git", "clone", "--mirror", "--quiet", url, str(partial)], capture_output=True, text=True)
        if done.returncode != 0:
            raise ProcessFailed(f"git clone --mirror {url} failed: {done.stderr.strip()[-2000:]}")
        partial.rename(target)
        status[repo] = "cloned"
    return status
