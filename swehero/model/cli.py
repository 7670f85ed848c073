"""`swehero convert`: Hugging Face <-> Megatron-Core checkpoints for the Qwen2.5(-Coder) family."""

from __future__ import annotations

from pathlib import Path

import click

_PATH = click.Path(path_type=Path)
_layout = [
    click.option("--tp", default=1, show_default=True, help="Tensor-parallel ranks used for the conversion."),
    click.option("--pp", default=1, show_default=True, help="Pipeline-parallel ranks used for the conversion."),
    click.option("--spec", type=click.Choice(["local", "te"]), default="local", show_default=True,
                 help="Layer spec of the model: 'te' (Transformer Engine) or 'local'. Train with the same spec."),
]


def layout_options(command):
    for option in reversed(_layout):
        command = option(command)
    return command


@click.group()
def convert() -> None:
    """Convert checkpoints between Hugging Face safetensors and Megatron distributed checkpoints.

    \b
    Example:
      swehero convert hf-to-mcore Qwen2.5-Coder-7B-Instruct ckpt/7b
    """


@convert.command("hf-to-mcore")
@click.argument("hf_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=_PATH)
@layout_options
def hf_to_mcore(hf_dir: Path, out: Path, tp: int, pp: int, spec: str) -> None:
    """Write HF_DIR's weights as a Megatron dist checkpoint OUT, loadable at any TP/PP layout.

    Each of the tp*pp ranks holds only its share of the model (on GPUs start it with torchrun).

    \b
    Example:
      swehero convert hf-to-mcore Qwen2.5-Coder-32B-Instruct ckpt/32b --tp 2 --pp 2
    """
    from swehero.model.conversion import hf_to_mcore as job
    from swehero.model.launch import run_ranks
    from swehero.model.provider import Parallel

    run_ranks(job, tp * pp, hf_dir, out, Parallel(tp=tp, pp=pp), spec)
    click.echo(f"wrote Megatron checkpoint {out}")


@convert.command("mcore-to-hf")
@click.argument("ckpt", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=_PATH)
@click.option("--like", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="HF folder whose config, tokenizer and chat template go beside the exported weights.")
@layout_options
def mcore_to_hf(ckpt: Path, out: Path, like: Path, tp: int, pp: int, spec: str) -> None:
    """Export Megatron checkpoint CKPT to OUT as safetensors shards with an index (transformers and vLLM load it).

    \b
    Example:
      swehero convert mcore-to-hf runs/sft/checkpoint ckpt/7b-hf --like Qwen2.5-Coder-7B-Instruct
    """
    from swehero.model.conversion import mcore_to_hf as job
    from swehero.model.launch import run_ranks
    from swehero.model.provider import Parallel

    run_ranks(job, tp * pp, ckpt, out, like, Parallel(tp=tp, pp=pp), spec)
    click.echo(f"wrote Hugging Face folder {out}")
