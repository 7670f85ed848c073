"""The repository cache of `distill run --repo-url` (`swehero.distill.mirrors`): a repository that cannot be cloned
costs only its own tasks, and several processes (a sharded run's array tasks) share one cache."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from swehero.agent.settings import AgentSettings
from swehero.distill.run import Settings, distill
from swehero.rollout.toy import build_toy_tasks

FILL_CACHE = """
import json, sys, time
from pathlib import Path
from swehero.distill.mirrors import ensure_mirrors
go = Path(sys.argv[3])
print("ready", flush=True)
while not go.exists():  # both processes start cloning within a millisecond of each other
    time.sleep(0.001)
print(json.dumps(ensure_mirrors({"o/big": ()}, sys.argv[1], Path(sys.argv[2]))))
"""


def big_repository(path: Path, files: int = 60) -> None:
    """A git repository of `files` incompressible 100 kB files, whose clone takes a few tenths of a second."""
    subprocess.run(["git", "init", "--quiet", str(path)], check=True)
    stream = [b"blob\nmark :%d\ndata 100000\n%s\n" % (i + 1, os.urandom(100_000)) for i in range(files)]
    stream.append(b"commit refs/heads/main\ncommitter t <t@example.com> 0 +0000\ndata 2\nc\n"
                  + b"".join(b"M 100644 :%d f%d\n" % (i + 1, i) for i in range(files)) + b"\n")
    subprocess.run(["git", "-C", str(path), "fast-import", "--quiet"], input=b"".join(stream), check=True)


@pytest.mark.slow
def test_two_processes_fill_one_mirror_cache_at_once(tmp_path):
    """Each used to clear and clone into the same `<name>.partial`: both failed, and no mirror was left."""
    big_repository(tmp_path / "src" / "o__big")
    cache, go = tmp_path / "mirrors", tmp_path / "go"
    argv = [sys.executable, "-c", FILL_CACHE, f"file://{tmp_path}/src/{{repo_dir}}", str(cache), str(go)]
    processes = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    assert [p.stdout.readline() for p in processes] == ["ready\n"] * 2
    go.touch()
    ended = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err for _, err in ended]
    assert sorted(json.loads(out)["o/big"] for out, _ in ended) == ["cached", "cloned"]
    assert sorted(p.name for p in cache.iterdir()) == ["o__big", "o__big.lock"]  # no clone left half-done
    mirrored = subprocess.run(["git", "-C", str(cache / "o__big"), "ls-tree", "--name-only", "main"],
                              capture_output=True, text=True, check=True).stdout.split()
    assert len(mirrored) == 60


@pytest.mark.slow
def test_a_process_clones_several_repositories_at_once(tmp_path):
    """One after another, 3,500 clones of ~20 s held every shard of a paper-scale run for ~19 hours before its first
    episode."""
    import threading
    import time

    from swehero.distill.mirrors import ensure_mirrors

    repos = {f"o/big{i}": () for i in range(4)}
    for repo in repos:
        big_repository(tmp_path / "src" / repo.replace("/", "__"), files=30)
    cache, outcomes, most = tmp_path / "mirrors", {}, 0
    worker = threading.Thread(target=lambda: outcomes.update(
        ensure_mirrors(repos, f"file://{tmp_path}/src/{{repo_dir}}", cache)))
    worker.start()
    while worker.is_alive():
        most = max(most, len(list(cache.glob("*.partial-*"))))  # clones under way
        time.sleep(0.005)
    assert outcomes == {repo: "cloned" for repo in repos} and most >= 2, most


def test_a_clone_killed_midway_is_redone(tmp_path):
    """What a killed clone left is never used as a mirror, and goes when the repository is cloned."""
    from swehero.distill.mirrors import ensure_mirrors

    big_repository(tmp_path / "src" / "o__big", files=2)
    left = tmp_path / "mirrors" / "o__big.partial-0123"
    left.mkdir(parents=True)
    assert ensure_mirrors({"o/big": ()}, f"{tmp_path}/src/{{repo_dir}}", tmp_path / "mirrors") == {"o/big": "cloned"}
    assert not left.exists()


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd,
                          capture_output=True, text=True)


def later_commit(source: Path, parent: str, ref: str = "refs/heads/later") -> str:
    """A commit the source gains after its mirror was cloned: `parent`'s files, on a branch of its own."""
    sha = git(source, "commit-tree", f"{parent}^{{tree}}", "-p", parent, "-m", "later").stdout.strip()
    git(source, "update-ref", ref, sha)
    return sha


