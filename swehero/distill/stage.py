"""Stage kind `distill`: teacher rollouts on a task file into `<stage>/trajectories.jsonl` (+ `summary.json`).

Resumable: the trajectory file is append-only and keyed by (task, rollout), so a rerun finishes only what is missing.
"""

from __future__ import annotations

from swehero.distill.run import Settings
from swehero.recipe.stage import StageContext
from swehero.rollout.runner import HOW_ATTEMPTS_RUN

RESUMABLE = True
NOT_IN_RESULT = (*HOW_ATTEMPTS_RUN, "progress")

__all__ = ["NOT_IN_RESULT", "RESUMABLE", "Settings", "run"]


def run(settings: Settings, ctx: StageContext) -> dict[str, str]:
    from swehero.distill.run import SUMMARY, TRAJECTORIES, distill

    distill(settings, ctx.dir)
    return {"trajectories": str(ctx.dir / TRAJECTORIES), "summary": str(ctx.dir / SUMMARY)}
