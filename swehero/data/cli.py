"""`swehero data ...`: import trajectories, render them with the loss mask, inspect them, pack them."""

from __future__ import annotations

import json
from pathlib import Path

import click

from swehero.data.import_stage import Settings as ImportSettings, import_to
from swehero.data.prepare import prepare as run_prepare
from swehero.data.render import MASK_POLICIES, load_tokenizer, render_files, show as render_one
from swehero.data.sources import MAX_REJECT_FRACTION
from swehero.data.stage import Settings as PrepareSettings
from swehero.data.trajectory import Reject
from swehero.errors import InputError
from swehero.eval.verifier_data import Settings as VerifierDataSettings, build_verifier_data
from swehero.recipe.config import Recipe
from swehero.recipe.options import Group, settings_options


def _load_tokenizer(ctx: click.Context, param: click.Parameter, name: str):
    try:
        return load_tokenizer(name)
    except InputError as e:
        raise click.BadParameter(str(e)) from None


_TOKENIZER = click.option("--tokenizer", required=True, callback=_load_tokenizer,
                          help="Tokenizer folder (with chat template) or hub id.")
_MASK = click.option("--mask", type=click.Choice(MASK_POLICIES), default="all", show_default=True,
                     help="Train every assistant turn, the last one, or only the last one's content (an answer).")


@click.group(cls=Group)
def data() -> None:
    """Trajectory data: import -> render/show -> prepare (packed Megatron datasets); verifier examples."""


@data.command("import", examples=[
    "swehero data import --format nvidia --stage hero swe-hero/ --per-instance 1 --out hero.jsonl"])
@settings_options(ImportSettings, positional=("inputs",), defaults={"seed": Recipe.seed})
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Canonical JSONL to write.")
def import_(settings: ImportSettings, out: Path) -> None:
    """Convert trajectories of a published format to canonical JSONL; prints what was read, written, rejected,
    the tasks and sources, and what a selection kept."""
    click.echo(json.dumps(import_to(settings, out, settings.seed)))


@data.command(examples=[
    "swehero data render --tokenizer Qwen/Qwen2.5-Coder-7B-Instruct data/zero.jsonl --out rendered.jsonl"])
@_TOKENIZER
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="JSONL of {id, input_ids, loss_mask}.")
@_MASK
@click.option("--max-reject-fraction", type=click.FloatRange(0, 1), default=MAX_REJECT_FRACTION, show_default=True,
              help="Fail when more than this share of rows is malformed (as `import` and `prepare` do).")
def render(tokenizer, inputs: tuple[str, ...], out: Path, mask: str, max_reject_fraction: float) -> None:
    """Tokenize canonical trajectories with the chat template and the assistant-only loss mask."""
    click.echo(json.dumps(render_files(list(inputs), tokenizer, out, mask, max_reject_fraction)))


@data.command(examples=[
    "swehero data show --tokenizer Qwen/Qwen2.5-Coder-7B-Instruct data/zero.jsonl --index 3 | less -R"])
@_TOKENIZER
@click.argument("input_file", type=click.Path(exists=True, path_type=Path))
@click.option("--index", type=int, default=0, show_default=True, help="Which trajectory (0-based line).")
@_MASK
def show(tokenizer, input_file: Path, index: int, mask: str) -> None:
    """Print one rendered trajectory; trained tokens are highlighted (green, bold)."""
    try:
        text, summary = render_one(input_file, index, tokenizer, mask, lambda s: click.style(s, fg="green", bold=True))
    except (Reject, IndexError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(text, color=True)
    click.echo(f"\n{summary}", err=True)


@data.command(examples=[
    "swehero data prepare data/zero.jsonl --tokenizer Qwen/Qwen2.5-Coder-7B-Instruct --seq-length 131072 --out d"])
@settings_options(PrepareSettings, positional=("inputs",), required=("tokenizer",), defaults={"seed": Recipe.seed})
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Dataset folder to create.")
def prepare(settings: PrepareSettings, out: Path) -> None:
    """Render, tokenize and best-fit pack canonical trajectories into Megatron IndexedDataset files."""
    stats = run_prepare(list(settings.inputs), settings.tokenizer, out, settings.prepare_config(Recipe.seed))
    click.echo(json.dumps({k: stats[k] for k in ("trajectories", "tokens", "trained_tokens", "samples",
                                                 "packing_efficiency")}, indent=2))


@data.command(examples=[
    "swehero data verifier data/nebius.jsonl runs/eval-train-tasks --tokenizer Qwen/Qwen2.5-Coder-32B-Instruct "
    "--seq-length 131072 --exclude verified --out data/verifier"])
@settings_options(VerifierDataSettings, positional=("inputs",), required=("tokenizer",), defaults={"seed": 0})
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder to create.")
def verifier(settings: VerifierDataSettings, out: Path) -> None:
    """Verifier examples from labelled attempts (trajectory files with `resolved`, eval folders), packed for
    `train`: the conversation, a judging message with the final patch, and a one-token answer (yes/no)."""
    click.echo(json.dumps(build_verifier_data(settings, settings.tokenizer, out, seed=settings.seed), indent=2))
