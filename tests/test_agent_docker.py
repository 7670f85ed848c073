"""The Docker runtime against a real engine, in containers of the toy tasks' instance images built here.

Needs a Docker engine: the session starts one when it can (tests/conftest.py), else these tests are skipped with
the reason. Each test starts its own container from the session's images (about 2 s).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent_repos import Scripted
from openhands_session import replay, replay_editor
from swehero.agent.container import DockerConfig, DockerRuntime
from swehero.agent.editor import Editor, ToolError
from swehero.agent.task import OPENHANDS_ROOT, Task, agent_root
from swehero.agent.tools import Tools
from swehero.eval.images import ENV_DIR, image_name
from swehero.rollout.tasks import load_tasks

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def calc(toy_images) -> dict:
    return next(t for t in load_tasks(str(toy_images)) if t["instance_id"] == "swehero-toy__calc-1")


def start(task: dict, **limits) -> DockerRuntime:
    """A rollout container as `run_task` makes it: the workspace root, the history stripped and checked."""
    return DockerRuntime(image_name(task), agent_root(OPENHANDS_ROOT, Task.from_row(task)),
                         limits=DockerConfig(**limits), base_commit=task["base_commit"])


def processes(rt: DockerRuntime) -> list[str]:
    """Command lines of the container's processes (PID 1 and the lifetime `sleep` included)."""
    out = rt.sh("for p in /proc/[0-9]*; do [ ${p#/proc/} = $$ ] || tr '\\0' ' ' < $p/cmdline; echo; done")
    return [line.strip() for line in out.splitlines() if line.strip()]


def rollout_containers() -> list[str]:
    import docker

    return [c.name for c in docker.from_env().containers.list(all=True, filters={"label": "swehero=rollout"})]


@pytest.mark.timeout(120)
def test_output_that_arrives_with_the_engines_reply_is_not_lost(calc, monkeypatch):
    """docker-py reads the engine's reply to an exec's start through a buffered reader and hands over the socket
    under it: output that arrived in the same read as the reply (a quick command, a client slow to read on a busy
    machine) stayed in that buffer. An agent's `echo` gave no output with exit code 0, a helper's listing of the
    untracked files came back empty (their files then landed in the patch)."""
    import http.client

    rt = start(calc)
    try:
        begin = http.client.HTTPResponse.begin

        def late(self):  # the client reads the reply only once the command has written its output
            time.sleep(0.3)
            return begin(self)

        monkeypatch.setattr(http.client.HTTPResponse, "begin", late)
        assert [rt.execute("echo hello", 10).output.strip() for _ in range(2)] == ["hello"] * 2
        assert rt.run("echo helper; exit 3") == (3, "helper\n")
    finally:
        rt.close()


def test_commands_run_in_the_instance_environment_at_the_workspace(calc):
    """The image's `python` exists only once its start-up file has activated the `testbed` environment; every
    agent command runs in that environment, in the repository moved to the OpenHands workspace path."""
    import docker

    bare = docker.from_env().containers.run(image_name(calc), ["bash", "-c", "command -v python || echo none"],
                                            network_mode="none", remove=True)
    assert bare.decode().strip() == "none"
    rt = start(calc)
    try:
        result = rt.execute("command -v python; python -c 'import pytest, sys; print(sys.prefix)'; pwd; "
                            "readlink /testbed; git rev-parse HEAD", 30)
        root = "/workspace/swehero-toy__calc__0.1"
        assert result.output.split() == [f"{ENV_DIR}/bin/python", ENV_DIR, root, root, calc["base_commit"]]
        assert (result.exit_code, result.cwd, result.python) == (0, root, f"{ENV_DIR}/bin/python")
        tests = rt.execute("python -m pytest -q tests 2>&1 | tail -1", 60)
        assert "1 passed" in tests.output  # the instance's own tests run in its environment
        assert rt.execute("cd calc && export MARK=kept", 10).exit_code == 0
        later = rt.execute("echo $MARK; pwd; echo $VIRTUAL_ENV", 10)
        assert later.output.split() == ["kept", f"{root}/calc", ENV_DIR]
    finally:
        rt.close()


