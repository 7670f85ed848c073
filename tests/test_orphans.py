"""A run killed outright (SIGKILL: the OOM killer, a scheduler after its grace period) leaves nothing running: not a
command stage's pipeline, not the model server, not what a training rank forked; and a rerun ends whatever was left
before it empties the stage's folder. Real processes throughout."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[1]


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for whoever adopted it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def still_alive(pids: list[int], seconds: float = 5.0) -> list[int]:
    """The pids still alive after up to `seconds`."""
    deadline = time.monotonic() + seconds
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 60.0) -> str:
    """The text `path` holds once written (by a process `proc` started)."""
    deadline = time.monotonic() + seconds
    while not (path.exists() and path.read_text().endswith("\n")):
        assert time.monotonic() < deadline, f"{path} never written"
        assert proc.poll() is None, f"exited with status {proc.returncode} before writing {path}"
        time.sleep(0.05)
    return path.read_text()


def kill_all(pids: list[int]) -> None:
    """Cleanup after a failed check: nothing of a test may outlive it."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def env_with_swehero(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def start_python(code: str, **popen) -> subprocess.Popen:
    """`code` with this checkout's swehero, in a new session: SIGKILLing it reaches nothing else."""
    return subprocess.Popen([PYTHON, "-c", textwrap.dedent(code)], start_new_session=True,
                            **{"env": env_with_swehero(), **popen})


# ------------------------------------------------------------------------------------------ the launcher


def test_a_group_goes_with_the_process_that_started_it_children_and_all(tmp_path):
    pids = tmp_path / "pids"
    starter = start_python(f"""
        import time
        from swehero.process import start_group
        start_group(["bash", "-c", "sleep 60 & echo $! > {pids}; sleep 60 | cat"])
        time.sleep(60)
    """)
    background = []
    try:
        background = [int(wait_for(pids, starter))]
        starter.kill()
        starter.wait()
        assert not still_alive(background), "a background job outlived the SIGKILLed process that started its group"
    finally:
        kill_all(background)


def test_what_was_left_behind_is_ended_and_nothing_else():
    from swehero.process import end_left_behind, recording_groups, start_group  # here: the other tests run without

    unrelated = subprocess.Popen(["sleep", "30"], start_new_session=True)  # as a pid reused since the kill would be
    groups = []
    with recording_groups(groups.append):
        ours = start_group(["bash", "-c", "env -u SWEHERO_GROUP_MARKS sleep 30 & wait"])  # its job drops the mark
    ours_pids = [ours.pid]
    try:
        deadline = time.monotonic() + 5
        while len(ours_pids) < 2 and time.monotonic() < deadline:  # bash starts its job
            ours_pids = [ours.pid, *map(int, Path(f"/proc/{ours.pid}/task/{ours.pid}/children").read_text().split())]
            time.sleep(0.05)
        assert len(ours_pids) == 2 and groups[0]["pgid"] == ours.pid
        end_left_behind([{**groups[0], "pgid": unrelated.pid, "mark": "not-its-mark"},
                         {**groups[0], "host": "another-host"}])
        assert alive(unrelated.pid) and all(map(alive, ours_pids))
        end_left_behind(groups)
        assert ours.wait(timeout=5) == -signal.SIGKILL
        assert not still_alive(ours_pids) and alive(unrelated.pid)
    finally:
        kill_all([unrelated.pid, *ours_pids])
        unrelated.wait()


