"""The episode's patch taken from the local runtime's checkout (real git, real bubblewrap): what the agent does to the
repository's git metadata must neither lose it nor change it, and must not reach other rollouts of the task."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from agent_repos import CALC, CALC_FIX, make_task

from swehero.agent.local import LocalRuntime
from swehero.agent.runtime import RuntimeConfig
from swehero.agent.tools import Tools

pytestmark = pytest.mark.bwrap
ROOT = "/testbed"


@pytest.fixture
def task(tmp_path):
    return make_task(tmp_path / "src", "calc", CALC, CALC_FIX)


def runtime(tmp_path: Path, task, name: str = "work", cache: Path | None = None) -> LocalRuntime:
    return LocalRuntime.for_task(tmp_path / "src", task.base_commit, ROOT, tmp_path / name,
                                 RuntimeConfig(default_timeout=20), history_cache=cache)


def bash(rt: LocalRuntime, command: str) -> str:
    out = Tools(rt, "exec").call("execute_bash", {"command": command}).observation
    assert "[The command completed with exit code 0.]" in out, out
    return out


def files(tree: Path) -> dict[str, bytes]:
    found = {}
    for top, dirs, names in os.walk(tree):
        dirs[:] = [d for d in dirs if d not in (".git", "__pycache__")]
        for name in names:
            path = Path(top) / name
            found[str(path.relative_to(tree))] = path.read_bytes()
    return found


def assert_reproduces(rt: LocalRuntime, patch: str, task, tmp_path: Path) -> None:
    """`git apply` of `patch` on a clean checkout of the base gives the agent's files, byte for byte."""
    clean = tmp_path / "clean"
    subprocess.run(["git", "clone", "-q", str(tmp_path / "src"), str(clean)], check=True)
    subprocess.run(["git", "-C", str(clean), "checkout", "-q", task.base_commit], check=True)
    subprocess.run(["git", "-C", str(clean), "apply", "-"], input=patch.encode(), check=True)
    assert files(clean) == files(rt.checkout)


@pytest.mark.parametrize("inside", ["", " && git add f && git -c user.name=a -c user.email=a@a commit -qm c"],
                         ids=["uncommitted", "committed"])
def test_a_repository_the_agent_made_in_the_checkout_leaves_its_files_in_the_patch(tmp_path, task, inside):
    """An agent reproducing a bug of a git-aware project may `git init` a folder; as OpenHands' SWE-bench evaluation
    does, that repository's `.git` is removed before the diff, so its files are ordinary new files."""
    rt = runtime(tmp_path, task)
    try:
        bash(rt, "sed -i 's/return a - b/return a + b/' pkg/calc.py")
        bash(rt, f"mkdir repro && cd repro && git init -q && echo x > f{inside}")
        patch = rt.patch(task.base_commit)
        assert "+    return a + b" in patch and "+++ b/repro/f" in patch and "Subproject" not in patch
        assert_reproduces(rt, patch, task, tmp_path)
    finally:
        rt.close()


def test_an_object_file_the_agent_overwrites_leaves_the_history_cache_intact(tmp_path, task):
    cache = tmp_path / "cache"
    rt = runtime(tmp_path, task, "first", cache)
    try:
        bash(rt, "for f in $(find .git/objects -type f -path '*/[0-9a-f][0-9a-f]/*'); do "
                 "chmod u+w $f && printf garbage > $f; done")
    finally:
        rt.close()
    [bare] = cache.glob("*.git")
    assert subprocess.run(["git", "fsck", "--no-progress"], cwd=bare, capture_output=True).returncode == 0
    rt = runtime(tmp_path, task, "second", cache)
    try:
        assert (rt.checkout / "pkg" / "calc.py").read_text() == CALC["pkg/calc.py"]
    finally:
        rt.close()


def test_git_settings_the_agent_writes_leave_the_patch_as_it_is(tmp_path, task):
    """A textconv driver (which would run the agent's program and here fails), other prefixes, no context and
    line-ending conversion, all in the checkout's `.git` where the agent may write."""
    settings = ("printf '*.py diff=up\\n' > .git/info/attributes && git config diff.up.textconv 'tr a-z A-Z' && "
                "git config diff.noprefix true && git config diff.mnemonicPrefix true && git config diff.context 0 "
                "&& git config core.autocrlf true")
    edit = "sed -i 's/return a - b/return a + b/' pkg/calc.py && printf 'one\\r\\ntwo\\r\\n' > windows.txt"
    patches = []
    for name, configure in (("plain", ""), ("configured", settings)):
        rt = runtime(tmp_path, task, name)
        try:
            if configure:
                bash(rt, configure)
            bash(rt, edit)
            patches.append(rt.patch(task.base_commit))
            if configure:
                assert_reproduces(rt, patches[-1], task, tmp_path)
        finally:
            rt.close()
    assert patches[0] == patches[1]
    assert "diff --git a/pkg/calc.py b/pkg/calc.py\n" in patches[1] and "+one\r\n" in patches[1]


def test_what_the_install_generated_stays_out_of_the_patch_whatever_its_name(tmp_path, task):
    """The files an install makes are excluded by name: names git quotes (non-ASCII, a newline), names gitignore
    would read as a glob, comment, negation or trailing blank, and a name that is no UTF-8. A file the agent
    creates later, which the glob `a[1].txt` would have matched, is still in the patch."""
    rt = runtime(tmp_path, task)
    try:
        names = [b"caf\xc3\xa9.mo", b"#notes", b"!bang", b"a[1].txt", b"star*.txt", b"back\\slash", b"trail ",
                 b"new\nline", b"latin\xe9.txt", b"build/lib/x.py"]
        for name in names:
            path = os.path.join(bytes(rt.checkout), name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(b"generated\n")
        from swehero.agent.local import _exclude, untracked_patterns

        _exclude(rt.checkout, untracked_patterns(rt.checkout))
        bash(rt, "echo mine > a1.txt")
        patch = rt.patch(task.base_commit)
        assert "+++ b/a1.txt" in patch and patch.count("diff --git") == 1, patch
    finally:
        rt.close()
