"""The recipe: one root config flowing top-down. `load_recipe` reads, overrides, resolves and validates it,
and raises one `RecipeError` listing every problem before any stage runs."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import sys
import sysconfig
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swehero.recipe import kinds
from swehero.recipe.loader import (FieldPath, Lines, RecipeError, apply_override, format_path, load_yaml,
                                   merge_base, resolve_references, substitute, suggest)
from swehero.recipe.schema import as_data, build, check, field_default, input_paths, laid_over, section_class
from swehero.recipe.stage import ModelConfig

_STAGE_KEYS = ("name", "kind", "needs")

STAGE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
"""A stage name is its folder under `run_dir` and a segment of `${stages.NAME.…}`: no `.`, `/`, or empty name,
which would reach (and, on a rerun, empty) a folder outside the stage's own."""


@dataclass
class Stage:
    """One entry of `stages`: the generic keys plus the kind's own settings (all other keys of the entry)."""

    name: str
    kind: str
    needs: list[str]
    settings: Any
    """An instance of the kind module's `Settings` dataclass."""
    inputs: list[str] = field(default_factory=list)
    """Absolute paths of everything the stage reads (its InputPath settings, and the model if it uses it)."""
    lines: Lines | None = field(default=None, repr=False, compare=False)
    """Where the recipe sets each value (the whole recipe's), for messages about this stage's settings."""
    at: FieldPath = ()
    """The stage entry's path in the recipe, `("stages", i)`."""

    def problem(self, setting: tuple[str, ...], message: str) -> str:
        """`file:line: stage NAME: setting: message`, the recipe's own form, naming the reference the setting was
        written with (`${env:NAME,}`: the variable to set) when it was one."""
        path = self.at + setting
        where = self.lines.where(path) if self.lines else "<recipe>"
        written = self.lines.written.get(path) if self.lines else None
        return (f"{where}: stage {self.name}: {format_path(setting)}: {message}"
                + (f" (the recipe writes it as {written})" if written else ""))


@dataclass
class Recipe:
    """A whole experiment. Top-level keys of the YAML file."""

    name: str
    """Short name of the experiment."""
    run_dir: str
    """Where every stage writes, as `run_dir/<stage>/`. Relative paths are relative to the working directory."""
    stages: list[Stage]
    """Stages in the order they run (dependencies first)."""
    seed: int = 1234
    """Seed of the stages that draw at random (those that use it: see docs/recipes.md); every stage records it."""
    model: ModelConfig | None = None
    """Base checkpoint and tokenizer, for stages that use the model."""
    description: str = ""
    """Free text shown by `recipe show`."""
    file: str = ""
    """The recipe file this was read from (set by the loader)."""

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)


def find_recipe(name_or_path: str) -> Path:
    """A recipe file path, or a bundled recipe's name (`tiny-cpu`): looked up in the source tree's `recipes/`
    (editable installs) and in `share/swehero/recipes` where pip put the data files (wheel installs): under the
    install scheme's data folder, which is not `sys.prefix` for Debian's and NGC's system Python (`/usr/local`,
    prefix `/usr`)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    stem = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    installed = dict.fromkeys(Path(prefix) / "share/swehero/recipes"
                              for prefix in (sysconfig.get_path("data"), sys.prefix))
    for folder in (Path(__file__).resolve().parents[2] / "recipes", *installed):
        if (folder / stem).exists():
            return folder / stem
    raise RecipeError([f"{name_or_path}: no such recipe file (and no bundled recipe of that name)"])


def read_recipe_data(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any], Lines]:
    """The recipe's YAML with its `base:` chain merged in (see `merge_base`)."""
    data, lines = load_yaml(path)
    # each file's own folder, before a variant's values are merged over it: a base's data lies beside the base
    data = substitute(data, "recipe_dir", str(path.resolve().parent))
    if "base" not in data:
        return data, lines
    if not isinstance(data["base"], str):
        raise RecipeError([lines.problem(("base",), "must be the path or name of a recipe")])
    base_path = path.parent / data["base"]
    if not base_path.exists():
        try:
            base_path = find_recipe(data["base"])
        except RecipeError:
            raise RecipeError([lines.problem(("base",), f"no recipe {data['base']!r} (a path relative to this "
                                                        "file, or a bundled recipe's name)")]) from None
    if base_path.resolve() in seen:
        raise RecipeError([lines.problem(("base",), f"recipes form a cycle through {base_path}")])
    base, base_lines = read_recipe_data(base_path, seen + (path.resolve(),))
    misnamed = _stages_not_in_base(base, data, lines)
    if misnamed:
        raise RecipeError(misnamed)
    merged = merge_base(base, base_lines, data, lines)
    if "run_dir" not in data:  # inherited, the variant's stages would empty and overwrite the base run's folders
        merged.pop("run_dir", None)
        lines.by_path[("run_dir",)] = str(path)  # reported missing in the variant, not at its base's first line
    return merged, lines