def has(mirror: Path, sha: str) -> bool:
    return git(mirror, "cat-file", "-e", f"{sha}^{{commit}}").returncode == 0


def test_a_mirror_is_fetched_into_for_a_commit_its_source_gained_since_its_clone(tmp_path):
    """A mirror was "cached" forever: a task added later, at a commit its source gained since, failed on every
    rerun (and the run still exited 0)."""
    from swehero.distill.mirrors import ensure_mirrors

    source, cache, url = tmp_path / "src" / "o__r", tmp_path / "mirrors", f"{tmp_path}/src/{{repo_dir}}"
    big_repository(source, files=1)
    old = git(source, "rev-parse", "refs/heads/main").stdout.strip()
    assert ensure_mirrors({"o/r": {old}}, url, cache) == {"o/r": "cloned"}
    new = later_commit(source, old)
    assert ensure_mirrors({"o/r": {old}}, url, cache) == {"o/r": "cached"}  # it has every commit: not fetched
    assert not has(cache / "o__r", new)
    assert ensure_mirrors({"o/r": {old, new}}, url, cache) == {"o/r": "updated"}
    assert has(cache / "o__r", new) and git(cache / "o__r", "rev-parse", "refs/heads/later").stdout.strip() == new
    assert ensure_mirrors({"o/r": {old, new}}, url, cache) == {"o/r": "cached"}
    assert ensure_mirrors({"o/r": ()}, url, cache) == {"o/r": "cached"}  # no commits named: any mirror will do


def test_a_mirror_whose_fetch_fails_stays_as_it_was(tmp_path, capfd):
    """Its tasks at a commit it lacks fail (git's reason on stderr); its other tasks, and the other repositories,
    still run from their mirrors."""
    from swehero.distill.mirrors import MIRRORED, ensure_mirrors

    source, cache, url = tmp_path / "src" / "o__r", tmp_path / "mirrors", f"{tmp_path}/src/{{repo_dir}}"
    big_repository(source, files=1)
    old = git(source, "rev-parse", "refs/heads/main").stdout.strip()
    ensure_mirrors({"o/r": {old}}, url, cache)
    shutil.rmtree(source)  # deleted at the source: nothing to fetch from
    outcomes = ensure_mirrors({"o/r": {old, "0" * 40}}, url, cache)
    assert outcomes == {"o/r": "stale"} and outcomes["o/r"] in MIRRORED
    assert f"o/r: mirror not updated, its tasks at a commit it lacks fail: git fetch {source} failed: " \
        in capfd.readouterr().err
    assert has(cache / "o__r", old) and sorted(p.name for p in cache.iterdir()) == ["o__r", "o__r.lock"]


@pytest.mark.slow
def test_a_run_fetches_the_base_commit_of_a_task_added_since_its_mirror_was_cloned(tmp_path):
    """The run passes each repository's base commits on, so that a rerun does the new task."""
    toy = build_toy_tasks(tmp_path / "toy")
    sources, tasks = tmp_path / "sources", tmp_path / "tasks.jsonl"
    shutil.copytree(toy.parent / "repos", sources)
    first = json.loads(toy.read_text().splitlines()[0])
    tasks.write_text(json.dumps(first) + "\n")
    settings = Settings(tasks=str(tasks), workers=1, progress=False, repo_url=f"{sources}/{{repo_dir}}",
                        agent=AgentSettings(policy="oracle", mode="zero"))
    assert distill(settings, tmp_path / "out")["episodes"] == 1
    added = {**first, "instance_id": first["instance_id"] + "-later",
             "base_commit": later_commit(sources / first["repo"].replace("/", "__"), first["base_commit"])}
    with tasks.open("a") as out:
        out.write(json.dumps(added) + "\n")
    summary = distill(settings, tmp_path / "out")
    assert summary["episodes"] == 2 and summary["failed_this_run"] == 0 and summary["outstanding_failures"] == 0