@pytest.mark.timeout(180)
def test_start_up_files_set_the_environment_and_their_output_is_not_run(calc, tmp_path):
    """An image whose `~/.bashrc` (interactive only, as Debian's is) exports a variable and prints a banner that
    reads like a command: the variable reaches the agent's commands, the banner is never executed."""
    import docker

    (tmp_path / "Dockerfile").write_text(
        f"FROM {image_name(calc)}\n"
        "RUN printf '%s\\n' 'case $- in *i*) ;; *) return;; esac' 'export GREETING=from-bashrc' "
        "'echo \"Welcome; touch /tmp/banner-ran\"' >> /root/.bashrc\n")
    image, _ = docker.from_env().images.build(path=str(tmp_path), tag="swehero-test/bashrc-banner:latest", rm=True,
                                             network_mode="none")
    rt = DockerRuntime(image.tags[0], "/workspace/swehero-toy__calc__0.1", base_commit=calc["base_commit"])
    try:
        seen = rt.execute("echo $GREETING; ls /tmp/banner-ran 2>&1; command -v python", 30)
        assert seen.output.split("\n")[0] == "from-bashrc" and "No such file" in seen.output
        assert f"{ENV_DIR}/bin/python" in seen.output
    finally:
        rt.close()


@pytest.mark.timeout(120)
def test_an_attempts_container_lives_no_longer_than_the_attempt(calc, tmp_path, monkeypatch):
    from swehero.agent.run import run_task
    from swehero.agent.settings import AgentSettings

    probe = Scripted(["tr '\\0' ' ' < /proc/1/cmdline"])
    monkeypatch.setattr("swehero.agent.run._policy", lambda task, settings, root: probe)
    record = run_task(Task.from_row(calc), AgentSettings(runtime="docker", time_limit_s=30, kill_grace_s=10),
                      tmp_path / "traj.json")
    shown = next(m["content"] for m in record["messages"] if m["role"] == "tool")
    assert shown.startswith("sh -c while :; do sleep 100 & wait $! && exit; done")  # 30 + 10 + 60 s, not 6 h


@pytest.mark.timeout(180)
def test_the_agent_killing_every_process_it_can_leaves_the_container_and_swehero_own_commands(calc):
    """`pkill sleep` and `kill -9 -1` end neither the container (PID 1 is its keep-alive, which no signal from
    inside reaches) nor the editor's commands in flight when a command ends (the reaper spares them): it killed
    them, losing a file's mode or failing the editor's call. The command itself may not get to its `echo`: `kill -9
    -1` kills the exec's wrapper, the leader of the terminal's session, whose end hangs up the command's shell (as
    killing the tmux server hangs up OpenHands' shell), at a moment the test cannot choose."""
    rt = start(calc)
    try:
        assert not rt.execute("sleep 300 & sleep 0.2; pkill sleep; kill -9 -1; echo killed", 30).timed_out
        assert rt.execute("echo alive", 30).output.startswith("alive")
        rt.start("sleep 2")  # ends, and reaps, while the helper below runs
        assert rt.run("sleep 4; echo helper-survived") == (0, "helper-survived\n")
        assert rt.execute("echo still-alive", 30).output.startswith("still-alive")
        assert rt.patch(calc["base_commit"]) == ""
    finally:
        rt.close()


@pytest.mark.timeout(120)
def test_commands_have_a_terminal_as_in_the_local_sandbox(calc):
    """Output goes to a terminal of OpenHands' pane size, as in the local runtime (where tests/test_agent_terminal.py
    compares it with OpenHands' pane itself): input from it too, newlines left as written, git never pages."""
    rt = start(calc)
    try:
        probe = rt.execute("python -c \"import shutil, sys; print(tuple(shutil.get_terminal_size()), "
                           "sys.stdout.isatty(), sys.stdin.isatty())\"; echo $TERM", 30)
        assert probe.output == "(1000, 1000) True True\ndumb\n"
        assert rt.execute("ls", 10).output == rt.execute("ls -C -w 1000 | cat", 10).output != \
            rt.execute("ls | cat", 10).output
        warned = rt.execute("python -c \"import warnings; print('first'); warnings.warn('second'); print('third')\"",
                            30).output.splitlines()
        assert warned[0] == "first" and "UserWarning: second" in warned[1] and warned[-1] == "third"
        log = rt.execute("git -c core.pager='echo PAGED' log -1 --format=%H", 10)
        assert log.output.split() == [calc["base_commit"]] and not log.timed_out
    finally:
        rt.close()