@pytest.mark.slow  # subprocesses or a server: the fast tier stays under 2 minutes
def test_a_command_past_its_timeout_has_ended_children_and_all_when_it_returns(tmp_path):
    """`run_captured` (the local grader's tests) kills the command's group at the timeout and returns once every
    process of it has died: one that holds much memory is still running for a while after its SIGKILL, and the
    caller must not see it so (a CI run under load saw a test's `sleep` alive after its grading had returned)."""
    from swehero.process import run_captured

    pids = tmp_path / "pids"
    pids.touch()
    holds = f"import os, time\nx = b'1' * (1 << 28)\nopen({str(pids)!r}, 'a').write('%d\\n' % os.getpid())\n" \
            "time.sleep(600)"
    # The children write elsewhere than the captured output: one holding that pipe open would be waited for by the
    # read of the output's end, which would hide the wait under test. The timeout comes once all three hold memory.
    script = f'for i in 1 2 3; do {PYTHON} -c "$0" >/dev/null 2>&1 & done; ' \
             f'until [ "$(wc -l < {pids})" = 3 ]; do sleep 0.1; done; echo ready; sleep 600'
    with pytest.raises(subprocess.TimeoutExpired) as stopped:
        run_captured(["bash", "-c", script, holds], timeout_s=15)
    children = [int(pid) for pid in pids.read_text().split()]
    try:
        assert stopped.value.stdout.strip() == "ready" and len(children) == 3
        assert not [pid for pid in children if alive(pid)]
    finally:
        kill_all(children)


@pytest.mark.slow  # subprocesses or a server: the fast tier stays under 2 minutes
def test_stopping_a_group_ends_what_outlives_its_leader(tmp_path):
    """A server's API process may exit at SIGTERM before its workers do, or leave one that ignores it: stopping the
    group returns once all of it has ended, not when its leader has."""
    from swehero.process import end_group, start_group

    pids = tmp_path / "pids"
    leader = start_group(["bash", "-c", f'(trap "" TERM; echo $BASHPID > {pids}; exec sleep 600) & '
                                        'trap "exit 0" TERM; while :; do sleep 0.1; done'])
    deadline = time.monotonic() + 30
    while not (pids.exists() and pids.read_text().strip()):
        assert time.monotonic() < deadline and leader.poll() is None
        time.sleep(0.05)
    worker = int(pids.read_text())
    try:
        end_group(leader, (signal.SIGTERM, 5.0))
        assert leader.returncode == 0  # the leader ended at SIGTERM, as asked
        assert not alive(worker)  # what ignored it ended at the SIGKILL that follows
    finally:
        kill_all([worker])


def test_what_a_training_rank_forks_dies_with_it(tmp_path):
    # The worker module as a process a rank spawns runs it (`__mp_main__`); that process forks Megatron's checkpoint
    # writers, as a rank itself does with async_save.
    pids = tmp_path / "pids"
    rank = start_python(f"""
        import os, runpy, time
        runpy.run_module("swehero.train.worker", run_name="__mp_main__")
        writer = os.fork()
        if writer == 0:
            time.sleep(60)
            os._exit(0)
        open({str(pids)!r}, "w").write(f"{{writer}}\\n")
        time.sleep(60)
    """)
    writer = []
    try:
        writer = [int(wait_for(pids, rank))]
        rank.kill()
        rank.wait()
        assert not still_alive(writer), "a process the rank forked outlived it"
    finally:
        kill_all(writer)


# ------------------------------------------------------------------------------------------ the model server


