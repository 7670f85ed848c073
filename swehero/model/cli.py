"""`swehero convert`: Hugging Face <-> Megatron-Core checkpoints for the Qwen2.5(-Coder) family (stage kind
`convert`: the options are its settings)."""

from __future__ import annotations

from pathlib import Path

import click

from swehero.model.stage import Settings, convert as run_convert
from swehero.recipe.options import Group, settings_options

_OUT = click.argument("out", type=click.Path(path_type=Path))


@click.group(cls=Group)
def convert() -> None:
    """Convert checkpoints between Hugging Face safetensors and Megatron distributed checkpoints."""


@convert.command("hf-to-mcore",
                  examples=["swehero convert hf-to-mcore Qwen2.5-Coder-32B-Instruct ckpt/32b --tp 2 --pp 2"])
@settings_options(Settings, positional=("source",), fixed={"direction": "hf-to-mcore", "like": None})
@_OUT
def hf_to_mcore(settings: Settings, out: Path) -> None:
    """Write SOURCE's weights as a Megatron dist checkpoint OUT, loadable at any TP/PP layout.

    Each of the tp*pp ranks holds only its share of the model (on GPUs, one per GPU of this node, or torchrun's)."""
    run_convert(settings, out)
    click.echo(f"wrote Megatron checkpoint {out}")


@convert.command("mcore-to-hf", examples=[
    "swehero convert mcore-to-hf runs/sft/checkpoint ckpt/7b-hf --like Qwen2.5-Coder-7B-Instruct"])
@settings_options(Settings, positional=("source",), fixed={"direction": "mcore-to-hf"}, required=("like",))
@_OUT
def mcore_to_hf(settings: Settings, out: Path) -> None:
    """Export Megatron checkpoint SOURCE to OUT as safetensors shards with an index (transformers and vLLM load it)."""
    run_convert(settings, out)
    click.echo(f"wrote Hugging Face folder {out}")
