"""Every command has help with an example; --version works from the installed entry point."""

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from swehero import __version__
from swehero.cli import COMMANDS, main


def all_commands(group: click.Group, ctx: click.Context, prefix=()):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from all_commands(command, ctx, prefix + (name,))


def test_version_from_console_script():
    script = Path(sys.executable).parent / "swehero"  # the venv's console script, whatever PATH says
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"swehero, version {__version__}"


def test_every_command_has_help_with_example():
    """Every command shows an example in its --help; a group lists its commands."""
    ctx = click.Context(main)
    commands = list(all_commands(main, ctx))
    assert {path[0] for path, _ in commands} == set(COMMANDS)
    for path, command in commands:
        result = CliRunner().invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        if not isinstance(command, click.Group):
            assert "Example" in result.output, f"`swehero {' '.join(path)} --help` shows no example"


@pytest.mark.parametrize("args", [["nosuch"], ["recipe", "run", "--only"]])
def test_usage_errors(args):
    assert CliRunner().invoke(main, args).exit_code == 2