FAKE_VLLM = """\
#!{python}
# Stands in for vLLM's python: lists --served-model-name at /v1/models on --port, and starts a process as vLLM
# starts its engine core.
import http.server, json, subprocess, sys
engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
open({pids!r}, "w").write(f"{{engine.pid}}\\n")
models = json.dumps({{"data": [{{"id": sys.argv[sys.argv.index("--served-model-name") + 1]}}]}}).encode()
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(models)
    def log_message(self, *args):
        pass
port = int(sys.argv[sys.argv.index("--port") + 1])
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
@pytest.mark.timeout(60)
def test_a_model_server_goes_with_the_process_that_started_it(tmp_path):
    # vLLM takes a minute to start on CPU, and VLLMServer launches it as any command: a stand-in serves here.
    pids, fake = tmp_path / "engine.pid", tmp_path / "fake-vllm"
    fake.write_text(FAKE_VLLM.format(python=PYTHON, pids=str(pids)))
    fake.chmod(0o755)
    starter = start_python(f"""
        import time
        from pathlib import Path
        from swehero.serve.server import ServeConfig, VLLMServer
        server = VLLMServer(ServeConfig(model="m", parser="hermes"), Path({str(tmp_path / 'vllm.log')!r})).start()
        print(server.process.pid, flush=True)
        time.sleep(60)
    """, env=env_with_swehero(SWEHERO_VLLM_PYTHON=str(fake)), stdout=subprocess.PIPE, text=True)
    server = []
    try:
        line = starter.stdout.readline()
        assert line.strip(), (tmp_path / "vllm.log").read_text()
        server = [int(line), int(wait_for(pids, starter))]
        starter.kill()
        starter.wait()
        assert not still_alive(server), "the server or its engine outlived the SIGKILLed process that started it"
    finally:
        kill_all(server)


# ------------------------------------------------------------------------------------------ a recipe run


RECIPE = """\
name: orphans
run_dir: {run}
stages:
  - name: slow
    kind: command
    run: $SWEHERO_PYTHON {writer} && cp pids.txt out.txt
    outputs: [out.txt]
"""

# Appends its pid to the stage's pids.txt for as many seconds as the file `seconds` says, 10 times a second.
WRITER = """\
import os, time
folder, end = os.environ["SWEHERO_STAGE_DIR"], time.monotonic() + float(open({seconds!r}).read())
while True:
    with open(os.path.join(folder, "pids.txt"), "a") as out:
        out.write(f"{{os.getpid()}}\\n")
    if time.monotonic() > end:
        break
    time.sleep(0.1)
"""


def recipe(tmp_path: Path, seconds: float) -> Path:
    (tmp_path / "seconds").write_text(str(seconds))
    (tmp_path / "writer.py").write_text(WRITER.format(seconds=str(tmp_path / "seconds")))
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(run=tmp_path / "run", writer=tmp_path / "writer.py"))
    return path


def start_recipe(path: Path) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, "-m", "swehero", "recipe", "run", str(path)], env=env_with_swehero(),
                            stdout=subprocess.DEVNULL, start_new_session=True)


def writer_started(tmp_path: Path, run: subprocess.Popen) -> int:
    return int(wait_for(tmp_path / "run" / "slow" / "pids.txt", run).split()[0])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_command_stage_killed_outright_leaves_nothing_running(tmp_path):
    run = start_recipe(recipe(tmp_path, 60))
    writer = []
    try:
        writer = [writer_started(tmp_path, run)]  # the shell's child: `a && b` keeps the shell above it
        run.kill()
        run.wait()
        assert not still_alive(writer), "the command's child outlived the SIGKILLed recipe"
    finally:
        kill_all([run.pid, *writer])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_rerun_ends_what_a_killed_attempt_left_running_before_it_empties_the_folder(tmp_path):
    # The recipe and the guards of its process groups killed at once: the second line of defence alone.
    path = recipe(tmp_path, 60)
    run = start_recipe(path)
    writer = []
    try:
        writer = [writer_started(tmp_path, run)]
        guards = [int(p) for p in Path(f"/proc/{run.pid}/task/{run.pid}/children").read_text().split()
                  if b"swehero/process.py" in Path(f"/proc/{p}/cmdline").read_bytes()]
        kill_all([run.pid, *guards])
        run.wait()
        assert alive(writer[0])
        (tmp_path / "seconds").write_text("0.5")
        subprocess.run([PYTHON, "-m", "swehero", "recipe", "run", str(path)], env=env_with_swehero(), check=True,
                       stdout=subprocess.DEVNULL, timeout=60)
        assert not alive(writer[0]), "the killed attempt's command still runs after the rerun"
        written = set((tmp_path / "run" / "slow" / "out.txt").read_text().split())
        assert len(written) == 1 and str(writer[0]) not in written, "the stage's output mixes two attempts"
    finally:
        kill_all([run.pid, *writer])
