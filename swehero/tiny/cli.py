"""`swehero tiny make`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from swehero.tiny.kit import TinyModelConfig

_DEFAULTS = TinyModelConfig()


@click.group()
def tiny() -> None:
    """The tiny model kit: a small Qwen2.5-shaped tokenizer and random Qwen2 model for CPU tests and demos.

    \b
    Example:
      swehero tiny make /tmp/tiny
    """


@tiny.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, help="Seed for the random weights.")
@click.option("--vocab-size", default=_DEFAULTS.vocab_size, show_default=True, help="BPE vocabulary before added tokens.")
@click.option("--hidden-size", default=_DEFAULTS.hidden_size, show_default=True, help="Width (a multiple of 64).")
@click.option("--num-layers", default=_DEFAULTS.num_layers, show_default=True, help="Transformer layers.")
@click.option("--num-kv-heads", default=_DEFAULTS.num_kv_heads, show_default=True, help="Key/value heads (GQA).")
@click.option("--intermediate-size", default=_DEFAULTS.intermediate_size, show_default=True, help="MLP width.")
@click.option("--tie-word-embeddings", is_flag=True, help="Share embedding and LM head (like Qwen2.5 0.5B-3B).")
def make(out: Path, seed: int, **shape) -> None:
    """Write a tokenizer and a randomly initialised Qwen2ForCausalLM to OUT as a Hugging Face folder.

    Deterministic for a given seed and shape.

    \b
    Example:
      swehero tiny make /tmp/tiny --seed 0 --num-layers 4
    """
    from swehero.tiny.kit import make_tiny

    config = dataclasses.replace(_DEFAULTS, **shape)
    make_tiny(out, config, seed)
    click.echo(f"wrote tiny model kit to {out}")
