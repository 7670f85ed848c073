"""Stage kind `eval`: run the agent on a task set, grade it, and report (`<stage>/report.md`).

Resumable: predictions and grades are append-only, so a rerun after an interruption finishes only what is missing.
"""

from __future__ import annotations

from swehero.errors import InputError
from swehero.eval.pipeline import Settings, check_settings
from swehero.recipe.stage import StageContext
from swehero.rollout.runner import HOW_ATTEMPTS_RUN

RESUMABLE = True
NOT_IN_RESULT = (*HOW_ATTEMPTS_RUN, "grading.workers", "grading.harness.max_workers", "grading.harness.run_id",
                 "grading.harness.min_free_gb", "grading.harness.prune_images", "grading.local.env.cache")
# The prices make only the report's cost column: changed alone, the stage runs again, resuming its attempts and
# grades, and writes its reports with them.
RESUMES_ACROSS = ("price_prompt_per_mtok", "price_completion_per_mtok")

__all__ = ["NOT_IN_RESULT", "RESUMABLE", "RESUMES_ACROSS", "Settings", "check", "run"]


def check(settings: Settings, name: str, recipe, step) -> None:
    """Settings that do not go together stop `recipe run` before its first stage, not after days of them."""
    try:
        check_settings(settings)
    except InputError as e:
        raise InputError(f"stage {name}: {e}") from None


def run(settings: Settings, ctx: StageContext) -> dict[str, str]:
    from swehero.eval.pipeline import evaluate

    return evaluate(settings, ctx.dir)
