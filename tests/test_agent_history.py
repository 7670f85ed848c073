"""No future history: before the agent's first turn nothing newer than the base commit is reachable, in both
runtimes and both modes, and the runtimes refuse a repository that still exposes some."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent_repos import Scripted, git
from swehero.agent.run import run_task
from swehero.agent.settings import AgentSettings
from swehero.agent.runtime import FutureHistoryError, history_check_script, require_clean_history
from swehero.agent.task import Task

SECRET = "FUTURE-FIX-7f3a9c1e"
"""Only in the commit after the base (its code and its message): no agent command may show it."""

# What an agent looking for the fix could run. `git fsck --lost-found` also writes what it finds to disk.
PROBES = [
    "git log --all --oneline -p",
    "git log -g --all --format='%H %gs'; git reflog",
    "git tag -l; git branch -a -v; git remote -v; git stash list -p",
    "git fsck --unreachable --no-reflogs; git fsck --lost-found; ls -R .git/lost-found 2>/dev/null",
    "git cat-file --batch-all-objects --batch",
    "cat .git/FETCH_HEAD .git/ORIG_HEAD .git/packed-refs .git/config .git/logs/HEAD 2>&1; ls -R .git/refs",
    "grep -r . .git/logs 2>/dev/null | head -50",
]


def upstream(path: Path) -> Task:
    """A repository with a base commit, then the fix (with SECRET) on `main`, tagged, and a branch at it."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "t@t")
    git(path, "config", "user.name", "t")
    (path / "app.py").write_text("def answer():\n    return 41\n")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "base")
    base = git(path, "rev-parse", "HEAD").strip()
    (path / "app.py").write_text(f"def answer():\n    return 42  # {SECRET}\n")
    git(path, "commit", "-qam", f"fix it ({SECRET})")
    git(path, "tag", "v2")
    git(path, "branch", "later")
    return Task(instance_id="leak__app-1", repo="leak/app", base_commit=base, version="1.0",
                problem_statement="answer() is off by one")


def observations(task: Task, settings: AgentSettings, tmp_path: Path, source: Path | None,
                 monkeypatch) -> list[str]:
    probe = Scripted(PROBES)
    monkeypatch.setattr("swehero.agent.run._policy", lambda task, settings, root: probe)
    record = run_task(task, settings, tmp_path / "traj.json", source, tmp_path / "work")
    assert record["metadata"]["finish_reason"] == "submitted"
    return [m["content"] for m in record["messages"] if m["role"] == "tool"]


def assert_nothing_leaks(seen: list[str], host_paths: list[str]) -> None:
    assert len(seen) == len(PROBES)
    assert "base" in seen[0]  # the probes did show the history there is
    for text in seen:
        assert SECRET not in text
        for path in host_paths:
            assert path not in text, f"{path} shown to the agent: {text[:500]}"


@pytest.mark.bwrap
@pytest.mark.parametrize("mode", ["zero", "exec"])
def test_local_runtime_shows_nothing_after_the_base(tmp_path, mode, monkeypatch):
    task = upstream(tmp_path / "upstream")
    seen = observations(task, AgentSettings(mode=mode, policy="oracle", runtime="local"), tmp_path,
                        tmp_path / "upstream", monkeypatch)
    assert_nothing_leaks(seen, [str(tmp_path), str(tmp_path.resolve())])


