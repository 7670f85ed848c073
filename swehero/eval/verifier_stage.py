"""Stage kind `verifier_data`: labelled attempts -> packed verifier examples (see `swehero.eval.verifier_data`);
a `train` stage on `<stage>/dataset` then trains the verifier."""

from __future__ import annotations

from swehero.errors import InputError
from swehero.eval.verifier_data import Settings
from swehero.recipe.stage import StageContext

USES_MODEL = True  # the tokenizer defaults to the recipe's model tokenizer

__all__ = ["USES_MODEL", "Settings", "run"]


def run(settings: Settings, ctx: StageContext) -> dict[str, str]:
    from swehero.eval.verifier_data import DATASET, EXAMPLES, STATS, build_verifier_data

    tokenizer = settings.tokenizer or (ctx.model.tokenizer_path if ctx.model else None)
    if tokenizer is None:
        raise InputError("verifier_data needs a tokenizer: set `tokenizer` in the stage or a `model` section")
    build_verifier_data(settings, tokenizer, ctx.dir, seed=ctx.seed)
    return {"dataset": str(ctx.dir / DATASET), "examples": str(ctx.dir / EXAMPLES), "stats": str(ctx.dir / STATS)}
