"""Launching training: `torchrun` on one node, or an sbatch script for Slurm (one torchrun per node,
c10d rendezvous on the first node). The worker (`python -m swehero.train.worker STAGE_DIR`) reads everything
else from `STAGE_DIR/train_job.json`, so both launchers start the same thing."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

RDZV_PORT = 29500


def torchrun_command(stage_dir: Path, nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "swehero.train.worker", str(stage_dir)]


def container_mounts(paths: list[Path]) -> list[Path]:
    """The host folders a container must mount, each at the same path, so that every path in `paths` and
    everything under it reads as on the host: each path (its folder, for a file) and the real location of each
    symlink in it (a download stage's outputs link into the hub cache; a hub snapshot's files into its
    `blobs/`), outermost folders only. Raises FileNotFoundError naming a path that does not exist (yet)."""
    needed: list[Path] = []

    def add(path: Path, why: str) -> None:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist{why}")
        needed.append(path if path.is_dir() else path.parent)

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


def slurm_script(stage_dir: Path, nodes: int, gpus_per_node: int, job_name: str, sbatch_options: list[str],
                 container_image: str | None = None, mounts: list[Path] = ()) -> str:
    """An sbatch script; `sbatch_options` are extra `#SBATCH` lines such as `--partition=batch`, `--time=4:00:00`.
    With a container image, `mounts` (see `container_mounts`) are bound at the same paths inside it."""
    stage_dir = Path(stage_dir).resolve()
    torchrun = " ".join([
        "torchrun", f"--nnodes={nodes}", f"--nproc-per-node={gpus_per_node}",
        "--rdzv-id=$SLURM_JOB_ID", "--rdzv-backend=c10d", f"--rdzv-endpoint=$head:{RDZV_PORT}",
        "-m", "swehero.train.worker", shlex.quote(str(stage_dir)),
    ])
    binds = ",".join(f"{m}:{m}" for m in mounts)
    container = f"--container-image={shlex.quote(container_image)} --container-mounts={shlex.quote(binds)} " \
        f"--container-workdir={shlex.quote(str(stage_dir))} " if container_image else ""
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={gpus_per_node}",
        "#SBATCH --exclusive",
        f"#SBATCH --output={stage_dir}/slurm-%j.out",
        *[f"#SBATCH {option}" for option in sbatch_options],
        "set -euo pipefail",
        'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "export CUDA_DEVICE_MAX_CONNECTIONS=1  # Megatron overlaps TP communication with compute",
        f"srun {container}{torchrun}",
        "",
    ]
    return "\n".join(lines)
