"""The local runtime's sandbox (real bubblewrap) and execute_bash's observations."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from agent_repos import CALC, CALC_FIX, make_task

from swehero.agent.local import LocalRuntime, find_bwrap
from swehero.agent.runtime import RuntimeConfig
from swehero.agent.tools import MAX_OBSERVATION_CHARS, Tools

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")
ROOT = "/workspace/toy__calc__0.1"


@pytest.fixture
def rt(tmp_path):
    task = make_task(tmp_path / "src", "calc", CALC, CALC_FIX)
    runtime = LocalRuntime.for_task(tmp_path / "src", task.base_commit, ROOT, tmp_path / "work",
                                    RuntimeConfig(default_timeout=20, output_cap_bytes=200_000))
    yield runtime
    runtime.close()


def bash(rt, command, mode="exec", **kw) -> str:
    return Tools(rt, mode).call("execute_bash", {"command": command, **kw}).observation


def test_observation_format_and_persistent_state(rt):
    assert bash(rt, "echo hello") == (f"hello\n[The command completed with exit code 0.]\n"
                                      f"[Current working directory: {ROOT}]\n[Command finished with exit code 0]")
    bash(rt, "cd pkg && export GREETING=hi")
    out = bash(rt, "pwd; echo $GREETING; false")
    assert out.startswith(f"{ROOT}/pkg\nhi\n[The command completed with exit code 1.]")
    assert out.endswith("[Command finished with exit code 1]")


def test_checkout_is_at_base_without_later_history(rt):
    out = bash(rt, "cat pkg/calc.py; git log --all --oneline | wc -l; git tag; git branch -a; git status --short")
    assert "return a - b" in out.split("\n")[2]
    assert "\n1\n* main\n[The command completed" in out  # one commit, no tags, one branch, clean tree
    assert "v-fixed" not in out and "must stay invisible" not in bash(rt, "git log --all; git reflog")


def test_writes_outside_the_checkout_fail(rt, tmp_path):
    # a host folder the sandbox does show (read-only): /tmp is replaced by the rollout's own, so not there
    outside = Path(tempfile.mkdtemp(prefix="swehero-test-", dir="/var/tmp"))
    try:
        victim = outside / "victim.txt"
        victim.write_text("safe\n")
        out = bash(rt, f"cat {victim}; echo pwned > {victim}; rm -f {victim}; touch /usr/pwned; touch {ROOT}/ok")
        assert out.startswith("safe\n") and out.count("Read-only file system") == 3, out
        assert victim.read_text() == "safe\n" and not os.path.exists("/usr/pwned")
        assert (rt.checkout / "ok").exists()
    finally:
        shutil.rmtree(outside)
    assert "No such file" in bash(rt, f"ls {tmp_path / 'src'}")  # the source repository (full history) is hidden


def test_private_tmp_no_network_own_pids(rt):
    bash(rt, "echo state > /tmp/keep")
    assert "state" in bash(rt, "cat /tmp/keep")  # /tmp persists within the rollout ...
    assert not os.path.exists("/tmp/keep")  # ... but is not the host's
    interfaces = bash(rt, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").split("\n[")[0]
    assert interfaces == "lo"  # a network namespace of its own, loopback only
    out = bash(rt, "getent hosts example.com || echo no-dns; (exec 3<>/dev/tcp/1.1.1.1/80) 2>&1 | head -1")
    assert "no-dns" in out and "93.184" not in out
    pids = bash(rt, "ls /proc | grep -E '^[0-9]+$' | wc -l").split("\n")[0]
    assert int(pids) < 10


def test_timeout_kills_the_whole_process_tree(rt):
    marker = f"sleep {1000 + os.getpid() % 1000}.5"
    t = time.monotonic()
    out = bash(rt, f"({marker} &) ; setsid {marker} & nohup {marker} >/dev/null 2>&1 & echo started; {marker}",
               timeout=2)
    assert time.monotonic() - t < 10
    assert out.startswith("started\n[The command timed out after 2 seconds and was killed")
    assert "[Command finished" not in out
    time.sleep(0.5)
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout == b""


def test_background_processes_end_with_their_command(rt):
    marker = f"sleep {2000 + os.getpid() % 1000}.5"
    out = bash(rt, f"{marker} & echo bg")
    assert out.startswith("bg\n[The command completed with exit code 0.]")
    time.sleep(0.5)
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout == b""


def test_output_caps_hold(rt):
    t = time.monotonic()
    out = bash(rt, "yes 0123456789 | head -c 50000000; echo; echo END")
    assert time.monotonic() - t < 30
    assert len(out) < MAX_OBSERVATION_CHARS + 400
    assert "[... Observation truncated due to length ...]" in out and "END\n[The command completed" in out
    out = bash(rt, "yes", timeout=2)  # endless output: killed at the deadline, memory stays capped
    assert "timed out after 2 seconds" in out and len(out) < MAX_OBSERVATION_CHARS + 400


def test_interactive_input_is_refused(rt):
    tools = Tools(rt, "exec")
    assert tools.call("execute_bash", {"command": "", "is_input": "true"}).observation == (
        "ERROR: No previous running command to interact with.")


def test_zero_mode_refuses_banned_commands_before_running_them(rt):
    tools = Tools(rt, "zero")
    outcome = tools.call("execute_bash", {"command": "touch ran && bash -c 'python3 -c 1'"})
    assert outcome.banned == ["python3"] and outcome.error
    assert outcome.observation.startswith("ERROR: Command refused, nothing was run: it would execute `python3`.")
    assert not (rt.checkout / "ran").exists()
    allowed = tools.call("execute_bash", {"command": "grep -rn add ."})
    assert "[The command completed with exit code 0.]" in allowed.observation and not allowed.banned


def test_patch_includes_new_files_and_ignores_agent_git_config(rt):
    bash(rt, "git config core.fsmonitor 'touch /tmp/fsmonitor-ran; echo'; echo new > added.txt")
    patch = rt.patch(rt.files.root and "HEAD")
    assert "+++ b/added.txt" in patch
    assert not os.path.exists(rt.workdir / "tmp" / "fsmonitor-ran")


def test_missing_bwrap_says_how_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match="apt-get install bubblewrap"):
        find_bwrap()


def test_bad_timeouts_and_extra_arguments(rt):
    tools = Tools(rt, "exec")
    for bad in (-1, 0, "soon", float("nan")):
        outcome = tools.call("execute_bash", {"command": "echo hi", "timeout": bad})
        assert outcome.error and outcome.observation.startswith("ERROR: Invalid `timeout` parameter")
    outcome = tools.call("execute_bash", {"command": "echo hi", "timeout": "3", "security_risk": "LOW"})
    assert outcome.observation.startswith("hi\n[The command completed with exit code 0.]")
    big = tools.call("execute_bash", {"command": "sleep 0.1", "timeout": 10**9})  # clamped to max_timeout
    assert not big.error


def test_source_repository_and_other_rollouts_are_hidden(tmp_path):
    """Outside /tmp the sandbox would see them read-only: they are covered with empty tmpfs mounts."""
    base = Path(tempfile.mkdtemp(prefix="swehero-test-", dir="/var/tmp"))
    try:
        task = make_task(base / "src", "calc", CALC, CALC_FIX)
        first = LocalRuntime.for_task(base / "src", task.base_commit, ROOT, base / "work")
        second = LocalRuntime.for_task(base / "src", task.base_commit, ROOT, base / "work")
        try:
            out = bash(first, f"ls -A {base / 'src'} | wc -l; ls -A {base / 'work'} | wc -l; ls {second.checkout}")
            assert out.startswith("0\n0\nls: cannot access"), out
        finally:
            first.close()
            second.close()
    finally:
        shutil.rmtree(base)
