"""Child processes that never outlive their parent. Standard library only (the agent's attempt processes, the
training workers and the recipe's launchers all use it)."""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have Linux SIGKILL this process when its parent dies, so a killed run leaves nothing behind that keeps
    writing into its folder while the rerun resumes it (training processes under torchrun, attempt processes under
    a runner). Elsewhere a no-op: the parent's own timeouts still bound its children."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
