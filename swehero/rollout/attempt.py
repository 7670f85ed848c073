"""One attempt at one task, in a child process (`python -m swehero.rollout.attempt SPEC OUT`).

A process per attempt gives the time limit teeth: the limit starts before the checkout or container is set up, a
SIGALRM at the limit ends the agent the way a step limit does (the loop still extracts the patch), and a child that
does not stop within the grace period is killed by the parent, its process group with it. A crash in the runtime or
the policy ends only this attempt, as an `agent_error` (infrastructure, not the model). A runner that is stopped
(Ctrl-C, SIGTERM) ends its attempts at once: SIGTERM, on which the child unwinds and closes its sandbox or
container, then SIGKILL after `STOP_GRACE_S`.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import swehero
from swehero.agent.loop import TimeLimit
from swehero.agent.run import bare_record, run_task
from swehero.agent.settings import AgentSettings
from swehero.agent.task import Task
from swehero.jsonio import write_json_atomic
from swehero.process import die_with_parent, end_group, exit_with_signal, on_sigterm

STOP_GRACE_S = 10.0


def attempt(task: dict, settings: AgentSettings, source_repo: Path | None, workdir: Path,
            history_cache: Path | None = None) -> dict:
    """Run one attempt under the time limit; always returns a trajectory record whose metadata holds
    `finish_reason`, `seconds` and, when it failed, `error`."""
    start = time.monotonic()
    row = Task.from_row(task)
    signal.signal(signal.SIGALRM, _raise_time_limit)
    signal.setitimer(signal.ITIMER_REAL, settings.time_limit_s)
    try:
        record = run_task(row, settings, workdir / "trajectory.json", source_repo, workdir / "agent", history_cache)
    except TimeLimit:  # reached before the episode began (a slow checkout or image pull)
        record = bare_record(row, settings, "time_limit", error=f"time limit of {settings.time_limit_s:g}s reached")
    except Exception as e:  # anything else is the infrastructure's fault, and ends only this attempt
        record = bare_record(row, settings, "agent_error", error=f"{type(e).__name__}: {e}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    record["metadata"]["seconds"] = round(time.monotonic() - start, 3)
    return record


def attempt_in_child(task: dict, settings: AgentSettings, source_repo: Path | None, workdir: Path,
                     stop: threading.Event | None = None, history_cache: Path | None = None) -> dict | None:
    """`attempt` in a child process, in `workdir` (emptied first); killed `kill_grace_s` after the time limit.
    Once `stop` is set the attempt is ended and None returned: an interrupted attempt has nothing to commit.
    `history_cache` is shared with the task's other attempts (see `LocalRuntime.for_task`)."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    spec, result = workdir / "spec.pickle", workdir / "record.json"
    # pickle: an internal hand-over between two processes of the same swehero, settings dataclasses included
    spec.write_bytes(pickle.dumps((task, settings, source_repo, workdir, history_cache)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(swehero.__file__).parents[1]),
                                                                       os.environ.get("PYTHONPATH")]))}
    with open(workdir / "stderr.txt", "wb") as stderr:
        child = subprocess.Popen([sys.executable, "-m", "swehero.rollout.attempt", str(spec), str(result),
                                  str(os.getpid())], env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                 start_new_session=True)
    deadline = time.monotonic() + settings.time_limit_s + settings.kill_grace_s
    try:
        while child.poll() is None:
            if stop is not None and stop.is_set():
                end_group(child, (signal.SIGTERM, STOP_GRACE_S))  # it unwinds, closing its sandbox or container
                return None
            if time.monotonic() > deadline:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                return _failed(task, settings, "time_limit", f"killed {settings.kill_grace_s:g}s after the "
                                                             f"{settings.time_limit_s:g}s time limit")
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=0.5)  # in slices, to notice `stop`
    except BaseException:  # Ctrl-C or SIGTERM in this thread: the child and everything it started go too
        os.killpg(child.pid, signal.SIGKILL)
        raise
    if result.exists():
        return json.loads(result.read_text())
    tail = (workdir / "stderr.txt").read_text(errors="replace")[-2000:]
    return _failed(task, settings, "agent_error", f"attempt process exited with status {child.returncode}: {tail}")


def _failed(task: dict, settings: AgentSettings, finish_reason: str, error: str) -> dict:
    record = bare_record(Task.from_row(task), settings, finish_reason, error=error)
    record["metadata"]["seconds"] = settings.time_limit_s if finish_reason == "time_limit" else 0.0
    return record


def _raise_time_limit(signum, frame) -> None:
    raise TimeLimit()


def main(spec_file: str, out_file: str, runner_pid: str) -> None:
    die_with_parent()
    if os.getppid() != int(runner_pid):  # the runner died before the line above (during this module's imports)
        sys.exit("the runner that started this attempt is gone")
    task, settings, source_repo, workdir, history_cache = pickle.loads(Path(spec_file).read_bytes())
    with on_sigterm(exit_with_signal):  # unwinds: the runtime is closed, nothing written
        write_json_atomic(Path(out_file), attempt(task, settings, source_repo, workdir, history_cache))


if __name__ == "__main__":
    main(*sys.argv[1:4])
