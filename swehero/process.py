"""Child processes that never outlive their parent, and commands that stop cleanly on SIGTERM. Standard library only
(the agent's attempt processes, the training workers, the recipe's launchers and the long-running commands use it;
run as a script, it is the guard of a process group, see `start_group`)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator

PR_SET_PDEATHSIG = 1
MARKS = "SWEHERO_GROUP_MARKS"
"""In a process's environment: the marks of the process groups (see `start_group`) it descends from,
space-separated. A descendant that left its group (a new session: torchrun's workers) still carries them."""

_recorders: list[Callable[[dict], None]] = []
_recording = threading.Lock()


def die_with_parent(forks: bool = False) -> None:
    """Have Linux SIGKILL this process when its parent dies, so a killed run leaves nothing behind that keeps
    writing into its folder while the rerun resumes it (training processes under torchrun, attempt processes under
    a runner). With `forks`, also each process it forks from now on without exec (multiprocessing's "fork":
    Megatron's checkpoint writers), when the thread that forked it dies: the kernel clears the setting in a forked
    child. Elsewhere a no-op: the parent's own timeouts still bound its children."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if forks:
            os.register_at_fork(before=_note_forking_parent, after_in_child=_die_with_forking_parent)


_forking_parent = 0


def _note_forking_parent() -> None:
    global _forking_parent
    _forking_parent = os.getpid()


def _die_with_forking_parent() -> None:
    die_with_parent()
    if os.getppid() != _forking_parent:  # it died before the line above, which cannot take effect any more
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def on_sigterm(handler):
    """Handle SIGTERM with `handler` inside the block (so `kill` unwinds like Ctrl-C and cleanup runs), then put the
    previous handler back: a command run in the caller's own process (click's CliRunner) must not leave its handler
    to the caller and the workers it forks."""
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_with_signal(signum, frame) -> None:
    """A SIGTERM handler (see `on_sigterm`) that unwinds the stack as Ctrl-C does and exits with the shell's status
    for the signal, 128 + its number."""
    sys.exit(128 + signum)


def start_group(argv: list[str] | str, **popen) -> subprocess.Popen:
    """`subprocess.Popen(argv, **popen)` in a new session, so that a signal reaches its whole process group (see
    `end_group`), which never outlives this process: a guard process SIGKILLs what is left of it once this one has
    died, however it died (the OOM killer, a scheduler's kill -9), where `die_with_parent` would reach the command
    alone and not what it started (a shell's pipeline, vLLM's engine). Its processes carry a new mark in their
    environment (MARKS), which `recording_groups` hands on, so that a rerun can end them should the guard be gone."""
    mark = uuid.uuid4().hex
    env = dict(os.environ if popen.get("env") is None else popen["env"])
    env[MARKS] = " ".join(filter(None, [env.get(MARKS), mark]))
    # The guard first: it then covers the group from its first process on, even if this one dies in between.
    guard = subprocess.Popen([sys.executable, "-I", "-S", __file__, mark, str(os.getpid())], stdin=subprocess.PIPE,
                             text=True, start_new_session=True)
    threading.Thread(target=guard.wait, daemon=True).start()  # reaps it once the group has ended
    # Closed unwritten if the command cannot start: the guard then ends at once. A guard that failed leaves the group
    # to the rerun (see `recording_groups`).
    with contextlib.suppress(BrokenPipeError), guard.stdin:
        child = subprocess.Popen(argv, **{**popen, "env": env}, start_new_session=True)
        guard.stdin.write(f"{child.pid}\n")
    group = {"host": socket.gethostname(), "pgid": child.pid, "mark": mark}
    with _recording:
        for record in _recorders:
            record(group)
    return child


@contextlib.contextmanager
def recording_groups(record: Callable[[dict], None]) -> Iterator[None]:
    """Within the block, `record(group)` for each process group `start_group` starts, from any thread, one call at
    a time: `group` is what `end_left_behind` needs to end it later ({"host", "pgid", "mark"})."""
    _recorders.append(record)
    try:
        yield
    finally:
        _recorders.remove(record)


def end_left_behind(groups: list[dict], wait_s: float = 10.0) -> None:
    """SIGKILL what is left on this host of process groups `start_group` started (as `recording_groups` handed them
    on), and wait up to `wait_s` until it has died, so that it writes nothing more: every process that carries the
    mark of one, and the group itself while a process of it does. A reused pid lacks the mark, so an unrelated
    process is never hit."""
    here = {group["mark"]: group["pgid"] for group in groups if group.get("host") == socket.gethostname()}
    deadline = time.monotonic() + wait_s
    while here and (left := _carrying(here.keys())) and time.monotonic() < deadline:
        for pid, marks in left.items():
            with contextlib.suppress(ProcessLookupError):
                if (pgid := os.getpgid(pid)) in {here[mark] for mark in marks}:
                    os.killpg(pgid, signal.SIGKILL)  # also those of its processes that dropped the mark
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _carrying(marks: Iterable[str]) -> dict[int, list[str]]:
    """The live processes (a zombie shows no environment) whose environment carries any of `marks`, with those it
    carries: this user's only, as others' environments cannot be read."""
    wanted, found = set(marks), {}
    with contextlib.suppress(OSError):  # no /proc: not Linux
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                if carried := wanted.intersection(_marks_of(entry.name)):
                    found[int(entry.name)] = sorted(carried)
    return found


def _marks_of(pid: str) -> list[str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            variables = environ.read().split(b"\0")
    except OSError:  # gone, or another user's
        return []
    prefix = f"{MARKS}=".encode()
    return next((v[len(prefix):].decode(errors="replace").split() for v in variables if v.startswith(prefix)), [])


def _guard(mark: str, parent: int, every_s: float = 0.2) -> None:
    """A process group's guard (see `start_group`), a child of the process that starts the group, `parent`: told
    the group's id on stdin, it ends with the group, or ends what is left of it once `parent` has died."""
    told = sys.stdin.readline()  # nothing: the command did not start, or `parent` died before it could tell
    pgid = int(told) if told.strip() else None
    while pgid and os.getppid() == parent:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        except PermissionError:  # a process of it that changed user: the group lives on
            pass
        time.sleep(every_s)
    end_left_behind([{"host": socket.gethostname(), "pgid": pgid, "mark": mark}])


def end_group(child: subprocess.Popen, *steps: tuple[int, float]) -> None:
    """For each (signal, seconds) step while a process of the child's group runs: the signal to the group (the child
    was started with `start_new_session`), then up to that long for all of it to exit. SIGKILL if it outlives them
    all. Returns once the whole group has ended, not only the child: what outlives a server's API process (its
    engine and GPU workers) holds the memory the next server needs."""
    for sig, seconds in (*steps, (signal.SIGKILL, 10.0)):
        if child.poll() is not None and not _runs_in_group(child.pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, sig)
        deadline = time.monotonic() + seconds
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=seconds)
        _wait_until_ended(child.pid, max(deadline - time.monotonic(), 0.0))


