"""Launching training: `torchrun` on one node, or an sbatch script for Slurm (one torchrun per node,
c10d rendezvous on the first node). The worker (`python -m swehero.train.worker STAGE_DIR`) reads everything
else from `STAGE_DIR/train_job.json`, so both launchers start the same thing."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

RDZV_PORT = 29500


def torchrun_command(stage_dir: Path, nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "swehero.train.worker", str(stage_dir)]


def slurm_script(stage_dir: Path, nodes: int, gpus_per_node: int, job_name: str, sbatch_options: list[str],
                 container_image: str | None = None) -> str:
    """An sbatch script; `sbatch_options` are extra `#SBATCH` lines such as `--partition=batch`, `--time=4:00:00`."""
    stage_dir = Path(stage_dir).resolve()
    torchrun = " ".join([
        "torchrun", f"--nnodes={nodes}", f"--nproc-per-node={gpus_per_node}",
        "--rdzv-id=$SLURM_JOB_ID", "--rdzv-backend=c10d", f"--rdzv-endpoint=$head:{RDZV_PORT}",
        "-m", "swehero.train.worker", shlex.quote(str(stage_dir)),
    ])
    container = f"--container-image={shlex.quote(container_image)} --container-mounts={shlex.quote(str(stage_dir.parent))} " \
        if container_image else ""
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
