"""Stage kind `filter`: the paper's trajectory filters over a trajectory file, then an optional seeded selection
among the trajectories they keep (`<stage>/trajectories.jsonl`, `dropped.jsonl`, `filter_report.json`).

Resumable: `resolved_only`'s grades are logged append-only (`grades.jsonl`), so a rerun after an interruption grades
only what was not graded; the other outputs are written afresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swehero.distill.filters import FilterConfig
from swehero.recipe.stage import InputPath, StageContext

RESUMABLE = True


@dataclass
class Settings:
    trajectories: InputPath
    """Canonical trajectories (.jsonl), e.g. a `distill` or `import` stage's output."""
    rules: FilterConfig = field(default_factory=FilterConfig)
    """Stage (zero/hero), the rules' limits, rules to skip, and the selection among the kept (`per_instance`,
    `limit`, seeded by the recipe's seed unless `seed` is set); `resolved_only` stays off unless set (the paper
    does not use it)."""


def run(settings: Settings, ctx: StageContext) -> dict[str, str]:
    from swehero.distill.filter_io import filter_file

    return filter_file(settings.trajectories, settings.rules, ctx.dir, ctx.seed)
