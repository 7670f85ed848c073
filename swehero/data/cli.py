"""`swehero data ...`: import trajectories, render them with the loss mask, inspect them, pack them."""

from __future__ import annotations

import json
from pathlib import Path

import click

from swehero.data.import_stage import Settings as ImportSettings
from swehero.data.stage import Settings as PrepareSettings
from swehero.recipe.config import Recipe
from swehero.recipe.options import settings_options

@click.group()
def data() -> None:
    """Trajectory data: import -> render/show -> prepare (packed Megatron datasets).

    \b
    Example:
      swehero data import --format nvidia zero.parquet --out zero.jsonl
    """


@data.command("import")
@settings_options(ImportSettings, positional=("inputs",), defaults={"seed": 1234})
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Canonical JSONL to write.")
def import_(settings: ImportSettings, out: Path) -> None:
    """Convert trajectories from files of a published format to canonical JSONL; prints rows read, written,
    rejected, distinct tasks, records per source, and what a selection kept.

    \b
    Examples:
      swehero data import --format nvidia --stage zero swe-zero/*.parquet --out data/zero.jsonl
      swehero data import --format nvidia --stage hero swe-hero/ --per-instance 1 --seed 1234 --out hero.jsonl
    """
    from swehero.data.importers import import_files
    from swehero.data.select import Selection

    counts = import_files(list(settings.inputs), settings.format, out, stage=settings.stage,
                          max_reject_fraction=settings.max_reject_fraction,
                          selection=Selection(settings.per_instance, settings.limit, settings.seed))
    click.echo(json.dumps(counts))


@data.command()
@click.option("--tokenizer", required=True, help="Tokenizer folder (with chat template) or hub id.")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="JSONL of {id, input_ids, loss_mask}.")
@click.option("--mask", type=click.Choice(["all", "last"]), default="all", show_default=True)
def render(tokenizer, inputs, out, mask) -> None:
    """Tokenize canonical trajectories with the chat template and the assistant-only loss mask.

    \b
    Example:
      swehero data render --tokenizer Qwen/Qwen2.5-Coder-7B-Instruct data/zero.jsonl --out rendered.jsonl
    """
    from transformers import AutoTokenizer

    from swehero.data.render import render_files

    click.echo(json.dumps(render_files(list(inputs), AutoTokenizer.from_pretrained(tokenizer), out, mask)))


@data.command()
@click.option("--tokenizer", required=True, help="Tokenizer folder (with chat template) or hub id.")
@click.argument("input_file", type=click.Path(exists=True, path_type=Path))
@click.option("--index", type=int, default=0, show_default=True, help="Which trajectory (0-based line).")
@click.option("--mask", type=click.Choice(["all", "last"]), default="all", show_default=True)
def show(tokenizer, input_file, index, mask) -> None:
    """Print one rendered trajectory; trained tokens are highlighted (green, bold).

    \b
    Example:
      swehero data show --tokenizer Qwen/Qwen2.5-Coder-7B-Instruct data/zero.jsonl --index 3 | less -R
    """
    from itertools import islice

    from transformers import AutoTokenizer

    from swehero.data.render import ChatRenderer, highlight
    from swehero.data.sources import parse_row, read_rows
    from swehero.data.trajectory import Reject, validate

    row = next(islice(read_rows(input_file), index, None), None)
    if row is None:
        raise click.BadParameter(f"{input_file} has no trajectory {index}", param_hint="--index")
    try:
        record = validate(parse_row(row[1]))
    except Reject as e:
        raise click.ClickException(f"{row[0]}: {e}") from None
    tok = AutoTokenizer.from_pretrained(tokenizer)
    r = ChatRenderer(tok, mask=mask).render(record)
    click.echo(highlight(r, tok, lambda s: click.style(s, fg="green", bold=True)), color=True)
    click.echo(f"\n[{row[0]}] {len(r.input_ids)} tokens, {int(r.loss_mask.sum())} trained", err=True)


@data.command()
# Without a recipe, the seed defaults to a recipe's default seed.
@settings_options(PrepareSettings, positional=("inputs",), required=("tokenizer",), defaults={"seed": Recipe.seed})
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Dataset folder to create.")
def prepare(settings: PrepareSettings, out: Path) -> None:
    """Render, tokenize and best-fit pack canonical trajectories into Megatron IndexedDataset files.

    \b
    Example:
      swehero data prepare data/zero.jsonl --tokenizer Qwen/Qwen2.5-Coder-7B-Instruct \\
          --seq-length 131072 --out data/zero-packed
    """
    from swehero.data.prepare import prepare as run_prepare

    stats = run_prepare(list(settings.inputs), settings.tokenizer, out, settings.prepare_config(Recipe.seed))
    summary = {k: stats[k] for k in ("trajectories", "tokens", "trained_tokens", "samples", "packing_efficiency")}
    click.echo(json.dumps(summary, indent=2))
