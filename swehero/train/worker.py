"""Entry point of each training process: `python -m swehero.train.worker STAGE_DIR` (torchrun starts one per
GPU, or per CPU rank). Everything it needs is in `STAGE_DIR/train_job.json`."""

from __future__ import annotations

import json
import signal
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from swehero.process import die_with_parent

if TYPE_CHECKING:
    from swehero.train.loop import TrainJob

JOB_FILE = "train_job.json"
# Written last, once every rank has saved its final checkpoint and the export is complete.
FINISHED = "finished.json"
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
"""Each asks the workers to save at the next step boundary and exit (swehero.train.loop): Slurm's warning before a
time limit (`#SBATCH --signal`), `recipe run` stopped (swehero.train.launch hands it on), or torchrun handing on its
own SIGTERM (scancel, a preemption, `kill`; it gives the workers 30 s, then kills them)."""


class StopRequest:
    """The stop signal this process has received (0: none), from the moment it is made."""

    def __init__(self) -> None:
        self.signum = 0
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._receive)

    def _receive(self, signum, frame) -> None:
        self.signum = signum


if __name__ == "__mp_main__":
    # A process a rank spawns (Megatron's checkpoint writer, the manager of its results queue) imports this module
    # under this name. It too must die with its rank: after a kill -9 it would otherwise wait on its queue forever,
    # holding memory. Nothing heavy is imported above: every rank spawns such a process at its first checkpoint,
    # which would otherwise import torch and Megatron again for nothing (measured on CPU: 1.8 s of a 14 s tiny run,
    # and 430 MB resident per rank).
    die_with_parent(forks=True)  # the writers it forks in turn too
    # Slurm signals every process of its step: the checkpoint writer must live on to the rank's last save.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def read_job(stage_dir: Path) -> TrainJob:
    from swehero.recipe.loader import Lines, RecipeError
    from swehero.recipe.schema import build
    from swehero.train.config import Settings
    from swehero.train.loop import TrainJob

    path = Path(stage_dir) / JOB_FILE
    data = json.loads(path.read_text())
    problems: list[str] = []
    settings = build(Settings, data.pop("settings"), ("settings",), Lines(str(path)), problems)
    if problems:
        raise RecipeError(problems)
    return TrainJob(settings=settings, **data)


if __name__ == "__main__":
    # torchrun starts workers in their own session: killing its process group (kill -9, a node agent giving up)
    # would leave them training on beside the rerun that resumes the stage. So must what it forks: Megatron's
    # torch_dist checkpoint writer would otherwise outlive it, stuck.
    die_with_parent(forks=True)
    stop = StopRequest()  # first: a stop signal must not kill a rank that is still loading
    # Megatron's distributed optimizer calls collectives torch has renamed; the warning comes once per step per
    # rank and buries the progress bar.
    warnings.filterwarnings("ignore", r"`torch\.distributed\.(reduce_scatter|all_gather_into)_tensor` is deprecated",
                            FutureWarning)
    from swehero.train.loop import train

    train(read_job(Path(sys.argv[1])), stop)
