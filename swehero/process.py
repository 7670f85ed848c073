"""Child processes that never outlive their parent, and commands that stop cleanly on SIGTERM. Standard library only
(the agent's attempt processes, the training workers, the recipe's launchers and the long-running commands use it)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have Linux SIGKILL this process when its parent dies, so a killed run leaves nothing behind that keeps
    writing into its folder while the rerun resumes it (training processes under torchrun, attempt processes under
    a runner). Elsewhere a no-op: the parent's own timeouts still bound its children."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


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


def end_group(child: subprocess.Popen, *steps: tuple[int, float]) -> None:
    """For each (signal, seconds) step while the child runs: the signal to its process group (it was started with
    `start_new_session`), then up to that long for it to exit. SIGKILL if it outlives them all."""
    for sig, seconds in (*steps, (signal.SIGKILL, 10.0)):
        if child.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=seconds)


def run_group(argv: list[str], grace_s: float = 10.0, **popen) -> int:
    """Run `argv` in its own process group and return its exit status. If this process is stopped meanwhile (Ctrl-C,
    or SIGTERM unwinding it, see `on_sigterm`), the whole group gets SIGTERM, and SIGKILL `grace_s` later: a shell
    command's own children go with it, where `subprocess.run` would kill the shell alone and leave them running."""
    child = subprocess.Popen(argv, start_new_session=True, **popen)
    try:
        return child.wait()
    except BaseException:
        end_group(child, (signal.SIGTERM, grace_s))
        raise


def run_captured(argv: list[str] | str, timeout_s: float | None = None, **popen) -> subprocess.CompletedProcess:
    """`subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)` in its own process group: at the
    timeout the whole group is killed, the command's children too (`subprocess.run` kills the command alone and
    leaves them running), and the `TimeoutExpired` carries, as text, the output written until then (`subprocess.run`
    drops it, or hands it over as bytes)."""
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                             start_new_session=True, **popen)
    try:
        stdout, stderr = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        stdout, stderr = _rest_of_output(child)
        raise subprocess.TimeoutExpired(argv, timeout_s, stdout, stderr) from None
    except BaseException:  # interrupted: the group must not outlive the caller
        end_group(child)
        raise
    return subprocess.CompletedProcess(argv, child.returncode, stdout, stderr)


def _rest_of_output(child: subprocess.Popen, wait_s: float = 10.0) -> tuple[str, str]:
    """All a killed child wrote; what had arrived after `wait_s` when a process that left its group holds the pipes
    open."""
    try:
        return child.communicate(timeout=wait_s)
    except subprocess.TimeoutExpired as still_open:
        child.wait()
        return tuple((text or b"").decode(errors="replace") for text in (still_open.stdout, still_open.stderr))
