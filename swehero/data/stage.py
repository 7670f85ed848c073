"""Stage kind `prepare`: canonical trajectories -> packed Megatron datasets (see `swehero.data.prepare`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from swehero.data.prepare import NOT_IN_OUTPUT, PrepareConfig
from swehero.errors import InputError
from swehero.recipe.stage import InputPath, ModelRef, StageContext

USES_MODEL = True  # the tokenizer defaults to the recipe's model tokenizer
NOT_IN_RESULT = NOT_IN_OUTPUT  # changed alone, a complete stage stays complete (and what trains on it)


@dataclass(frozen=True, kw_only=True)
class Settings(PrepareConfig):
    """Settings of a `prepare` stage: the inputs plus every `PrepareConfig` field (seq_length, mask, too_long,
    valid_fraction, batch_size, max_open, max_reject_fraction)."""

    inputs: list[InputPath]
    """Canonical trajectory files (JSONL/JSON/Parquet) or folders of them; `swehero data import` makes them."""
    tokenizer: ModelRef | None = None
    """Tokenizer (with chat template) to render with; in a recipe, default: the model's tokenizer."""
    seed: int | None = None
    """Seed of the train/valid split; in a recipe, default: the recipe's seed."""
    workers: int = -1
    """Worker processes; -1 one per core the stage may run on (its CPU affinity), 0 renders in its own process."""

    def prepare_config(self, default_seed: int) -> PrepareConfig:
        """The packing settings, seeded with `default_seed` unless `seed` is set."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(PrepareConfig)}
        return PrepareConfig(**{**fields, "seed": default_seed if self.seed is None else self.seed})


def run(settings: Settings, ctx: StageContext) -> dict[str, str]:
    from swehero.data.prepare import prepare

    tokenizer = settings.tokenizer or (ctx.model.tokenizer_path if ctx.model else None)
    if tokenizer is None:
        raise InputError("prepare needs a tokenizer: set `tokenizer` in the stage or a `model` section")
    out = ctx.dir / "dataset"
    prepare(list(settings.inputs), tokenizer, out, settings.prepare_config(ctx.seed))
    return {
        "dataset": str(out),
        "stats": str(out / "stats.json"),
    }