def run_group(argv: list[str], grace_s: float = 10.0, **popen) -> int:
    """Run `argv` in its own process group (see `start_group`) and return its exit status. If this process is stopped
    meanwhile (Ctrl-C, or SIGTERM unwinding it, see `on_sigterm`), the whole group gets SIGTERM, and SIGKILL
    `grace_s` later: a shell command's own children go with it, where `subprocess.run` would kill the shell alone
    and leave them running."""
    child = start_group(argv, **popen)
    try:
        return child.wait()
    except BaseException:
        end_group(child, (signal.SIGTERM, grace_s))
        raise


_captured: set[int] = set()
"""Process groups of the `run_captured` commands running now, in any thread (see `end_captured`)."""
_ended: set[int] = set()
"""Those of them `end_captured` killed."""


class Ended(Exception):
    """A `run_captured` command whose group `end_captured` killed: it did not end by itself."""


def run_captured(argv: list[str] | str, timeout_s: float | None = None, **popen) -> subprocess.CompletedProcess:
    """`subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)` in its own process group: at the
    timeout the whole group is killed, the command's children too (`subprocess.run` kills the command alone and
    leaves them running), and has died before it raises; the `TimeoutExpired` carries, as text, the output written
    until then (`subprocess.run` drops it, or hands it over as bytes). Interrupted, it ends the group; run in a
    worker thread, which no signal interrupts, the caller ends it with `end_captured`."""
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                             start_new_session=True, **popen)
    _captured.add(child.pid)
    try:
        stdout, stderr = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        stdout, stderr = _rest_of_output(child)
        _wait_until_ended(child.pid)
        raise subprocess.TimeoutExpired(argv, timeout_s, stdout, stderr) from None
    except BaseException:  # interrupted: the group must not outlive the caller
        end_group(child)
        raise
    finally:
        _captured.discard(child.pid)
        ended = child.pid in _ended
        _ended.discard(child.pid)  # its pid may be another command's later
    if ended:
        raise Ended(f"stopped while running: {argv if isinstance(argv, str) else shlex.join(argv)}")
    return subprocess.CompletedProcess(argv, child.returncode, stdout, stderr)


def end_captured() -> int:
    """Kill the process group of every `run_captured` command running now, in whichever thread (a stop signal
    reaches the main thread alone, and the ones running them would wait for their commands to end: tests, up to
    their timeout); returns how many. Each raises `Ended` in its thread."""
    groups = list(_captured)
    for group in groups:
        _ended.add(group)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    return len(groups)


def _wait_until_ended(pgid: int, wait_s: float = 10.0) -> None:
    """Wait up to `wait_s` until no process of group `pgid` runs any more. A process dies some time after its SIGKILL
    (one that holds much memory first frees it), so without the wait a caller could still see it, and what it writes,
    after the group was killed."""
    deadline = time.monotonic() + wait_s
    while _runs_in_group(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)


def _runs_in_group(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs, read from /proc: a zombie has ended, though `os.killpg(pgid, 0)`
    still finds it until its parent (init, for an orphan) reaps it."""
    with contextlib.suppress(OSError):  # no /proc: not Linux
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    with open(f"/proc/{entry.name}/stat", "rb") as stat:
                        state, _parent, group = stat.read().rpartition(b")")[2].split()[:3]
                except (OSError, ValueError):  # it ended meanwhile
                    continue
                if int(group) == pgid and state not in (b"Z", b"X"):
                    return True
    return False


def _rest_of_output(child: subprocess.Popen, wait_s: float = 10.0) -> tuple[str, str]:
    """All a killed child wrote; what had arrived after `wait_s` when a process that left its group holds the pipes
    open."""
    try:
        return child.communicate(timeout=wait_s)
    except subprocess.TimeoutExpired as still_open:
        child.wait()
        return tuple((text or b"").decode(errors="replace") for text in (still_open.stdout, still_open.stderr))


if __name__ == "__main__":  # the guard of a process group, see `start_group`
    _guard(sys.argv[1], int(sys.argv[2]))