@pytest.mark.timeout(120)
def test_no_network(calc):
    rt = start(calc)
    try:
        probe = rt.execute("python -c \"import socket; socket.create_connection(('10.1.2.3', 80), timeout=5); "
                           "print('connected')\"", 30)
        assert probe.exit_code != 0 and "connected" not in probe.output
        assert "Network is unreachable" in probe.output
        assert rt.execute("ls /sys/class/net", 10).output.split() == ["lo"]
    finally:
        rt.close()


@pytest.mark.timeout(180)
def test_pids_limit_stops_a_fork_bomb(calc):
    rt = start(calc, pids=64)
    try:
        start_time = time.monotonic()
        bomb = rt.execute("bomb() { bomb | bomb & }; bomb; sleep 5; echo survived", 20)
        assert time.monotonic() - start_time < 60
        assert "Resource temporarily unavailable" in bomb.output  # forks refused at the limit
        assert rt.execute("echo alive", 10).output.strip() == "alive"
        assert len(processes(rt)) <= 3  # everything the bomb forked was killed with the command
        assert subprocess.run(["true"]).returncode == 0  # the host still forks
    finally:
        rt.close()


@pytest.mark.timeout(180)
def test_memory_limit_kills_an_allocation_loop(calc):
    rt = start(calc, memory="256m")
    try:
        start_time = time.monotonic()
        hog = rt.execute("python -c \"a = []\nwhile True: a.append(bytearray(10**7))\"", 120)
        assert hog.exit_code == 137 and not hog.timed_out  # OOM-killed inside the container, long before 120 s
        assert time.monotonic() - start_time < 60
        assert rt.execute("echo alive", 10).output.strip() == "alive"
    finally:
        rt.close()


@pytest.mark.timeout(120)
def test_timeout_kills_the_whole_process_tree(calc):
    """A timed-out command dies with everything it started, even daemons that left its process group; a command
    that finishes takes its background processes with it, as in the local sandbox. The first command, killed
    before it saved the shell's state, leaves the shell at the root (the missing state file's error, which the
    engine sent on its own stream, once arrived after the helper's end marker and failed the call)."""
    rt = start(calc)
    try:
        start_time = time.monotonic()
        result = rt.execute("setsid sleep 601 & nohup sleep 602 >/dev/null 2>&1 & (sleep 603 &); sleep 604", 3)
        assert result.timed_out and result.exit_code == -1 and result.cwd == rt.root
        assert time.monotonic() - start_time < 15
        assert not [p for p in processes(rt) if "sleep 60" in p]
        quick = rt.execute("sleep 605 & echo started", 10)
        assert re.fullmatch(r"\[1\] \d+\nstarted", quick.output.strip()) and not quick.timed_out  # job reported
        assert not [p for p in processes(rt) if "sleep 60" in p]
        # a helper's stderr in its place, and an `exit` in it no lost end marker
        assert rt.query("echo out; cat /none; exit 3") == (3, "out\ncat: /none: No such file or directory\n")
    finally:
        rt.close()


@pytest.mark.timeout(240)
def test_a_command_outlives_its_call_as_in_openhands(calc):
    """As in the local runtime (tests/test_agent_sandbox.py): calls recorded from OpenHands' own bash session give
    the same observations; a command left running is killed, with what it started, before the patch is taken."""
    rt = start(calc)
    try:
        rt.execute("mkdir pkg", 10)
        replay(rt, rt.root)
        # 5 s, not 1: under load the shell's job line ([1] PID) reached the pane only after a 1 s wait had ended
        rt.config = dataclasses.replace(rt.config, no_output_timeout=5)
        assert re.match(r"\[1\] \d+\n\[The command has no new output after 5 seconds\.",
                        Tools(rt, "exec").call("execute_bash", {"command": "sleep 607 & sleep 608"}).observation)
        assert [p for p in processes(rt) if "sleep 60" in p]
        rt.patch(calc["base_commit"])
        assert not [p for p in processes(rt) if "sleep 60" in p]
    finally:
        rt.close()


@pytest.mark.timeout(300)
def test_editor_calls_recorded_from_openhands_give_the_same_observations_and_files(calc):
    """As in the local runtime: the container's files, read and written through the Docker API, give OpenHands'."""
    rt = start(calc)
    try:
        replay_editor(rt, rt.root)
    finally:
        rt.close()


