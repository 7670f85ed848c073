"""Launching training: torchrun on one node, or an sbatch script for Slurm (one torchrun per node, c10d rendezvous
on the first node). The worker (`python -m swehero.train.worker STAGE_DIR`) reads everything else from
`STAGE_DIR/train_job.json`, so both launchers start the same thing.

Both start torchrun through this module (`python -m swehero.train.launch TORCHRUN_ARGS`), which sets what every
worker needs before CUDA starts and keeps torchrun out of the way of a stop request: SIGUSR1 asks the workers to
save at the next step boundary and exit (`swehero.train.worker.STOP_SIGNALS`). torchrun would die of it (the
signal's default action), taking its workers with it; here it hands the signal on to its workers instead, so that
signalling torchrun alone (`recipe run` stopped, a Slurm site that signals only the task) reaches them too."""

from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path

from swehero.slurm import directive_value

RDZV_PORT = 29500
WORKER_ENV = {"CUDA_DEVICE_MAX_CONNECTIONS": "1"}  # Megatron overlaps TP communication with compute only with 1
STOP_SIGNAL = signal.SIGUSR1
STOP_MARGIN_S = 600
"""How long before a Slurm job's time limit its workers are asked to stop: time for a step and a checkpoint."""


def launcher(python: str) -> list[str]:
    """torchrun as `python` runs it: never a `torchrun` found on PATH, which may be missing on a node or another
    environment's."""
    return [python, "-m", "swehero.train.launch"]


def torchrun_command(stage_dir: Path, nproc: int) -> list[str]:
    return [*launcher(sys.executable), "--standalone", f"--nproc-per-node={nproc}",
            "-m", "swehero.train.worker", str(stage_dir)]


SYSTEM_FOLDERS = [Path(p) for p in ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/sbin",
                                      "/sys", "/usr")]
"""The image's own: a link into one (a venv's `bin/python`) is read there inside the container, not mounted over it."""


def container_mounts(paths: list[Path]) -> list[Path]:
    """The host folders a container must mount, each at the same path, so that every path in `paths` and
    everything under it reads as on the host: each path (its folder, for a file) and the real location of each
    symlink in it (a download stage's outputs link into the hub cache; a hub snapshot's files into its
    `blobs/`), outermost folders only, none in `SYSTEM_FOLDERS`. Raises FileNotFoundError naming a path that does
    not exist (yet)."""
    needed: list[Path] = []

    def add(path: Path, why: str) -> None:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist{why}")
        folder = path if path.is_dir() else path.parent
        if not (folder == Path("/") or any(folder.is_relative_to(system) for system in SYSTEM_FOLDERS)):
            needed.append(folder)

    for path in map(Path, paths):
        path = Path(os.path.abspath(path))
        add(path, "")
        if path.is_symlink():
            add(path.resolve(), f" (the target of {path})")
        for root, dirs, files in os.walk(path):  # stat only: a 65 GB checkpoint is a few hundred entries
            for name in dirs + files:
                entry = Path(root, name)
                if entry.is_symlink():
                    add(entry.resolve(), f" (the target of {entry})")
    outermost: list[Path] = []
    for folder in sorted(set(needed), key=lambda p: len(p.parts)):
        if not any(folder.is_relative_to(outer) for outer in outermost):
            outermost.append(folder)
    return sorted(outermost)


LAYOUT_OPTIONS = {"--nodes", "-N", "--ntasks", "-n", "--ntasks-per-node", "--gpus", "-G", "--gpus-per-node",
                  "--gpus-per-task"}
"""sbatch options that set a job's layout, which the stage's `nodes` and `gpus_per_node` set (as does `--gres=gpu`)."""


