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


def end_group(child: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM to the child's process group (it was started with `start_new_session`), on which a well-behaved
    program cleans up; SIGKILL to the group if the child has not exited `grace_s` later."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def run_group(argv: list[str], grace_s: float = 10.0, **popen) -> int:
    """Run `argv` in its own process group and return its exit status. If this process is stopped meanwhile (Ctrl-C,
    or SIGTERM unwinding it, see `on_sigterm`), the whole group is ended (`end_group`): a shell command's own
    children go with it, where `subprocess.run` would kill the shell alone and leave them running."""
    child = subprocess.Popen(argv, start_new_session=True, **popen)
    try:
        return child.wait()
    except BaseException:
        end_group(child, grace_s)
        raise
