"""`swehero serve MODEL` and `swehero serve check`."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from swehero.process import on_sigterm
from swehero.recipe.options import DefaultCommandGroup, settings_options
from swehero.serve.check import check_file
from swehero.serve.server import ServeConfig, VLLMServer


@click.group(cls=DefaultCommandGroup, default="start")
def serve() -> None:
    """Serve a checkpoint with vLLM (the trained chat template and tool parser); `serve MODEL` is `serve start`."""


@serve.command(examples=["swehero serve start /models/swehero-32b --tensor-parallel-size 4 --data-parallel-size 2"])
# A server started by hand listens where OpenAI clients look first; the ones swehero starts for a run take a free port.
@settings_options(ServeConfig, positional=("model",), required=("model",), defaults={"port": 8000})
@click.option("--log", "log_file", type=click.Path(path_type=Path), default=Path("vllm.log"), show_default=True,
              help="Where the server's output goes.")
def start(settings: ServeConfig, log_file: Path) -> None:
    """Start the server, wait until it is healthy, print its URL; Ctrl-C (or SIGTERM) stops it cleanly."""
    with VLLMServer(settings, log_file) as server, on_sigterm(signal.default_int_handler):
        click.echo(f"serving {settings.model} at {server.url} (log: {log_file}); Ctrl-C stops it")
        try:
            status = server.process.wait()
        except KeyboardInterrupt:
            return click.echo("stopping")
    raise click.ClickException(f"vLLM exited with status {status}; see {log_file}")


@serve.command(examples=["swehero serve check runs/zero-filtered/trajectories.jsonl --tokenizer runs/export/model"])
@click.argument("trajectories", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--parser", default="hermes", show_default=True, type=click.Choice(["hermes"]),
              help="Tool-call format: compares our plugin (what `swehero serve` uses) with vLLM's own parser.")
@click.option("--tokenizer", required=True, type=click.Path(exists=True, file_okay=False),
              help="Tokenizer folder with the chat template training renders with.")
@click.option("--report", "report_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the full report (with mismatching examples) as JSON.")
def check(trajectories: Path, parser: str, tokenizer: str, report_file: Path | None) -> None:
    """Render every assistant turn of TRAJECTORIES as training does and parse it back with vLLM's parser classes;
    fails unless the served parser returns exactly the same content and tool calls for every turn."""
    lines, exact = check_file(trajectories, tokenizer, parser, report_file)
    click.echo("\n".join(lines))
    if not exact:
        raise click.ClickException("the served parser misreads some turns (see --report)")
