"""`swehero tiny make` (stage kind `tiny`: the options are its settings)."""

from __future__ import annotations

from pathlib import Path

import click

from swehero.recipe.config import Recipe
from swehero.recipe.options import Group, settings_options
from swehero.tiny.kit import make_tiny
from swehero.tiny.stage import Settings


@click.group(cls=Group)
def tiny() -> None:
    """The tiny model kit: a small Qwen2.5-shaped tokenizer and random Qwen2 model for CPU tests and demos."""


@tiny.command(examples=["swehero tiny make /tmp/tiny --seed 0 --num-layers 4"])
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=Recipe.seed, show_default=True,
              help="Seed for the random weights; the default is a recipe's, so the kit is its `tiny` stage's.")
@settings_options(Settings)
def make(out: Path, seed: int, settings: Settings) -> None:
    """Write a tokenizer and a randomly initialised Qwen2ForCausalLM to OUT as a Hugging Face folder.

    Deterministic for a given seed and shape."""
    make_tiny(out, settings.model, seed)
    click.echo(f"wrote tiny model kit to {out}")
