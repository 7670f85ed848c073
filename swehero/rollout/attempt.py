"""One attempt at one task, in a child process (`python -m swehero.rollout.attempt SPEC OUT`).

A process per attempt gives the time limit teeth: the limit starts before the checkout or container is set up, a
SIGALRM at the limit ends the agent the way a step limit does (the loop still extracts the patch), and a child that
does not stop within the grace period is killed by the parent, its process group with it. A crash in the runtime or
the policy ends only this attempt, as an `agent_error` (infrastructure, not the model). A runner that is stopped
(Ctrl-C, SIGTERM) ends its attempts at once: SIGTERM, on which the child unwinds and closes its sandbox or
container, then SIGKILL after `STOP_GRACE_S`.

The limit is the model's: what is not the episode does not make a `time_limit` of it. Reached during setup (an
image pull, a checkout, its install) it is an `agent_error` saying what setup was doing, since no episode began.
The wait for the task environment that every attempt of a repository shares, and its build, do not count (up to
twice `env.build_timeout_s`: a build another attempt is making, then its own), else the attempts waiting on one
build would spend their limits on it. Once the episode has ended, the clock is stopped: taking the patch and closing
the runtime are the infrastructure's time, and an attempt killed while closing (a busy Docker daemon) is the episode
as it saved it. The child tells the parent where it is and when its limit falls due in `CLOCK`.
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
from collections.abc import Iterator
from pathlib import Path

import swehero
from swehero.agent.loop import TimeLimit, patch_failed
from swehero.agent.run import Progress, bare_record, run_task
from swehero.agent.settings import AgentSettings
from swehero.agent.task import Task
from swehero.jsonio import write_json_atomic
from swehero.process import die_with_parent, end_group, exit_with_signal, on_sigterm

STOP_GRACE_S = 10.0
CLOCK = "clock.json"
"""Written by the attempt process into its workdir as it goes: its `stage` (setup, episode, patch: the episode
has ended and its patch is being taken, closing: the episode's record is whole and saved), what setup is `doing`,
and when its time limit is `due` (a `time.monotonic()` reading, one clock for every process on Linux). The parent
kills it `kill_grace_s` after that, and then reads what it cut short."""
TRAJECTORY = "trajectory.json"
"""The episode's record, saved after every step and once more, whole, when its patch is taken."""


def attempt(task: dict, settings: AgentSettings, source_repo: Path | None, workdir: Path,
            history_cache: Path | None = None) -> dict:
    """Run one attempt under the time limit; always returns a trajectory record whose metadata holds
    `finish_reason`, `seconds` and, when it failed, `error`."""
    start = time.monotonic()
    row = Task.from_row(task)
    with time_limit(settings, workdir / CLOCK) as clock:
        try:
            record = run_task(row, settings, workdir / TRAJECTORY, source_repo, workdir / "agent", history_cache,
                              clock)
        except TimeLimit:  # not in the episode, whose loop ends at the limit itself
            record = clock.record or _cut_short(task, settings, clock.stage, clock.doing)
        except Exception as e:  # anything else is the infrastructure's fault, and ends only this attempt
            if clock.record is None:
                record = bare_record(row, settings, "agent_error", error=f"{type(e).__name__}: {e}")
            else:  # closing the runtime failed after a whole episode: the episode stands
                record = clock.record
                print(f"closing the runtime failed after the episode: {type(e).__name__}: {e}", file=sys.stderr)
    record["metadata"]["seconds"] = round(time.monotonic() - start, 3)
    return record


@contextlib.contextmanager
def time_limit(settings: AgentSettings, file: Path | None = None) -> Iterator[_Clock]:
    """`settings.time_limit_s` on the block, kept by the `_Clock` it gives (`run_task`'s progress), which writes
    where it is to `file` when one is given; the alarm and its handler are as they were after the block."""
    before = signal.signal(signal.SIGALRM, _raise_time_limit)
    try:
        yield _Clock(settings, file)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


class _Clock(Progress):
    """The attempt's time limit (a SIGALRM, on which `time_limit`'s handler raises `TimeLimit`), kept as `run_task`
    says where it is (see the module's docstring), and written to `file`, if any, for the parent at every change."""

    def __init__(self, settings: AgentSettings, file: Path | None) -> None:
        self.file, self.shared_s = file, 2 * settings.env.build_timeout_s
        self.stage, self.doing, self.record = "setup", "starting", None
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
        self._arm(settings.time_limit_s)

    def _arm(self, seconds: float) -> None:
        self.due = time.monotonic() + seconds
        self._write()
        signal.setitimer(signal.ITIMER_REAL, seconds)

    def _write(self) -> None:
        if self.file is not None:
            write_json_atomic(self.file, {"stage": self.stage, "doing": self.doing, "due": self.due})

    def setting_up(self, doing: str) -> None:
        self.doing = doing
        self._write()

    @contextlib.contextmanager
    def shared(self):
        left = signal.getitimer(signal.ITIMER_REAL)[0]
        self._arm(left + self.shared_s)
        try:
            yield
        finally:
            still = signal.getitimer(signal.ITIMER_REAL)[0]
            if still > 0:  # 0: it went off (TimeLimit is on its way out)
                self._arm(min(left, still))  # the time past `shared_s` counts

    def episode(self) -> None:
        self.stage = "episode"
        self._write()

    def ending(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        self.stage = "patch"
        self._write()

    def ended(self, record: dict) -> None:
        self.stage, self.record = "closing", record
        self._write()


def attempt_in_child(task: dict, settings: AgentSettings, source_repo: Path | None, workdir: Path,
                     stop: threading.Event | None = None, history_cache: Path | None = None) -> dict | None:
    """`attempt` in a child process, in `workdir` (emptied first); killed `kill_grace_s` after the time limit.
    Once `stop` is set the attempt is ended and None returned: an interrupted attempt has nothing to commit. A
    child that a SIGTERM or SIGINT of its own ended without a record is interrupted too: a scheduler (`scancel`, a
    job's time limit) signals every process of the job at once, the child before the runner may have set `stop`.
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
    start = time.monotonic()
    deadline = start + settings.time_limit_s + settings.kill_grace_s
    try:
        while child.poll() is None:
            if stop is not None and stop.is_set():
                end_group(child, (signal.SIGTERM, STOP_GRACE_S))  # it unwinds, closing its sandbox or container
                return None
            if time.monotonic() > deadline:
                clock = _read_clock(workdir / CLOCK)
                if clock.get("due", 0) + settings.kill_grace_s > time.monotonic():  # its clock stood still a while
                    deadline = clock["due"] + settings.kill_grace_s
                    continue
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                return _killed(task, settings, workdir, clock, time.monotonic() - start)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=0.5)  # in slices, to notice `stop`
    except BaseException:  # Ctrl-C or SIGTERM in this thread: the child and everything it started go too
        os.killpg(child.pid, signal.SIGKILL)
        raise
    if result.exists():
        return json.loads(result.read_text())
    if child.returncode in _INTERRUPTED:
        return None
    tail = (workdir / "stderr.txt").read_text(errors="replace")[-2000:]
    return _failed(task, settings, "agent_error", f"attempt process exited with status {child.returncode}: {tail}",
                   time.monotonic() - start)


_INTERRUPTED = {code for sig in (signal.SIGTERM, signal.SIGINT) for code in (-sig, 128 + sig)}
"""The exit statuses of a child that a signal to stop ended (killed by it, or exiting as a shell reports it)."""


def _read_clock(file: Path) -> dict:
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):  # the child died before it wrote it
        return {}


def _killed(task: dict, settings: AgentSettings, workdir: Path, clock: dict, seconds: float) -> dict:
    """The record of an attempt killed `kill_grace_s` after its time limit: its episode as it saved it when that
    episode had ended (it hung taking its patch, or closing its runtime), else what it was cut short in."""
    stage, record = clock.get("stage", ""), None
    if stage in ("patch", "closing"):
        with contextlib.suppress(OSError, ValueError):
            record = json.loads((workdir / TRAJECTORY).read_text())
        # whole: the child said so, or it was killed before it could but after the episode's last save, the only one
        # that writes the patch; else the conversation stands without its patch, as when the runtime fails to give it
        if record is not None and stage == "patch" and not record.get("patch"):
            patch_failed(record["metadata"], f"taking it did not end within {settings.kill_grace_s:g}s of the time "
                                             f"limit of {settings.time_limit_s:g}s; it was killed")
    record = record or _cut_short(task, settings, stage, clock.get("doing", ""), killed=True)
    record["metadata"]["seconds"] = round(seconds, 3)
    return record


def _cut_short(task: dict, settings: AgentSettings, stage: str, doing: str, killed: bool = False) -> dict:
    """The record of an attempt whose time limit ended it outside its episode's loop (`stage`, see `CLOCK`), or that
    was `killed` after the grace period."""
    limit = f"time limit of {settings.time_limit_s:g}s"
    after = f"; it did not stop within {settings.kill_grace_s:g}s and was killed" if killed else ""
    if stage == "setup":  # no episode began: not the model's outcome
        return _failed(task, settings, "agent_error", f"{limit} reached during setup ({doing}){after}")
    if stage == "patch" and killed:  # the episode had ended, and its trajectory is not readable
        return _failed(task, settings, "agent_error", f"taking the patch did not end within "
                                                      f"{settings.kill_grace_s:g}s of the {limit}; it was killed")
    if killed:
        return _failed(task, settings, "time_limit", f"killed {settings.kill_grace_s:g}s after the {limit}")
    return _failed(task, settings, "time_limit", f"{limit} reached")


def _failed(task: dict, settings: AgentSettings, finish_reason: str, error: str, seconds: float = 0.0) -> dict:
    record = bare_record(Task.from_row(task), settings, finish_reason, error=error)
    record["metadata"]["seconds"] = round(seconds, 3)
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