def _stages_not_in_base(base: dict[str, Any], variant: dict[str, Any], lines: Lines) -> list[str]:
    """A variant's stage entry without a `kind` changes a stage of its base (a new stage needs one): naming no stage
    of the base, it is a mistyped name, which merging would append as a new stage missing its kind."""
    base_stages = base.get("stages")
    names = [s.get("name") for s in base_stages if isinstance(s, dict)] if isinstance(base_stages, list) else []
    entries = variant.get("stages") if names and isinstance(variant.get("stages"), list) else []
    return [
        lines.problem(("stages", j, "name"), f"no stage {entry['name']!r} in the base recipe" + suggest(entry["name"], names))
        for j, entry in enumerate(entries)
        if isinstance(entry, dict) and "kind" not in entry and isinstance(entry.get("name"), str)
        and entry["name"] not in names
    ]


def load_recipe(file: str | Path, overrides: tuple[str, ...] = ()) -> Recipe:
    path = find_recipe(str(file))
    data, lines = read_recipe_data(path)
    problems: list[str] = []
    for assignment in overrides:
        try:
            apply_override(data, lines, assignment)
        except RecipeError as e:
            problems += e.problems
    raw_stages = data.get("stages")
    names = [s.get("name") for s in raw_stages if isinstance(s, dict)] if isinstance(raw_stages, list) else []
    builtins = {"recipe_dir": str(path.resolve().parent)}
    builtins.update({f"stages.{n}.dir": f"${{run_dir}}/{n}" for n in names if isinstance(n, str)})
    missing = [key for key in ("name", "run_dir", "stages") if key not in data]
    data = resolve_references(data, lines, builtins, functools.partial(_default_setting, data), problems,
                              as_given=functools.partial(_section_as_given, data))
    # reported once, as missing, not again at every reference to it (a variant's tiny-cpu has 36 to run_dir)
    problems = [p for p in problems if not any(f"${{{key}}}: {key} does not exist" in p for key in missing)]

    top = {f.name for f in dataclasses.fields(Recipe)} - {"file"}
    for key in data:
        if key not in top:
            problems.append(lines.problem((key,), "unknown field" + suggest(key, sorted(top))))
    for key in missing:
        problems.append(lines.problem((key,), "missing required field" + (
            " (a variant sets its own: sharing its base's, it would overwrite that run's stages)"
            if key == "run_dir" else "")))
    hints = typing.get_type_hints(Recipe, include_extras=True)
    header = {k: v for k, v in data.items() if k in top and k != "stages"}
    values = {k: check(hints[k], v, (k,), lines, problems) for k, v in header.items()}
    problems += _run_dir_problems(values.get("run_dir"), lines)
    stages = _build_stages(data.get("stages", []), lines, problems)
    # a `stages` that is no list is reported by _build_stages: there is no graph to check
    problems += _check_graph(stages, data["stages"] if isinstance(data.get("stages"), list) else [], lines)
    if problems:
        raise RecipeError(problems)
    recipe = Recipe(stages=stages, file=str(path), **values)
    # last: it needs every setting, and the inputs it finds inside other stages' folders add dependencies
    _check_inputs(recipe, lines)
    recipe.stages = _in_dependency_order(recipe.stages)
    return recipe


