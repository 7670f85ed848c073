"""Where a train stage's weights are: its checkpoints, the initial weights of a stage, and the model config they
hold. No torch or Megatron: the stage checks a layout against that config before it launches any worker."""

from __future__ import annotations

import re
from pathlib import Path

from swehero.errors import MissingInput
from swehero.model import qwen2
from swehero.model.folder import is_hf_folder, read_config
from swehero.train.config import Settings

_STEP = re.compile(r"^step-(\d+)$")


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    found = [(int(m.group(1)), p) for p in Path(folder).glob("step-*") if (m := _STEP.match(p.name))]
    return sorted(found)


def init_weights(init: str) -> Path:
    """Where the initial weights are: a Hugging Face folder, or the last checkpoint of an earlier train stage."""
    if is_hf_folder(init):
        return Path(init)
    found = checkpoints(Path(init) / "checkpoints")
    if not found:
        raise MissingInput(f"{init}: neither a Hugging Face folder nor a train stage folder with checkpoints")
    return found[-1][1]


def model_config(settings: Settings, init: str) -> dict:
    """The Hugging Face config of the model the stage builds: the initial weights', with the stage's rope_scaling."""
    config = read_config(init_weights(init))
    if settings.rope_scaling is not None:
        config = qwen2.with_rope_scaling(config, settings.rope_scaling)
    return config