@pytest.mark.timeout(120)
def test_binary_and_non_utf8_files_and_huge_outputs_survive(calc):
    rt = start(calc)
    root = rt.root
    try:
        every_byte = bytes(range(256)) * 4
        rt.container.put_archive(root, _tar("blob.bin", every_byte))
        assert rt.files.read_bytes(f"{root}/blob.bin") == every_byte
        shown = rt.execute("sha256sum blob.bin", 10).output.split()[0]
        assert shown == hashlib.sha256(every_byte).hexdigest()
        editor = Editor(rt.files)
        with pytest.raises(ToolError, match="binary"):
            editor("view", f"{root}/blob.bin")
        rt.container.put_archive(root, _tar("big.bin", every_byte * 12_000))  # over the editor's 10 MB
        assert rt.files.read_bytes(f"{root}/big.bin", 1024) == every_byte and editor.binary(f"{root}/big.bin")
        assert not editor.binary(root) and not editor.binary(f"{root}/nowhere.bin")
        latin1 = "café = 1\n".encode("latin-1")
        rt.container.put_archive(root, _tar("latin.py", latin1))
        editor("str_replace", f"{root}/latin.py", old_str="1", new_str="2")  # read and written back as Latin-1
        assert rt.files.read_bytes(f"{root}/latin.py") == "café = 2\n".encode("latin-1")
        raw = rt.execute("cat latin.py; printf '\\377\\376 end\\n'", 10)
        # bytes that are not UTF-8 are left out, as OpenHands' tmux pane leaves them out
        assert raw.exit_code == 0 and raw.output.endswith("caf = 2\n end\n")
        patch = rt.patch(calc["base_commit"])  # the Latin-1 file as a binary patch: its bytes survive as text
        assert "\ufffd" not in patch and "diff --git a/latin.py b/latin.py\nnew file mode 100644" in patch
        rt.container.put_archive("/tmp", _tar("latin.patch", patch.encode()))
        check = rt.execute(f"git clone -q {root} /tmp/check && git -C /tmp/check checkout -q {calc['base_commit']} "
                           "&& git -C /tmp/check apply /tmp/latin.patch && cmp /tmp/check/latin.py latin.py "
                           "&& echo same", 30)
        assert check.output.strip().endswith("same"), check.output
        text = "naïve → ünïcödé 🚀\n" * 1000
        editor("create", f"{root}/notes.md", file_text=text)
        assert rt.execute("sha256sum notes.md", 10).output.split()[0] == hashlib.sha256(text.encode()).hexdigest()
        rt.execute("printf '#!/bin/sh\\necho one\\n' > run.sh && chmod 755 run.sh", 10)
        editor("str_replace", f"{root}/run.sh", old_str="one", new_str="two")
        assert rt.execute("./run.sh; stat -c %a run.sh", 10).output.split() == ["two", "755"]
        big = rt.execute("head -c 50000000 /dev/zero | tr '\\0' x; echo; echo tail-marker", 60)
        assert big.exit_code == 0 and len(big.output) < 2 * rt.config.output_cap_bytes
        assert "bytes of output dropped" in big.output and big.output.rstrip().endswith("tail-marker")
        rt.execute("head -c 3000000 /dev/urandom > random.bin", 10)
        data = rt.files.read_bytes(f"{root}/random.bin")
        assert len(data) == 3000000
        assert rt.execute("sha256sum random.bin", 10).output.split()[0] == hashlib.sha256(data).hexdigest()
    finally:
        rt.close()