def _run_dir_problems(run_dir: Any, lines: Lines) -> list[str]:
    """An empty `run_dir` (an empty environment variable) would put the stage folders in the working directory, and
    `${stages.NAME.dir}` at `/NAME`; a file holds no stage folders. Missing or no string, it is reported as such."""
    if not isinstance(run_dir, str):
        return []
    if not run_dir.strip():
        written = lines.written.get(("run_dir",))
        return [lines.problem(("run_dir",), "is empty" + (f" (the recipe writes it as {written})" if written else "")
                              + ": name the folder of the run's stages")]
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        return [lines.problem(("run_dir",), f"{run_dir} is a file, not the folder of the run's stages")]
    return []


def _default_setting(data: dict[str, Any], path: FieldPath) -> Any:
    """What a stage gets for a setting its entry leaves out, as recipe data (see `_setting`).
    `dataclasses.MISSING` if the path names no setting of the stage's kind; KeyError if the setting has no default."""
    found = _setting(data, path)
    if found is None:
        return dataclasses.MISSING
    if found[0] is dataclasses.MISSING:
        raise KeyError("is not set in the recipe (no default)")
    return found[0]


def _section_as_given(data: dict[str, Any], path: FieldPath, given: dict[str, Any]) -> dict[str, Any]:
    """A section the recipe writes (in part) at `path` as its stage gets it: over its field's default, as
    `schema.build` lays it. Any other mapping is what the recipe writes."""
    found = _setting(data, path)
    if found is None or found[1] is None or not isinstance(found[0], dict):
        return given
    return laid_over(found[1], found[0], given)


def _setting(data: dict[str, Any], path: FieldPath) -> tuple[Any, type | None] | None:
    """The default of a stage setting, as recipe data (`dataclasses.MISSING` if it has none), and the section class
    it holds (None if it holds none): `path` is `("stages", i, field, ...)` with all but its last part in the
    recipe. A part of a section takes the section's default (the field's, which may differ from the class's:
    distill's `agent`), as `schema.build` fills it. None if the path names no setting of the stage's kind."""
    if len(path) < 3 or path[0] != "stages" or not isinstance(path[1], int):
        return None
    kind = data["stages"][path[1]].get("kind")
    if not isinstance(kind, str) or kind not in kinds.KINDS:
        return None
    cls: type | None = kinds.load_kind(kind).Settings
    default: Any = dataclasses.MISSING  # the default of the section walked into, as data
    for part in path[2:]:
        f = _init_fields(cls).get(part) if cls is not None else None
        if f is None:
            return None
        if isinstance(default, dict) and part in default:
            default = default[part]
        else:  # the outermost field, or one inside a section whose default is None
            default = field_default(f)
            default = default if default is dataclasses.MISSING else as_data(default)
        cls = section_class(typing.get_type_hints(cls, include_extras=True)[part])
    return default, cls


def _init_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _build_stages(raw: Any, lines: Lines, problems: list[str]) -> list[Stage]:
    if not isinstance(raw, list):
        problems.append(lines.problem(("stages",), f"expected a list of stages, got {type(raw).__name__}"))
        return []
    if not raw:
        problems.append(lines.problem(("stages",), "is empty: a recipe has at least one stage"))
    stages: list[Stage] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        at = ("stages", i)
        if not isinstance(entry, dict):
            problems.append(lines.problem(at, "expected a mapping with name and kind"))
            continue
        name, kind, needs = entry.get("name"), entry.get("kind"), entry.get("needs", [])
        for key in ("name", "kind"):
            if not isinstance(entry.get(key), str):
                problems.append(lines.problem(at + (key,), "missing required field" if key not in entry else "must be a string"))
        if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
            problems.append(lines.problem(at + ("needs",), "must be a list of stage names"))
            needs = []
        if not isinstance(name, str) or not isinstance(kind, str):
            continue
        if not STAGE_NAME.fullmatch(name):
            problems.append(lines.problem(at + ("name",), f"{name!r} is not a stage name: use letters, digits, "
                                                          "'_' and '-' (not first)"))
        elif name in seen:
            problems.append(lines.problem(at + ("name",), f"duplicate stage name {name!r}"))
        seen.add(name)
        if kind not in kinds.KINDS:
            problems.append(lines.problem(at + ("kind",), f"unknown stage kind {kind!r}" + suggest(kind, sorted(kinds.KINDS))))
            continue
        module = kinds.load_kind(kind)
        settings_data = {k: v for k, v in entry.items() if k not in _STAGE_KEYS}
        settings = build(module.Settings, settings_data, at, lines, problems)
        stages.append(Stage(name, kind, list(needs), settings, lines=lines, at=at))
    return stages


