"""Stage kind `eval`: run the agent on a task set, grade it, and report (`<stage>/report.md`).

Resumable: predictions and grades are append-only, so a rerun after an interruption finishes only what is missing.
"""

from __future__ import annotations

from swehero.errors import InputError
from swehero.eval.pipeline import Settings, check_settings
from swehero.recipe.stage import StageContext

RESUMABLE = True

__all__ = ["RESUMABLE", "Settings", "check", "run"]


def check(settings: Settings, name: str, recipe, step) -> None:
    """Settings that do not go together stop `recipe run` before its first stage, not after days of them."""
    try:
        check_settings(settings)
    except InputError as e:
        raise InputError(f"stage {name}: {e}") from None


def run(settings: Settings, ctx: StageContext) -> dict[str, str]:
    from swehero.eval.pipeline import evaluate

    return evaluate(settings, ctx.dir)