@pytest.mark.timeout(120)
def test_directory_listing_and_links_are_openhands_own(calc):
    """The editor's directory view lists what OHEditor's `find -L | sort` lists in the container, in its order,
    linked directories with their entries; linked files are read and written through their links."""
    rt = start(calc)
    try:
        tree = f"{rt.root}/tree"
        rt.execute("mkdir -p tree/pkg tree/Zeta tree/_x/.hid 'tree/a b' tree/deep/er && touch tree/pkg/a.py "
                   "tree/pkg-extra.py tree/pkg.txt tree/Zeta/i.py tree/.env tree/_x/.hid/h 'tree/a b/c' "
                   "tree/deep/er/est.py tree/é.py && ln -s pkg tree/linked", 10)
        openhands = rt.sh(f"find -L {tree} -maxdepth 2 -not \\( -path '{tree}/.*' -o -path '{tree}/*/.*' \\) | sort "
                          "| while IFS= read -r p; do if [ -d \"$p\" ]; then echo \"$p/\"; else echo \"$p\"; fi; done")
        view = Editor(rt.files)("view", tree)
        assert view == (f"Here's the files and directories up to 2 levels deep in {tree}, excluding hidden items:\n"
                        f"{openhands.rstrip()}\n\n1 hidden files/directories in this directory are excluded. "
                        f"You can use 'ls -la {tree}' to see them.")
        assert view.index(f"{tree}/pkg-extra.py\n") < view.index(f"{tree}/pkg/a.py\n")
        assert f"{tree}/linked/a.py\n" in view  # the link is followed, as `find -L` follows it
        assert Editor(rt.files)("view", f"{tree}/linked").endswith(f"\n{tree}/linked/\n{tree}/linked/a.py")
        # A linked file is read and edited through its link, which stays a link (as OHEditor's open() does).
        rt.execute("printf 'x = 1\\n' > tree/target.py && ln -s target.py tree/alias.py", 10)
        editor = Editor(rt.files)
        assert editor("view", f"{tree}/alias.py").endswith("     1\tx = 1\n     2\t\n")
        editor("str_replace", f"{tree}/alias.py", old_str="1", new_str="2")
        assert rt.sh(f"readlink {tree}/alias.py; cat {tree}/target.py") == "target.py\nx = 2\n"
        rt.execute("mkfifo tree/pipe", 10)
        with pytest.raises(ToolError, match=f"^File validation failed for {tree}/pipe: it is not a regular file.$"):
            editor("view", f"{tree}/pipe")
    finally:
        rt.close()


@pytest.mark.timeout(120)
def test_a_helper_output_the_engine_loses_is_asked_for_again(calc, monkeypatch):
    """The engine's exec now and then gives back none of a short command's output (docker-py#2042): a file the
    editor had just viewed was then "does not exist", in a CI run. Here the engine's answer loses the output, or its
    start, before each helper's first try: the editor still sees the file, its mode and the directory's entries."""
    from swehero.agent import container

    rt = start(calc)
    try:
        exec_output, lost = container.exec_output, []

        def losing(*args, **kwargs):
            code, out = exec_output(*args, **kwargs)
            if len(lost) % 2 == 0:  # every other answer: none of it, or all but its last bytes
                out = b"" if len(lost) % 4 == 0 else out[-12:]
            lost.append(args[1])
            return code, out

        monkeypatch.setattr(container, "exec_output", losing)
        path = f"{rt.root}/calc/ops.py"
        assert rt.files.kind(path) == "file" and rt.files.kind(f"{rt.root}/calc") == "dir"
        assert rt.files.kind(f"{rt.root}/nope") is None
        rt.execute("chmod 755 calc/ops.py", 10)
        Editor(rt.files)("str_replace", path, old_str="def add(a, b):\n    return a - b",
                         new_str="def add(a, b):\n    return a + b")
        monkeypatch.setattr(container, "exec_output", exec_output)
        assert rt.sh(f"stat -c %a {path}; grep -c 'a + b' {path}") == "755\n1\n"  # its mode kept
        assert lost, "no helper ran"
        monkeypatch.setattr(container, "exec_output", lambda *args, **kwargs: (0, b""))  # lost every time: an error
        with pytest.raises(RuntimeError, match="gave back the output of .* incomplete three times"):
            rt.files.kind(path)
    finally:
        monkeypatch.setattr(container, "exec_output", exec_output)
        rt.close()


def _tar(name: str, data: bytes) -> bytes:
    from swehero.agent.container import tar_one

    return tar_one(name, data)


_HOLDER = textwrap.dedent("""
    import sys, time
    from swehero.agent.container import DockerConfig, DockerRuntime
    rt = DockerRuntime(sys.argv[1], limits=DockerConfig(lifetime=int(sys.argv[2])))
    print(rt.container.name, flush=True)
    if sys.argv[3] == "exit":
        sys.exit(0)  # no close(): the atexit hook removes the container
    rt.execute("sleep 300", 600)
""")


def _hold(image: str, lifetime: int, then: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # SIGINT as a terminal delivers it: a shell runs background jobs with SIGINT ignored, and the child would
    # inherit that when the tests themselves run in the background
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, image, str(lifetime), then], stdout=subprocess.PIPE,
                            text=True, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, proc.stdout.readline().strip()


