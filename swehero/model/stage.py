"""Stage kind `convert`: a Hugging Face folder to a Megatron checkpoint, or a Megatron checkpoint back."""

from __future__ import annotations

from dataclasses import dataclass

from swehero.recipe.stage import InputPath, StageContext


@dataclass(frozen=True)
class Settings:
    source: InputPath
    """What to convert: a Hugging Face folder (hf-to-mcore) or a Megatron checkpoint (mcore-to-hf)."""
    direction: str = "hf-to-mcore"
    """'hf-to-mcore' or 'mcore-to-hf'."""
    like: str = ""
    """mcore-to-hf only: the Hugging Face folder whose config and tokenizer go with the export."""
    tp: int = 1
    """Tensor-parallel ranks used for the conversion."""
    pp: int = 1
    """Pipeline-parallel ranks used for the conversion."""
    spec: str = "local"
    """Layer spec, 'local' or 'te' (Transformer Engine): the one training uses."""


def run(settings: Settings, ctx: StageContext) -> dict[str, str]:
    from pathlib import Path

    from swehero.model import conversion
    from swehero.model.launch import run_ranks
    from swehero.model.provider import Parallel

    parallel = Parallel(tp=settings.tp, pp=settings.pp)
    source = Path(settings.source)
    if settings.direction == "hf-to-mcore":
        out = ctx.dir / "checkpoint"
        run_ranks(conversion.hf_to_mcore, parallel.tp * parallel.pp, source, out, parallel, settings.spec)
        return {"checkpoint": str(out)}
    if settings.direction == "mcore-to-hf":
        if not settings.like:
            raise ValueError("convert: mcore-to-hf needs `like`, the Hugging Face folder the model came from")
        out = ctx.dir / "hf"
        run_ranks(conversion.mcore_to_hf, parallel.tp * parallel.pp, source, out, Path(settings.like), parallel,
                  settings.spec)
        return {"hf": str(out)}
    raise ValueError(f"convert: direction must be 'hf-to-mcore' or 'mcore-to-hf', not {settings.direction!r}")
