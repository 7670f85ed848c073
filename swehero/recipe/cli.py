"""`swehero recipe validate|show|run|plan`."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import click
import yaml

from swehero.recipe.config import Recipe, load_recipe
from swehero.recipe.engine import (StageFailed, UnknownStage, check_stage_name, describe, plan as plan_steps,
                                   recipe_as_dict, run_in_progress, run_lock, run_recipe, check_stages)
from swehero.recipe.loader import RecipeError
from swehero.recipe.options import Group
from swehero.recipe.plan import plan_recipe

set_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a value, e.g. --set stages.sft_zero.optimizer.lr=3e-5 (repeatable).")


@contextlib.contextmanager
def stage_options() -> Iterator[None]:
    """Refuse a stage option that names no stage of the recipe (`UnknownStage` raised in the block) as click refuses
    a bad option value (exit 2): checked before anything is locked or written."""
    try:
        yield
    except UnknownStage as e:
        raise click.BadParameter(e.message, param_hint=f"'{e.option}'") from None


def load_or_exit(recipe_file: str, overrides: tuple[str, ...]) -> Recipe:
    try:
        return load_recipe(recipe_file, overrides)
    except RecipeError as e:
        click.echo(f"{e}\nrecipe invalid: {len(e.problems)} problem(s); nothing was run", err=True)
        sys.exit(2)


@click.group(cls=Group)
def recipe() -> None:
    """Validate, inspect, plan and run recipes (YAML experiments). RECIPE is a path or a bundled recipe's name
    (default: tiny-cpu)."""


def _command(*examples: str):
    """A recipe subcommand: RECIPE and --set, then the command's own options."""
    def decorate(function):
        function = click.argument("recipe_file", default="tiny-cpu", metavar="RECIPE")(set_option(function))
        return recipe.command(examples=list(examples))(function)
    return decorate


@_command("swehero recipe validate recipes/hero-32b.yaml")
def validate(recipe_file: str, overrides: tuple[str, ...]) -> None:
    """Check a recipe without running anything; exit 2 and list every problem as file:line: field: message."""
    loaded = load_or_exit(recipe_file, overrides)
    click.echo(f"{loaded.file}: ok ({len(loaded.stages)} stages: {', '.join(s.name for s in loaded.stages)})")


@_command("swehero recipe show tiny-cpu --set run_dir=/tmp/run")
def show(recipe_file: str, overrides: tuple[str, ...]) -> None:
    """Print the fully resolved recipe: overrides applied, references resolved, defaults filled, inferred needs."""
    click.echo(yaml.safe_dump(recipe_as_dict(load_or_exit(recipe_file, overrides)), sort_keys=False), nl=False)


@click.option("--force", is_flag=True, help="Rerun the selected stages from scratch even if up to date.")
@click.option("--only", metavar="STAGE", help="Run STAGE alone, as a plain run would (its needs must be complete).")
@click.option("--from", "start", metavar="STAGE", help="Rerun STAGE and every stage after it.")
@click.option("--dry-run", is_flag=True, help="Print which stages would run and why; run nothing.")
@_command("swehero recipe run recipes/hero-32b.yaml --dry-run",
          "swehero recipe run my.yaml --from sft_hero --set stages.sft_hero.optimizer.lr=2e-5")
def run(recipe_file: str, overrides: tuple[str, ...], dry_run: bool, start: str | None, only: str | None,
        force: bool) -> None:
    """Run the stages in order, skipping the complete and unchanged; a stage interrupted or changed runs again."""
    loaded = load_or_exit(recipe_file, overrides)
    if only and start:
        raise click.UsageError("--only and --from cannot be combined")
    with stage_options():
        check_stage_name(loaded, "--only", only)
        check_stage_name(loaded, "--from", start)
    try:
        if dry_run:
            if run_in_progress(loaded):
                click.echo(f"{loaded.run_dir}: another `recipe run` or `swehero train` is running now; a stage shown "
                           "as interrupted while running is the one it runs")
            steps = plan_steps(loaded, only=only, start=start, force=force)
            checked = check_stages(loaded, steps)
            if checked.problems:
                click.echo("a run would stop before its first stage: " + "; ".join(checked.problems))
            if checked.stops_at:
                click.echo(f"a run would stop at {checked.stops_at[0]}")
            return click.echo("\n".join(describe(steps)))
        with run_lock(loaded):
            run_recipe(loaded, plan_steps(loaded, only=only, start=start, force=force), echo=click.echo)
    except StageFailed as e:
        raise click.ClickException(str(e)) from None


@click.option("--mfu", type=click.FloatRange(0, 1, min_open=True), default=0.45, show_default=True,
              help="Model FLOPs utilisation assumed for GPU-hours (a share: GPU-hours divide by it).")
@_command("swehero recipe plan recipes/hero-32b.yaml --mfu 0.4")
def plan(recipe_file: str, overrides: tuple[str, ...], mfu: float) -> None:
    """Per training stage: memory per GPU by term, tokens, GPU-hours; per evaluation: serving memory. Warns when
    a layout will not fit in an 80 GB H100."""
    click.echo("\n".join(plan_recipe(load_or_exit(recipe_file, overrides), mfu)))