def layout_options(options: list[str]) -> list[str]:
    """The `--sbatch` options that would set the job's layout: sbatch takes an option's last value, so the job would
    get another layout than its srun and torchrun lines start, and fail only after its wait in the queue (the
    rendezvous waiting for nodes that never come)."""
    def name(option: str) -> str:
        word = (option.split() or [""])[0].split("=", 1)[0]
        return word[:2] if len(word) > 2 and word[0] == "-" and word[1] != "-" else word  # -N2 as -N 2

    return [o for o in options if name(o) in LAYOUT_OPTIONS or (name(o) == "--gres" and "gpu" in o)]


def slurm_script(stage_dir: Path, nodes: int, gpus_per_node: int, job_name: str, sbatch_options: list[str],
                 container_image: str | None = None, mounts: list[Path] = ()) -> str:
    """An sbatch script; `sbatch_options` are extra `#SBATCH` lines such as `--partition=batch`, `--time=4:00:00`
    (or `--signal=USR1@1200`, for more time to stop in than `STOP_MARGIN_S`). With a container image, `mounts` (see
    `container_mounts`) are bound at the same paths inside it, and the image's python runs torchrun."""
    stage_dir = Path(stage_dir).resolve()
    python = "python" if container_image else shlex.quote(sys.executable)
    torchrun = " ".join([
        *launcher(python), f"--nnodes={nodes}", f"--nproc-per-node={gpus_per_node}",
        "--rdzv-id=$SLURM_JOB_ID", "--rdzv-backend=c10d", f"--rdzv-endpoint=$head:{RDZV_PORT}",
        "-m", "swehero.train.worker", shlex.quote(str(stage_dir)),
    ])
    unmountable = [str(m) for m in mounts if set(str(m)) & set(" ,:")]
    if unmountable:  # pyxis splits its mounts at commas and colons, and its mount table's fields at spaces
        raise ValueError(f"pyxis cannot mount {', '.join(unmountable)}: a path with a space, comma or colon; move "
                         "the run folder, the data or the model to one without")
    binds = ",".join(f"{m}:{m}" for m in mounts)
    container = f"--container-image={shlex.quote(container_image)} --container-mounts={shlex.quote(binds)} " \
        f"--container-workdir={shlex.quote(str(stage_dir))} " if container_image else ""
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={directive_value(job_name)}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={gpus_per_node}",
        "#SBATCH --exclusive",
        f"#SBATCH --output={directive_value(f'{stage_dir}/slurm-%j.out')}",
        "#SBATCH --open-mode=append",  # a requeued job keeps its id: its earlier attempt's log is kept, not emptied
        # To the step's processes before the time limit: the workers save at the next step boundary and exit.
        f"#SBATCH --signal={STOP_SIGNAL.name.removeprefix('SIG')}@{STOP_MARGIN_S}",
        *[f"#SBATCH {option}" for option in sbatch_options],  # after ours: sbatch takes an option's last value
        "set -euo pipefail",
        # sed reads the whole list: `head -n 1` exits after a line, and scontrol writing on dies of SIGPIPE, which
        # pipefail makes the script's end (with a few hundred nodes)
        'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)',
        # The whole node for torchrun and its workers: since Slurm 22.05 a step no longer inherits the job's CPUs
        # per task, and with task/affinity or task/cgroup it would be bound to one CPU.
        f"srun --cpus-per-task=$SLURM_CPUS_ON_NODE {container}{torchrun}",
        "",
    ]
    return "\n".join(lines)


def _children() -> list[int]:
    """This process's children (its workers, under torchrun), from each of its threads' list in /proc."""
    return [int(pid) for listing in Path("/proc/self/task").glob("*/children") for pid in listing.read_text().split()]


def _hand_on(signum, frame) -> None:
    for pid in _children():
        try:
            os.kill(pid, signum)  # the worker only, not its process group: what it spawned ignores the signal
        except ProcessLookupError:  # ended meanwhile
            pass


if __name__ == "__main__":
    os.environ.update(WORKER_ENV)  # before torchrun starts any worker, so before any initialises CUDA
    signal.signal(STOP_SIGNAL, _hand_on)
    from torch.distributed.run import main

    main()
