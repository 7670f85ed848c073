"""Stage kind `tiny`: build the tiny model kit into the stage folder (`<stage>/model`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from swehero.recipe.stage import StageContext
from swehero.tiny.kit import TinyModelConfig


@dataclass
class Settings:
    model: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the model and size of the tokenizer's vocabulary."""


def run(settings: Settings, ctx: StageContext) -> dict[str, str]:
    from swehero.tiny.kit import make_tiny

    return {"model": str(make_tiny(ctx.dir / "model", settings.model, ctx.seed))}
