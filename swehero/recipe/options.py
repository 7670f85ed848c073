"""Command-line options generated from a settings dataclass, so a setting is declared once: its field (name, type,
default, docstring) gives the option, and the recipe schema checks the value.

`settings_options(Settings, positional=...)` decorates a click command: every field becomes `--field-name` (or a
positional argument), and `--config FILE` and `--set KEY=VALUE` are added; the command receives the checked
`settings` instance. Precedence: dataclass defaults < the command's `defaults` < --config < options < --set; an
option counts only when given on the command line (click's parameter source), so its default, shown in --help,
never overrides the config file.

Names: nested dataclasses are flattened and each leaf is named by the shortest dotted suffix of its path that no
other leaf with an option ends with (`workers` stays `--workers` beside `grading.workers`, which becomes
`--grading-workers`); an excluded section does not lengthen the names beside it.
Types: int, float and str take a value, bool is `--x/--no-x`, `Literal` a choice, `list[...]` repeats (a list of
plain strings also splits at commas; paths and `Verbatim` texts do not), `X | None` is X. Other fields (dicts)
are reached with --config/--set only.

Errors read as the recipe engine's, `where: field: message`, where is the config file's `file:line`, the option
(`--workers`), the argument (`INPUTS`) or `--set`.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import functools
import inspect
import re
import shlex
import textwrap
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import click
from click.core import ParameterSource

from swehero.recipe.loader import (FieldPath, Lines, RecipeError, Unresolved, apply_override, load_yaml,
                                   resolve_references)
from swehero.recipe.schema import as_data, build, field_default, input_paths, section_class, unwrap, without_none
from swehero.recipe.stage import _Input


class SettingsError(click.ClickException):
    """Every problem with a command's settings, one `where: field: message` line each (exit status 2)."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems

    def show(self, file: Any = None) -> None:
        click.echo(f"{self.message}\nsettings invalid: {len(self.problems)} problem(s); nothing was run", err=True)


# ---------------------------------------------------------------------------------------------- reading a class


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass, inherited fields included (a subclass's own wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return docs


@functools.cache
def _own_field_docs(klass: type) -> dict[str, str]:
    # Python keeps no docstrings for attributes: read the string literal that follows each annotated field.
    body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
    return {
        node.target.id: inspect.cleandoc(after.value.value)
        for node, after in zip(body, body[1:])
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)
    }


@dataclasses.dataclass(frozen=True)
class Leaf:
    """A field that holds a value (not a nested dataclass), by its path from the root settings class."""

    path: tuple[str, ...]
    type: Any
    help: str
    default: Any
    """The field's default in its own class (`dataclasses.MISSING` if it has none)."""

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def leaves(cls: type, prefix: tuple[str, ...] = ()) -> list[Leaf]:
    hints, docs = typing.get_type_hints(cls, include_extras=True), field_docs(cls)
    out: list[Leaf] = []
    for f in dataclasses.fields(cls):
        section = section_class(hints[f.name])
        if section:
            out += leaves(section, prefix + (f.name,))
        elif f.init:
            out.append(Leaf(prefix + (f.name,), hints[f.name], docs.get(f.name, ""), field_default(f)))
    return out


