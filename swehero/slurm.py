"""Slurm as a login node offers it: submit a batch script (`sbatch`), ask which jobs of a script are still in
the queue (`squeue`). The command-line tools, not Slurm's REST API, which many sites do not run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from swehero.errors import Unavailable


def directive_value(value: str) -> str:
    """`value` double-quoted for an `#SBATCH` line, which sbatch splits at blanks and cuts at an unquoted `#`."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


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


def jobs_running(script: Path) -> list[tuple[str, str]]:
    """(job id, state) of each job Slurm still queues or runs (squeue's default: pending, running, completing)
    whose batch script is `script`, whoever submitted it and however: squeue gives the script's absolute path."""
    squeue = _tool("squeue", f"cannot tell whether a Slurm job of {script} is still queued or running; run this on "
                             "a node of the cluster")
    # --all: without it squeue leaves out jobs in hidden partitions, or partitions of another group, and a job
    # submitted to one would not be seen
    done = subprocess.run([squeue, "--all", "--noheader", "--format=%i|%T|%o"], capture_output=True, text=True)
    if done.returncode != 0:
        raise Unavailable(f"squeue failed (status {done.returncode}): {done.stderr.strip()}")
    jobs = [line.split("|", 2) for line in done.stdout.splitlines() if line.count("|") >= 2]
    return [(job, state) for job, state, command in jobs if os.path.realpath(command) == os.path.realpath(script)]
