"""Slurm as a login node offers it: submit a batch script (`sbatch`), ask whether a job is still in the queue
(`squeue`). The command-line tools, not Slurm's REST API, which many sites do not run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from swehero.errors import Unavailable

# squeue can still list a job for a few minutes after it ended (MinJobAge), in one of these states.
_ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
          "TIMEOUT"}


def _tool(name: str, why: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise Unavailable(f"{name} is not on PATH: {why}")
    return path


def submit(script: Path) -> str:
    """Submit `script`; returns the job id."""
    sbatch = _tool("sbatch", f"submit {script} from a node of the cluster")
    done = subprocess.run([sbatch, "--parsable", str(script)], capture_output=True, text=True)
    if done.returncode != 0:
        raise Unavailable(f"sbatch {script} failed (status {done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip().split(";")[0]  # "ID" or "ID;CLUSTER"


def job_state(job_id: str) -> str | None:
    """The state of a job Slurm still queues or runs (PENDING, RUNNING, ...; an array job's first such task's);
    None once it has ended."""
    squeue = _tool("squeue", f"cannot tell whether Slurm job {job_id} has ended; run this on a node of the cluster")
    done = subprocess.run([squeue, "--noheader", "--jobs", job_id, "--format", "%T"], capture_output=True, text=True)
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:  # ended long enough ago that the controller forgot it
            return None
        raise Unavailable(f"squeue --jobs {job_id} failed (status {done.returncode}): {done.stderr.strip()}")
    return next((state for state in done.stdout.split() if state not in _ENDED), None)