def option_names(paths: list[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """Each path's shortest suffix that no other path ends with, dashed: `grading.workers` -> `grading-workers`."""
    names = {}
    for path in paths:
        others = [other for other in paths if other != path]
        size = next((k for k in range(1, len(path)) if all(o[-k:] != path[-k:] for o in others)), len(path))
        names[path] = "-".join(path[-size:]).replace("_", "-")
    clashes = sorted({n for n in names.values() if list(names.values()).count(n) > 1})
    if clashes:
        raise ValueError(f"settings fields give the same option names: {clashes}")
    return names


def defaults_tree(cls: type) -> dict[str, Any]:
    """Every field's default as recipe data (nested dataclasses as mappings); fields without one are absent."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if field_default(f) is not dataclasses.MISSING:
            out[f.name] = as_data(field_default(f))
        elif section_class(hints[f.name]):
            out[f.name] = defaults_tree(section_class(hints[f.name]))
    return out


def _lookup(data: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return dataclasses.MISSING
        data = data[part]
    return data


def _put(data: dict[str, Any], path: FieldPath, value: Any) -> None:
    for part in path[:-1]:
        if not isinstance(data.get(part), dict):
            data[part] = {}
        data = data[part]
    data[path[-1]] = value


# ---------------------------------------------------------------------------------------------- click parameters

_METAVARS = {int: "INTEGER", float: "FLOAT", str: "TEXT", bool: "BOOLEAN"}


def _metavar(tp: Any) -> str | None:
    """How help shows a value of this type; None for types an option cannot take (mappings, unions)."""
    tp = without_none(tp)
    marker = next((a for a in typing.get_args(tp)[1:] if isinstance(a, _Input)), None)
    if typing.get_origin(tp) is Annotated and marker:
        return "|".join(["PATH"] + ["HUB_ID"] * marker.hub_ok + [n for n in marker.names if "/" not in n])
    tp = unwrap(tp)
    if typing.get_origin(tp) is Literal:
        return "[" + "|".join(str(a) for a in typing.get_args(tp)) + "]"
    return _METAVARS.get(tp)


def _list_item(tp: Any) -> Any:
    """The item type of a `list[...]` field, else None."""
    tp = unwrap(tp)
    return typing.get_args(tp)[0] if typing.get_origin(tp) is list else None


def _splits_at_commas(item: Any) -> bool:
    return item is str  # plain strings only: a path (`InputPath`) or a `Verbatim` text may hold a comma


def _coerce(tp: Any, text: str) -> Any:
    """An option's text as the field's type where it reads as one; else the text, for the schema to report."""
    tp = unwrap(tp)
    if tp in (int, float):
        try:
            return tp(text)
        except ValueError:
            return text
    if typing.get_origin(tp) is Literal:
        return next((a for a in typing.get_args(tp) if str(a) == text), text)
    return text


class _SettingOption(click.Option):
    """Shows `[required]` for a setting that must be given, but leaves the check to the schema: a --config file
    may give it."""

    def __init__(self, *args: Any, must_give: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.must_give = must_give

    def get_help_extra(self, ctx: click.Context) -> Any:
        extra = super().get_help_extra(ctx)
        if self.must_give:
            extra["required"] = "required"
        return extra


@dataclasses.dataclass(frozen=True)
class _Parameter:
    leaf: Leaf
    key: str
    """The click parameter's Python name."""
    shown: str
    """`--option-name` or `ARGUMENT`: where an error says the value came from."""
    decorator: Callable


def _key(path: FieldPath) -> str:
    return "setting__" + "__".join(path)


def _parameter(leaf: Leaf, name: str, positional: bool, default: Any, must_give: bool) -> _Parameter:
    key = _key(leaf.path)
    item = _list_item(leaf.type)
    metavar = _metavar(leaf.type if item is None else item)
    if positional:
        shown = name.upper().replace("-", "_")
        many = item is not None
        return _Parameter(leaf, key, shown, click.argument(key, nargs=-1 if many else 1, required=False,
                                                           metavar=shown + ("..." if many else "")))
    shown, text = f"--{name}", leaf.help
    if item is not None:
        metavar += ",..." if _splits_at_commas(item) else ""
        text += " (repeatable)"
    decls = [f"{shown}/--no-{name}" if unwrap(leaf.type) is bool else shown, key]
    return _Parameter(leaf, key, shown, click.option(
        *decls, cls=_SettingOption, must_give=must_give, metavar=metavar, multiple=item is not None, help=text,
        type=None if unwrap(leaf.type) is bool else str,  # values are checked by the schema, not by click
        default=None if default is dataclasses.MISSING else default,
        show_default=not must_give and default not in ("", [])))


def _option_value(leaf: Leaf, value: Any) -> Any:
    item = _list_item(leaf.type)
    if item is None:
        return value if isinstance(value, bool) else _coerce(leaf.type, value)
    parts = [p for v in value for p in (v.split(",") if _splits_at_commas(item) else [v])]
    return [_coerce(item, p) for p in parts]


_CONFIG = click.option("--config", "settings_config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                       help="YAML mapping of settings, as in a recipe's stage entry (without name and kind); "
                            "options and --set override it.")


def _set_option(example: str) -> Callable:
    return click.option("--set", "settings_set", multiple=True, metavar="KEY=VALUE",
                        help=f"Set the setting at a dotted KEY to a YAML VALUE, e.g. --set {example}=... "
                             "(repeatable; applied last).")


# ---------------------------------------------------------------------------------------------- the decorator


def settings_options(cls: type, *, positional: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
                     required: tuple[str, ...] = (), defaults: dict[str, Any] | None = None,
                     fixed: dict[str, Any] | None = None) -> Callable:
    """Add `cls`'s fields as options (the `positional` ones as arguments, in that order), plus `--config` and
    `--set`, to a click command, which receives `settings`, an instance of `cls`, in their place.

    Fields are named by dotted path. `exclude`: no option for these fields or sections (still set through
    --config/--set). `required`: must be
    given although the field has a default (one a recipe fills from elsewhere). `defaults`: this command's own
    defaults. `fixed`: values the command sets itself; neither an option nor settable.
    """
    defaults, fixed = defaults or {}, fixed or {}
    all_leaves = leaves(cls)
    known = {leaf.dotted for leaf in all_leaves}
    sections = {leaf.path[:i] for leaf in all_leaves for i in range(1, len(leaf.path))}
    unknown = [n for n in (*positional, *exclude, *required, *defaults, *fixed) if n not in known]
    unknown = [n for n in unknown if n not in exclude or tuple(n.split(".")) not in sections]
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {unknown}")
    tree = defaults_tree(cls)
    for dotted, value in defaults.items():
        _put(tree, tuple(dotted.split(".")), value)
    ordered = [leaf for p in positional for leaf in all_leaves if leaf.dotted == p]
    ordered += [leaf for leaf in all_leaves if leaf.dotted not in positional]
    ordered = [leaf for leaf in ordered if leaf.dotted not in fixed and _metavar(_list_item(leaf.type) or leaf.type)
               and not any(leaf.path[: len(e.split("."))] == tuple(e.split(".")) for e in exclude)]
    # named among the fields that get an option only: excluding a section keeps the others' short names
    names = option_names([leaf.path for leaf in ordered])
    params = []
    for leaf in ordered:
        default = _lookup(tree, leaf.path)
        default = leaf.default if default is dataclasses.MISSING else default  # under a section that is None
        must_give = leaf.dotted in required or default is dataclasses.MISSING
        params.append(_parameter(leaf, names[leaf.path], leaf.dotted in positional, default, must_give))
    spec = _Spec(cls, tree, sections, {p.leaf.path: p.shown for p in params},
                 {tuple(k.split(".")): v for k, v in fixed.items()}, [tuple(r.split(".")) for r in required])

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def wrapper(*args: Any, settings_config: Path | None, settings_set: tuple[str, ...], **kwargs: Any) -> Any:
            source = click.get_current_context().get_parameter_source
            given = {p.leaf.path: _option_value(p.leaf, kwargs[p.key]) for p in params
                     if source(p.key) is ParameterSource.COMMANDLINE}
            for p in params:
                del kwargs[p.key]
            return command(*args, settings=spec.parse(given, settings_config, settings_set), **kwargs)

        for decorator in [_set_option(max(all_leaves, key=lambda leaf: len(leaf.path)).dotted), _CONFIG,
                          *(p.decorator for p in reversed(params))]:
            wrapper = decorator(wrapper)
        arguments = "".join(f"\n\n{p.shown}: {p.leaf.help}" for p in params if p.leaf.dotted in positional)
        if arguments and wrapper.__doc__:  # after the description, before a `\b` example block
            head, example, tail = inspect.cleandoc(wrapper.__doc__).partition("\n\n\b\n")
            wrapper.__doc__ = head + arguments + example + tail
        return wrapper

    return decorate


def given(dotted: str) -> bool:
    """Whether the running command's command line gives the setting `dotted` (its option, a `--set` of it or of a
    section holding it, or its --config file) rather than leaving it to its default: for a command whose default
    comes from what it works on (`eval grade`: the grader the folder was graded with)."""
    context = click.get_current_context()
    path = tuple(dotted.split("."))
    if context.get_parameter_source(_key(path)) is ParameterSource.COMMANDLINE:
        return True
    set_paths = [tuple(a.partition("=")[0].strip().split(".")) for a in context.params["settings_set"]]
    if any(path[: len(p)] == p for p in set_paths):
        return True
    config = context.params["settings_config"]
    return config is not None and _lookup(load_yaml(config)[0], path) is not dataclasses.MISSING


@dataclasses.dataclass(frozen=True)
class _Spec:
    """How one command reads its settings."""

    cls: type
    tree: dict[str, Any]
    """The defaults, as recipe data."""
    sections: set[FieldPath]
    """Paths of nested settings sections."""
    shown: dict[FieldPath, str]
    """The option or argument of each field that has one: errors about the field name it."""
    fixed: dict[FieldPath, Any]
    required: list[FieldPath]

    def parse(self, given: dict[FieldPath, Any], config_file: Path | None, assignments: tuple[str, ...]) -> Any:
        """The defaults, then the config file, the options given on the command line and `--set`, checked."""
        data = copy.deepcopy(self.tree)
        lines = Lines(str(config_file) if config_file else "command line")
        lines.by_path.update(self.shown)
        problems: list[str] = []
        try:
            if config_file:
                config, config_lines = load_yaml(config_file)
                config = resolve_references(config, config_lines, {"recipe_dir": str(config_file.resolve().parent)},
                                            lambda path: dataclasses.MISSING, problems, no_values=_NO_RECIPE)
                _merge(data, config, (), self.sections)
                lines.by_path.update(config_lines.by_path)
            for path, value in given.items():
                _put(data, path, value)
                lines.forget(path)  # the config's lines of a list the option replaces, `inputs[0]`, ...
                lines.by_path[path] = self.shown[path]
            for assignment in assignments:
                apply_override(data, lines, assignment)
        except RecipeError as e:
            raise SettingsError(problems + e.problems) from None
        # What the user gave, as it stands once everything is applied: the config's paths (less what an option or a
        # --set replaced), the options given and the --set paths; not the options' own entries, only for errors.
        by_user = {path for path, where in lines.by_path.items()
                   if path and (path in given or where != self.shown.get(path))}

        def touched(path: FieldPath) -> bool:  # given, or inside or around something given
            return any(p[: len(path)] == path or path[: len(p)] == p for p in by_user)

        def given_field(path: FieldPath) -> bool:
            # its own path, or a mapping --set gave whole that holds it; a config's section holding it has its path
            return path in by_user or (any(path[: len(p)] == p and lines.by_path[p] == "--set" for p in by_user)
                                       and _lookup(data, path) is not dataclasses.MISSING)

        problems += [lines.problem(path, "set by the command") for path in self.fixed if touched(path)]
        problems += [lines.problem(path, "missing required field") for path in self.required if not given_field(path)]
        for path, value in self.fixed.items():
            _put(data, path, value)
        settings = build(self.cls, data, (), lines, problems)
        if settings is not None:
            problems += [lines.problem(at, f"input not found: {value}")
                         for at, value, marker in input_paths(self.cls, settings, ())
                         if not isinstance(value, Unresolved)  # reported as the reference it is
                         and not Path(value).exists() and not marker.needs_no_file(value)]
        if problems:
            raise SettingsError(problems)
        return settings


_NO_RECIPE = ("no recipe to refer to: a --config file resolves only ${env:NAME}, ${env:NAME,default} and "
              "${recipe_dir} (its folder)")


def _merge(data: dict[str, Any], new: dict[str, Any], at: FieldPath, sections: set[tuple[str, ...]]) -> None:
    """Config values over the defaults: a nested settings section merges key by key, any other value replaces."""
    for key, value in new.items():
        if at + (key,) in sections and isinstance(value, dict) and isinstance(data.get(key), dict):
            _merge(data[key], value, at + (key,), sections)
        else:
            data[key] = value


class Command(click.Command):
    """A command whose `examples` (whole command lines, written once as data) end its --help, each wrapped to the
    help's width as a shell line continued with backslashes, so it can be pasted as shown."""

    def __init__(self, *args: Any, examples: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        header = "Examples:" if len(examples) > 1 else "Example:"
        shown = "\n".join([header, *map(_shell_lines, examples)])
        self.help = "\n\n".join([inspect.cleandoc(self.help or ""), "\b\n" + shown])


def _shell_lines(command: str, width: int = 112) -> str:
    """`command` indented and broken into lines of at most `width` characters, continued with backslashes. Not
    textwrap: it would break inside a quoted argument, where a backslash-newline is no continuation."""
    lines = ["  "]
    for word in re.findall(r"""(?:'[^']*'|"[^"]*"|\S)+""", command):
        if lines[-1].strip() and len(lines[-1]) + 1 + len(word) > width:
            lines.append("      ")
        lines[-1] += (" " if lines[-1].strip() else "") + word
    return " \\\n".join(lines)


class Group(click.Group):
    """A group whose subcommands take `examples` (see `Command`), as do its subgroups'."""

    command_class = Command


# Subgroups are plain `Group`s: click's `type` would give a DefaultCommandGroup's subgroup its required `default`.
Group.group_class = Group


class DefaultCommandGroup(Group):
    """A group whose `default` command needs no name: `swehero distill --tasks ...` is `swehero distill run ...`."""

    def __init__(self, *args: Any, default: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default = default

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = [self.default, *args]
        return super().parse_args(ctx, args)


def launcher_options(here: str, job: str) -> Callable:
    """`--launcher HERE|slurm`, `--sbatch OPTION` and `--submit`, named alike by every command that can write a
    Slurm job (`job` says what the job is) instead of running here."""
    options = [
        click.option("--launcher", type=click.Choice([here, "slurm"]), default=here, show_default=True,
                     help=f"Run on this machine, or write {job} instead (see --sbatch, --submit)."),
        # --sbatch-arg: the name `distill run` first had
        click.option("--sbatch", "--sbatch-arg", "sbatch_options", multiple=True, metavar="OPTION",
                     help="Extra #SBATCH option, e.g. --sbatch=--partition=batch (repeatable)."),
        click.option("--submit", is_flag=True, help="With --launcher slurm: submit the job with sbatch."),
    ]
    return lambda function: functools.reduce(lambda f, option: option(f), reversed(options), function)


def submit_if_asked(script: Path, submit: bool) -> str | None:
    """Say where the job script is and submit it if asked; returns the Slurm job id when it was submitted."""
    from swehero.slurm import submit as sbatch

    job = sbatch(script) if submit else None
    click.echo(f"wrote {script}; " + (f"submitted as Slurm job {job}" if job else f"submit it with: sbatch {shlex.quote(str(script))}"))
    return job