def _gone_within(name: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if name not in rollout_containers():
            return True
        time.sleep(0.5)
    return False


@pytest.mark.timeout(180)
def test_no_container_outlives_a_killed_swehero_past_its_lifetime(calc):
    proc, name = _hold(image_name(calc), lifetime=15, then="wait")
    assert name.startswith("swehero-")
    time.sleep(2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert name in rollout_containers()  # nothing could clean up...
    assert _gone_within(name, 40)  # ...but the engine removes it once its lifetime has passed


@pytest.mark.timeout(180)
@pytest.mark.parametrize("then", ["ctrl-c", "exit"])
def test_no_container_left_after_ctrl_c_or_normal_exit(calc, then):
    proc, name = _hold(image_name(calc), lifetime=600, then="wait" if then == "ctrl-c" else "exit")
    assert name.startswith("swehero-")
    if then == "ctrl-c":
        time.sleep(2)  # inside `execute("sleep 300")`
        proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert _gone_within(name, 15)  # at once, not after the 600 s lifetime


@pytest.mark.timeout(300)
def test_closing_a_container_the_engine_is_removing_already_is_no_error(calc):
    """The engine answers a removal while another is under way (its own `auto_remove` at the end of the lifetime)
    with 409 Conflict, which `close()` raised after a finished episode. Here the other removal is a client's, at
    the same instant, a few times over: the engine answers one of the two with 409 or 404."""
    import threading

    import docker

    engine = docker.from_env()
    for _ in range(5):
        rt = start(calc)
        name, go = rt.container.name, threading.Barrier(2)

        def remove_too():
            go.wait()
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                engine.api.remove_container(name, force=True)

        other = threading.Thread(target=remove_too)
        other.start()
        go.wait()
        rt.close()
        other.join()
        assert name not in rollout_containers()


@pytest.fixture
def own_image(calc):
    """The calc task's image under a name of this test's own, which pruning may remove."""
    import docker

    engine = docker.from_env()
    name = f"swehero-test/prune:{os.urandom(4).hex()}"
    engine.images.get(image_name(calc)).tag(name)
    yield name
    with contextlib.suppress(docker.errors.ImageNotFound):
        engine.images.remove(name)


def image_exists(name: str) -> bool:
    import docker

    try:
        docker.from_env().images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


@pytest.mark.timeout(180)
def test_a_pruning_runtime_leaves_the_image_to_the_tasks_other_containers(calc, own_image):
    """Closing one of two rollouts of a task must neither take the image from the other (removed by force, it would
    only be untagged: the next rollout could not start, a locally built image cannot be pulled) nor raise over a
    finished attempt; the image goes with the last container that uses it."""
    limits = dict(limits=DockerConfig(prune_image=True, min_free_gb=0), base_commit=calc["base_commit"])
    first, second = DockerRuntime(own_image, **limits), DockerRuntime(own_image, **limits)
    first.close()
    third = DockerRuntime(own_image, **limits)
    third.close()
    assert image_exists(own_image)
    second.close()
    assert not image_exists(own_image)
    second.close()  # closing again, the image gone: nothing to do, nothing raised


@pytest.mark.timeout(300)
def test_a_run_prunes_a_tasks_image_after_its_last_attempt(calc, own_image, tmp_path):
    """Three attempts of one task, two at a time, with `docker.prune_image`: every attempt finds the image and
    submits, and the image goes once the last has ended."""
    from swehero.agent.settings import AgentSettings
    from swehero.rollout.runner import Job, run_attempts

    settings = AgentSettings(policy="oracle", mode="zero", runtime="docker", image=own_image,
                             docker=DockerConfig(prune_image=True, min_free_gb=0))
    ended = []

    def commit(job, record):
        ended.append((record["metadata"]["finish_reason"], record["metadata"].get("error"), bool(record["patch"])))
        assert image_exists(own_image)  # still there for the attempts not yet ended

    ran = run_attempts([Job(calc, i) for i in range(3)], settings, commit, tmp_path / "work", workers=2)
    assert ended == [("submitted", None, True)] * 3 and ran["agent_errors"] == 0
    assert not image_exists(own_image)


class Interrupted(BaseException):
    """What a signal handler raises: the attempt's time limit, or SIGTERM unwinding as Ctrl-C does."""


@pytest.mark.timeout(120)
def test_no_container_is_left_when_a_signal_lands_between_create_and_start(calc, monkeypatch):
    """Starting a container is a create, then a start: a signal whose handler raises, landing once the engine has
    created the container but before it runs (where `auto_remove` never fires), must not leave the container."""
    import docker.api.container

    create = docker.api.container.ContainerApiMixin.create_container
    created = []

    def create_then_signal(self, *args, **kwargs):
        answer = create(self, *args, **kwargs)  # the engine has made the container...
        created.append(kwargs["name"])
        signal.raise_signal(signal.SIGUSR1)  # ...and the signal lands as its answer arrives
        return answer

    def handler(signum, frame):
        raise Interrupted

    monkeypatch.setattr(docker.api.container.ContainerApiMixin, "create_container", create_then_signal)
    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        with pytest.raises(Interrupted):
            start(calc)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert created and created[0] not in rollout_containers()


_FULL_DISK = textwrap.dedent("""
    from swehero.agent.container import DockerConfig, DockerRuntime
    from swehero.errors import Unavailable
    try:
        DockerRuntime("swehero-test/not-here:none", limits=DockerConfig(min_free_gb=1e9))
    except Unavailable as e:
        print(e)
""")


@pytest.mark.timeout(120)
def test_free_disk_is_measured_where_the_engine_is_when_its_folder_is_not_here(calc):
    """swehero in a container that reaches the engine through its socket (docs/gpu-image.md), or an engine on
    another host, cannot see the engine's DockerRootDir: the free space before a pull is measured where the engine
    is, and agrees with the engine's disk. Here the folder is hidden by a mount namespace of the test's own."""
    import shutil

    import docker

    root = docker.from_env().info()["DockerRootDir"]
    hide = f"mount -t tmpfs swehero-test {shlex.quote(os.path.dirname(root))}"
    if os.path.dirname(root) == "/" or not shutil.which("unshare") or subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", hide], capture_output=True).returncode:
        pytest.skip("cannot hide the engine's folder in a mount namespace here (needs root and unshare)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           f"{hide} && exec {shlex.quote(sys.executable)} -c {shlex.quote(_FULL_DISK)}"],
                          capture_output=True, text=True, env=env, timeout=100)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    free = re.search(r"only ([\d.]+) GiB free", done.stdout)
    assert free, done.stdout
    assert abs(float(free[1]) - shutil.disk_usage(root).free / 2**30) < 1


@pytest.fixture(scope="module")
def srcpkg(docker_base_image, tmp_path_factory) -> dict:
    """A src-layout project whose image's editable install leaves `src/srcpkg.egg-info/` untracked."""
    from test_eval_docker import srcpkg_task

    from swehero.eval.images import build_images

    repos = tmp_path_factory.mktemp("srcpkg") / "repos"
    task = srcpkg_task(repos, "toy__srcpkg-2")
    [task["image"]] = build_images([task], repos, docker_base_image, progress=lambda _: None)
    return task


@pytest.mark.timeout(300)
def test_files_the_images_install_left_untracked_stay_out_of_the_patch(srcpkg):
    """As in the local runtime: what the image's install generated (an egg-info) and the bytecode of the agent's
    python runs are no part of the patch, which then applies to a fresh container of the image."""
    from swehero.gitdiff import diff_files

    root = "/workspace/toy__srcpkg__0.1"
    rt = DockerRuntime(srcpkg["image"], root, base_commit=srcpkg["base_commit"])
    try:
        assert rt.execute("ls src; echo '# fixed' >> src/srcpkg/__init__.py; python -c 'import srcpkg'",
                          60).output.split() == ["srcpkg", "srcpkg.egg-info"]
        patch = rt.patch(srcpkg["base_commit"])
    finally:
        rt.close()
    assert diff_files(patch) == [("src/srcpkg/__init__.py", "src/srcpkg/__init__.py")]
    fresh = DockerRuntime(srcpkg["image"], root, base_commit=srcpkg["base_commit"])
    try:
        fresh.files.write_bytes(f"{root}/fix.patch", patch.encode())
        applied = fresh.execute("git apply fix.patch && rm fix.patch && git status --porcelain", 60)
        assert applied.exit_code == 0 and applied.output.split() == ["M", "src/srcpkg/__init__.py"], applied.output
    finally:
        fresh.close()
