"""Stage kind `eval`: run the agent on a task set, grade it, and report (`<stage>/report.md`).

Resumable: predictions and grades are append-only, so a rerun after an interruption finishes only what is missing.
"""

from __future__ import annotations

from swehero.eval.pipeline import Settings
from swehero.recipe.stage import StageContext

RESUMABLE = True

__all__ = ["RESUMABLE", "Settings", "run"]


def run(settings: Settings, ctx: StageContext) -> dict[str, str]:
    from swehero.eval.pipeline import evaluate

    return evaluate(settings, ctx.dir)
