"""Stage kind `convert`: a Hugging Face folder to a Megatron checkpoint, or a Megatron checkpoint back."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from swehero.errors import InputError, MissingInput, Unavailable
from swehero.recipe.stage import InputPath, Range, StageContext

OUTPUTS = {"hf-to-mcore": "checkpoint", "mcore-to-hf": "hf"}
"""Each direction's output, by name (also its folder in the stage)."""


@dataclass(frozen=True)
class Settings:
    source: InputPath
    """What to convert: a Hugging Face folder (hf-to-mcore) or a Megatron checkpoint (mcore-to-hf)."""
    direction: Literal["hf-to-mcore", "mcore-to-hf"] = "hf-to-mcore"
    """Which way to convert."""
    like: InputPath | None = None
    """mcore-to-hf only: the Hugging Face folder whose tokenizer and chat template go with the export."""
    tp: Annotated[int, Range(min=1)] = 1
    """Tensor-parallel ranks used for the conversion."""
    pp: Annotated[int, Range(min=1)] = 1
    """Pipeline-parallel ranks used for the conversion."""
    spec: Literal["local", "te"] = "local"
    """Layer spec of the model, 'local' or 'te' (Transformer Engine): train with the same spec."""


def convert(settings: Settings, out: Path) -> None:
    """Run the conversion on tp * pp ranks, writing `out` (a Megatron checkpoint or a Hugging Face folder)."""
    source = Path(settings.source)
    _check_inputs(settings, source)
    out.mkdir(parents=True, exist_ok=True)  # here, where a file in its place is one line, not a traceback per rank

    from swehero.model import convert_jobs
    from swehero.model.launch import run_ranks
    from swehero.model.parallel import ParallelConfig

    parallel, ranks = ParallelConfig(tensor=settings.tp, pipeline=settings.pp), settings.tp * settings.pp
    if settings.direction == "hf-to-mcore":
        run_ranks(convert_jobs.hf_to_mcore, ranks, source, out, parallel, settings.spec)
    else:
        run_ranks(convert_jobs.mcore_to_hf, ranks, source, out, Path(settings.like), parallel, settings.spec)


def _check_inputs(settings: Settings, source: Path) -> None:
    """A wrong folder, layout or spec fails here in one line, not in each rank after importing Megatron."""
    from swehero.model.folder import (CHECKPOINT_CONFIG, TOKENIZER_FILES, check_hf_weights, config_file,
                                      has_tokenizer, read_config)
    from swehero.model.parallel import model_split_problems
    from swehero.model.qwen2 import check_supported

    if settings.spec == "te" and importlib.util.find_spec("transformer_engine") is None:
        # else a NameError from deep inside Megatron's layer specs, in every rank
        raise Unavailable("convert: spec te needs Transformer Engine, which is not installed here: use spec local, "
                          "or convert where it is (the GPU image)")
    if settings.direction == "mcore-to-hf":
        if settings.like is None:
            raise InputError("convert: mcore-to-hf needs `like`, the Hugging Face folder the model came from")
        if not (source / CHECKPOINT_CONFIG).is_file():
            raise MissingInput(f"{source}: no {CHECKPOINT_CONFIG}, so not a Megatron checkpoint of swehero's "
                               "(`convert hf-to-mcore`'s output, or a train stage's checkpoints/step-N)")
        if not (source / ".metadata").is_file():  # torch.distributed.checkpoint's index of the shards
            raise MissingInput(f"{source}: no .metadata, the index of the checkpoint's shards (`cp DIR/* COPY` leaves "
                               "out dot files: copy the folder itself, `cp -r DIR COPY`)")
        if not has_tokenizer(settings.like):
            # Else the export would have weights but no tokenizer or chat template to serve with.
            raise MissingInput(f"{settings.like}: no tokenizer ({', '.join(TOKENIZER_FILES)}) for the export to "
                               "take; `like` is the Hugging Face folder the model came from")
    config = read_config(source)
    try:
        check_supported(config)
    except InputError as e:
        raise InputError(f"{config_file(source)}: {e}") from None
    if settings.direction == "hf-to-mcore":
        check_hf_weights(source, config)
    problems = model_split_problems(config, settings.tp, settings.pp)
    if problems:
        raise InputError(f"{source}: cannot split the model over tp {settings.tp} x pp {settings.pp}: "
                         + "; ".join(problems))


def run(settings: Settings, ctx: StageContext) -> dict[str, str]:
    name = OUTPUTS[settings.direction]
    convert(settings, ctx.dir / name)
    return {name: str(ctx.dir / name)}