def leaky_image(engine, base_image: str, task: Task, source: Path, context: Path) -> str:
    """An instance image whose /testbed is a full clone, as old SWE-bench images are: the fix, a tag, a branch, a
    remote naming a host path, reflogs, FETCH_HEAD, ORIG_HEAD and a stash with the secret."""
    from swehero.agent.container import swebench_image

    testbed = context / "testbed"
    subprocess.run(["git", "clone", "-q", str(source), str(testbed)], check=True)
    git(testbed, "config", "user.email", "t@t")
    git(testbed, "config", "user.name", "t")
    git(testbed, "fetch", "-q", "origin")
    git(testbed, "reset", "-q", "--hard", task.base_commit)
    (testbed / "app.py").write_text(f"# {SECRET} stashed\n")
    git(testbed, "stash", "-q")
    (context / "Dockerfile").write_text(f"FROM {base_image}\nCOPY testbed /testbed\nWORKDIR /testbed\n")
    name = swebench_image(task.instance_id)
    engine.images.build(path=str(context), tag=name, rm=True, network_mode="none")
    return name


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["zero", "exec"])
def test_docker_runtime_shows_nothing_after_the_base(docker_base_image, tmp_path, mode, monkeypatch):
    import docker

    engine = docker.from_env()
    task = upstream(tmp_path / "upstream")
    image = leaky_image(engine, docker_base_image, task, tmp_path / "upstream", tmp_path / "context")
    leaked = engine.containers.run(image, ["bash", "-c", "git log --all -p; git reflog; git remote -v"],
                                   network_mode="none", remove=True).decode()
    assert SECRET in leaked and str(tmp_path) in leaked  # the image does leak, until the runtime strips it
    seen = observations(task, AgentSettings(mode=mode, policy="oracle", runtime="docker"), tmp_path, None,
                        monkeypatch)
    assert_nothing_leaks(seen, [str(tmp_path)])


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_docker_runtime_refuses_history_it_cannot_strip(docker_base_image, tmp_path):
    """Objects borrowed from another repository (alternates) survive the stripping: the runtime says so and
    does not start the episode."""
    import docker

    from swehero.agent.container import DockerRuntime

    engine = docker.from_env()
    task = upstream(tmp_path / "upstream")
    context = tmp_path / "context"
    subprocess.run(["git", "clone", "-q", "--bare", str(tmp_path / "upstream"), str(context / "other.git")],
                   check=True)
    subprocess.run(["git", "clone", "-q", "--shared", str(context / "other.git"), str(context / "testbed")],
                   check=True)
    (context / "testbed/.git/objects/info/alternates").write_text("/opt/other.git/objects\n")
    (context / "Dockerfile").write_text(f"FROM {docker_base_image}\nCOPY other.git /opt/other.git\n"
                                        "COPY testbed /testbed\nWORKDIR /testbed\n")
    image, _ = engine.images.build(path=str(context), tag="swehero-test/borrowed-history:latest", rm=True,
                                   network_mode="none")
    with pytest.raises(FutureHistoryError, match="objects/info/alternates exists"):
        DockerRuntime(image.tags[0], "/workspace/leak__app__1.0", base_commit=task.base_commit)
    assert not engine.containers.list(all=True, filters={"label": "swehero=rollout", "ancestor": image.id})


def leaks(repo: Path, base: str) -> str:
    return subprocess.run(["bash", "-c", history_check_script(base)], cwd=repo, capture_output=True,
                          text=True).stdout


@pytest.mark.parametrize("leak, found", [
    ("tag", "refs/tags/v2 is not an ancestor"),
    ("branch", "refs/heads/later is not an ancestor"),
    ("remote", "remote origin"),
    ("reflog", "reflog "),
    ("fetch_head", "FETCH_HEAD exists"),
    ("orig_head", "ORIG_HEAD exists"),
    ("stash", "refs/stash is not an ancestor"),
    ("dangling", "unreachable commit"),
    ("head", "HEAD is not the base commit"),
    ("worktree", "linked worktrees exist"),
])
def test_history_check_finds_each_kind_of_leak(tmp_path, leak, found):
    """The check the runtimes run before the first turn, on a clean checkout with one leak added."""
    from swehero.agent.runtime import prepare_checkout

    task = upstream(tmp_path / "upstream")
    repo = tmp_path / "repo"
    prepare_checkout(tmp_path / "upstream", task.base_commit, repo, tmp_path / "cache")
    assert leaks(repo, task.base_commit) == ""
    later = git(tmp_path / "upstream", "rev-parse", "later").strip()
    fetch = ["fetch", "-q", str(tmp_path / "upstream")]
    steps = {
        "tag": [fetch + ["v2:refs/tags/v2"]], "branch": [fetch + ["later:refs/heads/later"]],
        "remote": [["remote", "add", "origin", str(tmp_path / "upstream")]],
        "reflog": [["commit", "-q", "--allow-empty", "-m", "x"], ["reset", "-q", "--hard", "HEAD~1"],
                   ["update-ref", "-d", "ORIG_HEAD"], ["fsck", "--no-progress"]],
        "fetch_head": [fetch + ["later"]], "orig_head": [["update-ref", "ORIG_HEAD", "HEAD"]],
        "stash": [["stash", "-q"]], "dangling": [fetch + ["later"], ["update-ref", "-d", "FETCH_HEAD"]],
        "head": [["commit", "-q", "--allow-empty", "-m", "x"], ["reflog", "expire", "--expire=now", "--all"]],
        "worktree": [["worktree", "add", "-q", str(tmp_path / "wt")], ["reflog", "expire", "--expire=now", "--all"]],
    }[leak]
    if leak == "stash":
        (repo / "app.py").write_text("changed\n")
    for step in steps:
        git(repo, *step)
    if leak == "dangling":
        (repo / ".git/FETCH_HEAD").unlink(missing_ok=True)
        assert subprocess.run(["git", "cat-file", "-e", later], cwd=repo).returncode == 0
    report = leaks(repo, task.base_commit)
    assert found in report
    with pytest.raises(FutureHistoryError, match="refusing to run it"):
        require_clean_history(report, str(repo), task.base_commit)