@pytest.mark.slow
def test_a_repository_that_cannot_be_cloned_costs_only_its_tasks(tmp_path, capfd):
    """One deleted or private repository among thousands used to stop the run before its first episode. A task at
    a commit its mirror lacks is named beside it (it went unnamed once any repository failed to mirror)."""
    from swehero.agent.local import MissingRepository

    toy = build_toy_tasks(tmp_path / "toy")
    rows = [json.loads(line) for line in toy.read_text().splitlines()]
    rows.append({**rows[1], "instance_id": rows[1]["instance_id"] + "-elsewhere", "base_commit": "0" * 40})
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(row) + "\n" for row in rows))
    sources = tmp_path / "sources"
    shutil.copytree(toy.parent / "repos", sources)
    shutil.rmtree(sources / "swehero-toy__calc")
    settings = Settings(tasks=str(tasks), workers=2, progress=False, repo_url=f"{sources}/{{repo_dir}}",
                        agent=AgentSettings(policy="oracle", mode="zero"))
    with pytest.raises(MissingRepository) as missing:
        distill(settings, tmp_path / "out")
    # git's reason, said when the clone fails (hours before a long run ends) and again in the run's error line
    why = f"swehero-toy/calc: no mirror, git clone --mirror {sources}/swehero-toy__calc failed: fatal: "
    assert str(missing.value).startswith(why) and "does not exist" in str(missing.value)
    assert f"no commit {'0' * 40} (the task's base_commit)" in str(missing.value)
    assert why in capfd.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["episodes"], summary["not_attempted"], len(summary["missing_repositories"])) == (3, 2, 2)
    shutil.copytree(toy.parent / "repos" / "swehero-toy__calc", sources / "swehero-toy__calc")
    tasks.write_text("".join(json.dumps(row) + "\n" for row in rows[:-1]))
    summary = distill(settings, tmp_path / "out")  # the rerun clones it and does its task
    assert summary["episodes"] == 4 and summary["skipped_as_done"] == 3


def test_the_shards_of_a_run_share_one_mirror_cache(tmp_path):
    """Each array task cloned every repository again into its own `shard-i/mirrors`."""
    from swehero.distill.shards import slurm_job

    tasks = "tasks.jsonl"  # not read until an array task runs
    github = Settings(tasks=tasks, endpoints=["http://a:8000/v1"], repo_url="https://github.com/{repo}.git")
    slurm_job(github, 4, tmp_path / "out")
    assert yaml.safe_load((tmp_path / "out" / "distill.yaml").read_text())["repos"] == str(tmp_path / "out" / "mirrors")
    chosen = Settings(tasks=tasks, endpoints=["http://a:8000/v1"], repo_url=github.repo_url, repos="/data/mirrors")
    slurm_job(chosen, 4, tmp_path / "mine")
    assert yaml.safe_load((tmp_path / "mine" / "distill.yaml").read_text())["repos"] == "/data/mirrors"
    slurm_job(Settings(tasks=tasks, endpoints=["http://a:8000/v1"]), 4, tmp_path / "local")  # no --repo-url
    assert yaml.safe_load((tmp_path / "local" / "distill.yaml").read_text())["repos"] == ""


@pytest.mark.parametrize("template", ["/data/repos/{owner}__{name}", "/data/repos/calc", "/data/{repo", "/data/{}"])
def test_a_repo_url_naming_no_repository_is_refused_before_the_run(tmp_path, template):
    """Another placeholder was a KeyError traceback after the run had begun; none cloned one repository under every
    task repository's name, and every episode failed on a missing base commit."""
    from click.testing import CliRunner

    from swehero.cli import main

    result = CliRunner().invoke(main, ["distill", "run", "--tasks", "toy", "--policy", "oracle", "--repo-url",
                                       template, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--repo-url: repo_url: needs {repo} (owner/name) or {repo_dir} (owner__name) " \
        f"and no other placeholder, got {template!r}" in result.output, result.output
    assert not (tmp_path / "out").exists()
