"""`swehero serve MODEL` and `swehero serve check`."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from swehero.recipe.options import settings_options
from swehero.serve.server import ServeConfig


class _ServeGroup(click.Group):
    """`swehero serve MODEL ...` means `swehero serve start MODEL ...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_ServeGroup)
def serve() -> None:
    """Serve a checkpoint with vLLM's OpenAI-compatible server (the trained chat template and tool parser).

    \b
    Examples:
      swehero serve runs/tiny-cpu/export/model --max-model-len 8192
      swehero serve check trajectories.jsonl --tokenizer runs/tiny-cpu/export/model
    """


@serve.command()
# A server started by hand listens where OpenAI clients look first; the ones swehero starts for a run take a free port.
@settings_options(ServeConfig, positional=("model",), defaults={"port": 8000})
@click.option("--log", "log_file", type=click.Path(path_type=Path), default=Path("vllm.log"), show_default=True,
              help="Where the server's output goes.")
def start(settings: ServeConfig, log_file: Path) -> None:
    """Start the server, wait until it is healthy, print its URL, and stop it cleanly on Ctrl-C.

    \b
    Example:
      swehero serve start /models/swehero-32b --tensor-parallel-size 8 --max-model-len 131072
    """
    from swehero.serve.server import VLLMServer

    with VLLMServer(settings, log_file) as server:
        click.echo(f"serving {settings.model} at {server.url} (log: {log_file}); Ctrl-C stops it")
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the same way on SIGTERM as on Ctrl-C
        try:
            status = server.process.wait()
        except KeyboardInterrupt:
            click.echo("stopping")
            return
    raise click.ClickException(f"vLLM exited with status {status}; see {log_file}")


@serve.command()
@click.argument("trajectories", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--parser", default="hermes", show_default=True, type=click.Choice(["hermes"]),
              help="Tool-call format: compares our plugin (what `swehero serve` uses) with vLLM's own parser.")
@click.option("--tokenizer", required=True, type=click.Path(exists=True, file_okay=False),
              help="Tokenizer folder with the chat template training renders with.")
@click.option("--report", "report_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the full report (with mismatching examples) as JSON.")
def check(trajectories: Path, parser: str, tokenizer: str, report_file: Path | None) -> None:
    """Render every assistant turn of TRAJECTORIES (.jsonl) as training does and parse it back with vLLM's
    parser classes; fails unless the served parser returns exactly the same tool calls for every turn.

    \b
    Example:
      swehero serve check runs/zero-filtered/trajectories.jsonl --parser hermes --tokenizer runs/export/model
    """
    import json

    from transformers import AutoTokenizer

    from swehero.jsonio import read_jsonl
    from swehero.serve.check import PARSERS, check_trajectories

    records = read_jsonl(trajectories)
    report = check_trajectories(records, AutoTokenizer.from_pretrained(tokenizer), parser)
    if report_file:
        report_file.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    for name, entry in report["parsers"].items():
        click.echo(f"{name}: {entry['exact']}/{report['turns']} assistant turns parsed back exactly "
                   f"({report['turns_with_calls']} with tool calls)")
    if report["parsers"][PARSERS[parser][0]]["mismatched"]:
        raise click.ClickException(f"the served parser {PARSERS[parser][0]} misreads some turns (see --report)")
