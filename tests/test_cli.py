"""Every command has help with an example, and every example (in --help and in the docs) names options the command
has; --version works from the installed entry point."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from swehero import __version__
from swehero.cli import COMMANDS, main
from swehero.recipe.options import Command, DefaultCommandGroup, Group


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
            bare = [option.opts[0] for option in command.params if isinstance(option, click.Option)
                    and not option.hidden and not option.help]
            assert not bare, f"`swehero {' '.join(path)} --help` says nothing of {', '.join(bare)}"


@pytest.mark.parametrize("args", [["nosuch"], ["recipe", "run", "--only"]])
def test_usage_errors(args):
    assert CliRunner().invoke(main, args).exit_code == 2


def test_a_path_the_system_refuses_is_one_line_naming_it(tmp_path):
    """An OSError naming a path (here an --out below a file) is the user's input, not a bug: no traceback."""
    (tmp_path / "afile").write_text("")
    result = CliRunner().invoke(main, ["tiny", "make", str(tmp_path / "afile" / "kit")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith(f"Error: {tmp_path / 'afile'}"), result.output
    # mkdir's "File exists" for a file where a folder goes read as a refusal to overwrite it: said as what it is
    from tests_paths import qwen

    result = CliRunner().invoke(main, ["data", "render", "--tokenizer", str(qwen()), str(tmp_path / "afile"), "--out",
                                       str(tmp_path / "afile" / "x.jsonl")])
    assert result.output == f"Error: {tmp_path / 'afile'}: not a folder (a file is there)\n", result.output


def help_examples() -> list[tuple[str, str]]:
    """(command, example line) for every example in a command's --help."""
    examples = []
    for path, command in all_commands(main, click.Context(main)):
        block = (command.help or "").partition("\b\n")[2].replace("\\\n", " ")
        examples += [(" ".join(path), line) for line in command_lines(block.partition("\n")[2])]
    return examples


def doc_examples() -> list[tuple[str, str]]:
    """(file, command line) for every `swehero` command in a fenced code block of the README and docs/."""
    root = Path(__file__).parents[1]
    return [(f.name, line) for f in [root / "README.md", *sorted((root / "docs").glob("*.md"))]
            for block in re.findall(r"```[a-z]*\n(.*?)```", f.read_text(), re.S)
            for line in command_lines(block.replace("\\\n", " "))]


def command_lines(text: str) -> list[str]:
    parts = [part.strip().removeprefix("$ ") for line in text.splitlines() for part in re.split(r"&&|\|\|?|;", line)]
    return [part for part in parts if part.startswith("swehero ")]


def parse(line: str) -> None:
    """Parse a command line as click would, without running it or checking its values (example paths need not
    exist): an unknown command or option raises click.UsageError."""
    command, args = main, shlex.split(line, comments=True)[1:]
    while isinstance(command, click.Group):
        ctx = click.Context(command)
        sub = command.get_command(ctx, args[0]) if args else None
        if sub:
            command, args = sub, args[1:]
        elif getattr(command, "default", None):  # DefaultCommandGroup: `distill --tasks ...` is `distill run ...`
            command = command.get_command(ctx, command.default)
        else:
            raise click.UsageError(f"no command {args[:1]} in {line}")
    command.make_parser(click.Context(command)).parse_args(args)


EXAMPLES = help_examples() + doc_examples()


@pytest.mark.parametrize("where, line", EXAMPLES, ids=[f"{where}: {line}" for where, line in EXAMPLES])
def test_every_example_names_options_its_command_has(where, line):
    """Options are generated from settings fields and named by their shortest unique suffix: a renamed field, or a
    new section whose fields share a name, renames options. Every example shown must still parse."""
    parse(line)


def test_the_example_check_catches_a_renamed_option():
    with pytest.raises(click.UsageError, match="--max-model-length"):
        parse("swehero eval run out --tasks toy --max-model-length 4096")


def test_a_long_example_wraps_as_shell_continuations_within_the_help_width():
    quoted = """'{"command": "git log --oneline -3 && git status --short"}'"""  # a break inside would change it
    example = f"swehero agent tool --repo . {'--mode zero ' * 4}execute_bash {quoted} " + "--root /testbed " * 6
    command = Command("x", examples=[example, "swehero eval report out"])
    shown = command.help.partition("\b\nExamples:\n")[2].splitlines()
    assert all(len(line) <= 114 for line in shown) and len(shown) > 3
    assert [line.endswith(" \\") for line in shown] == [True] * (len(shown) - 2) + [False, False]
    assert any(quoted in line for line in shown)
    rejoined = " ".join(line.removesuffix(" \\").strip() for line in shown[:-1])
    assert shlex.split(rejoined) == shlex.split(example) and rejoined == example.strip()


def test_a_subgroup_takes_examples_whatever_its_parent():
    parent = DefaultCommandGroup("p", default="x")
    sub = parent.group("sub")(lambda: None)
    assert type(sub) is Group
    assert "Example:\n  swehero p sub y" in sub.command(examples=["swehero p sub y"])(lambda: None).help


@pytest.mark.parametrize("command", ["eval", "distill"])
def test_a_rollout_serves_the_agents_whole_context_by_default(command):
    """The paper evaluates at 128k: a checkpoint served by `eval run` or `distill run` gets the agent's context
    budget, not the 32k `swehero serve` starts a plain server with."""
    from swehero.agent.loop import LoopConfig

    shown = CliRunner().invoke(main, [command, "run", "--help"], terminal_width=200).output
    option = re.search(r"--max-model-len INTEGER\s+(.*?)\[default: (\d+)\]", shown, re.S)
    assert option and int(option[2]) == LoopConfig().max_context_tokens == 131072
