"""Stage kind `prompts`: the opening messages of training trajectories as templates (`<stage>/prompts.json`), for
the evaluations of the model trained on them (`agent.prompts`)."""

from __future__ import annotations

from dataclasses import dataclass

from swehero.recipe.stage import InputPath, StageContext


@dataclass
class Settings:
    trajectories: list[InputPath]
    """Canonical trajectory files (an import stage's output), zero and/or hero."""
    tasks: InputPath = ""
    """Their task file, when there is one: the problem statements are then matched exactly, not inferred."""


def run(settings: Settings, ctx: StageContext) -> dict[str, str]:
    from swehero.agent.prompts import extract_files, summary

    out = ctx.dir / "prompts.json"
    for line in summary(extract_files(list(settings.trajectories), out, settings.tasks)):
        print(line)
    return {"prompts": str(out)}
