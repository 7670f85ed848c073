"""The `swehero` command line. Each subcommand lives beside the stage it drives and is imported lazily,
so `swehero --help` stays fast and a broken optional dependency only breaks its own command.

Every command stops on SIGTERM (`kill`, `timeout`, a scheduler) as on Ctrl-C: the stack unwinds, so what the
command started goes with it (model servers, which run in their own process groups, attempt processes, sandboxes,
containers) and nothing half-done is committed; the exit status is 143 (`serve start`, whose job is to serve until
stopped, exits 0). Input a command cannot use (`errors.InputError`), what it needs from this machine but cannot
have (`errors.Unavailable`), and a path the system refuses (an OSError naming it) are reported in one line,
exit 1."""

from __future__ import annotations

import importlib
import os

import click

from swehero import __version__
from swehero.errors import InputError, ProcessFailed, Unavailable
from swehero.process import exit_with_signal, on_sigterm

# command name -> "module:attribute" of its click command or group
COMMANDS: dict[str, str] = {
    "agent": "swehero.agent.cli:agent",
    "convert": "swehero.model.cli:convert",
    "data": "swehero.data.cli:data",
    "distill": "swehero.distill.cli:distill",
    "eval": "swehero.eval.cli:eval_group",
    "filter": "swehero.distill.cli:filter_",
    "recipe": "swehero.recipe.cli:recipe",
    "serve": "swehero.serve.cli:serve",
    "tiny": "swehero.tiny.cli:tiny",
    "train": "swehero.train.cli:train",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context):
        with on_sigterm(exit_with_signal):
            try:
                return super().invoke(ctx)
            except (InputError, ProcessFailed, Unavailable) as e:
                raise click.ClickException(str(e)) from None
            except OSError as e:
                if e.filename is None:  # a socket, a pipe, a bug: the traceback says where
                    raise
                # a path given that the system refuses (an --out under a file, a folder where a file goes):
                # the user's input, in one line, as git and pip report it
                paths = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "")
                # mkdir's "File exists" for a file where a folder of the path goes reads as a refusal to overwrite
                why = "not a folder (a file is there)" if isinstance(e, FileExistsError) and os.path.isfile(
                    e.filename) else e.strerror
                raise click.ClickException(f"{paths}: {why}") from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="swehero")
def main() -> None:
    """swehero: reproduce SWE-Zero -> SWE-Hero (arXiv 2604.01496).

    \b
    Example:
      swehero recipe run recipes/tiny-cpu.yaml
    """