def _check_graph(stages: list[Stage], raw: list[Any], lines: Lines) -> list[str]:
    """Problems with `needs`: names of no stage, and cycles. `stages` are those of the `raw` entries whose name and
    kind were good; a need may name any entry (one with a bad kind is reported as that)."""
    at = {e["name"]: ("stages", i) for i, e in enumerate(raw) if isinstance(e, dict) and isinstance(e.get("name"), str)}
    names = list(at)
    problems = []
    for stage in stages:
        for j, need in enumerate(stage.needs):
            if need not in names:
                problems.append(lines.problem(at[stage.name] + ("needs", j), f"no stage named {need!r}" + suggest(need, names)))
            elif need == stage.name:
                problems.append(lines.problem(at[stage.name] + ("needs", j), "a stage cannot need itself"))
    # needs already reported (no such stage, the stage itself) are left out of the cycle search
    built = {s.name for s in stages}
    cycle = _find_cycle({s.name: [n for n in s.needs if n in built and n != s.name] for s in stages})
    if cycle:
        problems.append(lines.problem(at[cycle[0]] + ("needs",), f"dependency cycle: {' -> '.join(cycle)}"))
    return problems


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return trail[trail.index(nxt):] + [node, nxt] if nxt in trail else [node, nxt]
            if nxt not in state and (found := visit(nxt, trail + [node])):
                return found
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (found := visit(node, [])):
            return found
    return None


def _check_inputs(recipe: Recipe, lines: Lines) -> None:
    """Every input path exists, is produced by another stage (which then becomes a dependency), or is a hub id
    where the field allows one. What another stage makes is followed through that stage's fingerprint, which
    changes whenever it reruns, not through its files: those may link out of `run_dir` (a download's links into
    the hub cache), and logs, `wandb sync` or a checkpoint pruned by hand change them without changing the result."""
    run_dirs = {Path(os.path.abspath(recipe.run_dir)), Path(recipe.run_dir).resolve()}
    stage_dirs = {s.name: [d / s.name for d in run_dirs] for s in recipe.stages}
    problems: list[str] = []
    for i, stage in enumerate(recipe.stages):
        module = kinds.load_kind(stage.kind)
        hints = typing.get_type_hints(type(stage.settings), include_extras=True)
        found = [
            hit
            for f in dataclasses.fields(stage.settings)
            for hit in input_paths(hints[f.name], getattr(stage.settings, f.name), ("stages", i, f.name))
        ]
        if getattr(module, "USES_MODEL", False) and recipe.model is not None:
            found += input_paths(ModelConfig, recipe.model, ("model",))
        for at, value, marker in found:
            absolute = Path(os.path.abspath(value))
            resolved = absolute.resolve()
            producer = next((n for n, dirs in stage_dirs.items() if n != stage.name
                             for path in (absolute, resolved) for d in dirs if path.is_relative_to(d)), None)
            if producer:
                if producer not in stage.needs:
                    stage.needs.append(producer)
                continue
            if not resolved.exists():
                if marker.needs_no_file(value):
                    continue  # resolved by the hub client at run time
                problems.append(lines.problem(at, f"input not found: {value}"))
                continue
            stage.inputs.append(str(resolved))
    if problems:
        raise RecipeError(problems)
    cycle = _find_cycle({s.name: s.needs for s in recipe.stages})
    if cycle:
        at = ("stages", [s.name for s in recipe.stages].index(cycle[0]))
        raise RecipeError([lines.problem(at, f"dependency cycle through input paths: {' -> '.join(cycle)}")])


def _in_dependency_order(stages: list[Stage]) -> list[Stage]:
    """Topological order that keeps the written order wherever dependencies allow."""
    done: list[Stage] = []
    pending = list(stages)
    while pending:
        ready = next(s for s in pending if all(n in {d.name for d in done} for n in s.needs))
        done.append(ready)
        pending.remove(ready)
    return done
