"""Entry point of each training process: `python -m swehero.train.worker STAGE_DIR` (torchrun starts one per
GPU, or per CPU rank). Everything it needs is in `STAGE_DIR/train_job.json`."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from swehero.recipe.loader import Lines, RecipeError
from swehero.recipe.schema import build
from swehero.train.config import Settings
from swehero.process import die_with_parent
from swehero.train.loop import TrainJob, train

JOB_FILE = "train_job.json"

if __name__ == "__mp_main__":
    # A process a rank spawns (Megatron's asynchronous checkpoint writer) imports this module under this name. It
    # too must die with its rank: after a kill -9 it would otherwise wait on its queue forever, holding memory.
    die_with_parent()


def read_job(stage_dir: Path) -> TrainJob:
    path = Path(stage_dir) / JOB_FILE
    data = json.loads(path.read_text())
    problems: list[str] = []
    settings = build(Settings, data.pop("settings"), ("settings",), Lines(str(path)), problems)
    if problems:
        raise RecipeError(problems)
    return TrainJob(settings=settings, **data)


if __name__ == "__main__":
    # torchrun starts workers in their own session: killing its process group (kill -9, a node agent giving up)
    # would leave them training on beside the rerun that resumes the stage.
    die_with_parent()
    # Megatron's distributed optimizer calls collectives torch has renamed; the warning comes once per step per
    # rank and buries the progress bar.
    warnings.filterwarnings("ignore", r"`torch\.distributed\.(reduce_scatter|all_gather_into)_tensor` is deprecated",
                            FutureWarning)
    train(read_job(Path(sys.argv[1])))
