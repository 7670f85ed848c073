"""Turn plain recipe data into typed dataclasses, collecting every problem with its file:line:field.

Why dataclasses and not pydantic: each stage owns its settings as a plain dataclass beside the code that uses
it (torchtitan's style), with no extra dependency; the checks a recipe needs (unknown keys with a suggestion,
required fields, types, literals, nested sections) fit in this one small module, and its errors carry the YAML
line of every field, which pydantic's locations would not.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from typing import Annotated, Any, Literal, Union

from swehero.recipe.loader import FieldPath, Lines, Unresolved, suggest
from swehero.recipe.stage import Range, _Input


def build(cls: type, data: Any, path: FieldPath, lines: Lines, problems: list[str]) -> Any:
    """Build dataclass `cls` from `data`; append problems instead of raising, so a user sees all of them."""
    if not isinstance(data, dict):
        problems.append(lines.problem(path, f"expected a mapping, got {_describe(data)}"))
        return None
    before = len(problems)
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            problems.append(lines.problem(path + (key,), "unknown field" + suggest(key, list(fields))))
            continue
        section, default = section_class(hints[key]), field_default(fields[key])
        if section is not None and isinstance(value, dict) and dataclasses.is_dataclass(default):
            # a section written in part keeps the rest of its field's default (distill's `agent` is SWE-Zero's,
            # not the class's), as a command line's options and `--config` do
            value = laid_over(section, as_data(default), value)
        kwargs[key] = check(hints[key], value, path + (key,), lines, problems)
    for name, f in fields.items():
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(lines.problem(path + (name,), "missing required field"))
    if len(problems) > before:
        return None
    built = cls(**kwargs)
    if not any(isinstance(value, Unresolved) for value in kwargs.values()):  # already reported
        problems += [lines.problem(path + (name if isinstance(name, tuple) else (name,)), message)
                     for name, message in cross_field_problems(built)]
    return built


def cross_field_problems(settings: Any) -> list[tuple[str | FieldPath, str]]:
    """(field, message) for values a dataclass says do not go together (`min_lr` above `lr`): its optional
    `cross_field_problems()` method, which a value's own type and range cannot tell. The field may be a path
    within the dataclass (a key of a mapping field), so that the problem is found at that key's line."""
    method = getattr(settings, "cross_field_problems", None)
    return method() if method else []


def check(tp: Any, value: Any, path: FieldPath, lines: Lines, problems: list[str]) -> Any:
    """Check (and lightly coerce: int -> float) one value against a type annotation."""
    if isinstance(value, Unresolved):
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        before = len(problems)
        value = check(args[0], value, path, lines, problems)
        for marker in args[1:]:
            # only a value of the right type has a range to check
            if isinstance(marker, Range) and len(problems) == before and (problem := marker.problem(value)):
                problems.append(lines.problem(path, problem))
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return check(options[0], value, path, lines, problems)
        for option in options:
            trial: list[str] = []
            result = check(option, value, path, lines, trial)
            if not trial:
                return result
        problems.append(lines.problem(path, f"expected {_name(tp)}, got {_describe(value)}"))
        return value
    if origin is Literal:
        if value not in args:
            problems.append(lines.problem(path, f"must be one of {list(args)}, got {value!r}"))
        return value
    if origin is list:
        if not isinstance(value, list):
            problems.append(lines.problem(path, f"expected a list, got {_describe(value)}"))
            return value
        return [check(args[0], v, path + (i,), lines, problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(lines.problem(path, f"expected a mapping, got {_describe(value)}"))
            return value
        for key in value:  # a key a `--set` gave (`env={1: x}`): a file's are strings (`loader._pairs`)
            wrong: list[str] = []
            check(args[0], key, path, lines, wrong)
            if wrong:
                problems.append(lines.problem(path, f"key {key!r}: expected {_name(args[0])}, got {_describe(key)}"))
        return {k: check(args[1], v, path + (k,), lines, problems) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path, lines, problems)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        problems.append(lines.problem(path, f"expected {_name(tp)}, got {_describe(value)}"))
    return value


def input_paths(tp: Any, value: Any, path: FieldPath) -> list[tuple[FieldPath, str, _Input]]:
    """Every value in `value` typed as an input path (see `swehero.recipe.stage.InputPath`)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        marker = next((a for a in args[1:] if isinstance(a, _Input)), None)
        if marker and isinstance(value, str):
            return [(path, value, marker)] if value else []  # empty: the optional input is not used
        return input_paths(args[0], value, path)
    if origin in (Union, types.UnionType):
        return [hit for a in args if a is not type(None) for hit in input_paths(a, value, path)][:1]
    if origin is list and isinstance(value, list):
        return [hit for i, v in enumerate(value) for hit in input_paths(args[0], v, path + (i,))]
    if dataclasses.is_dataclass(tp) and value is not None:
        hints = typing.get_type_hints(tp, include_extras=True)
        return [
            hit
            for f in dataclasses.fields(tp)
            for hit in input_paths(hints[f.name], getattr(value, f.name), path + (f.name,))
        ]
    return []


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__


def field_default(f: dataclasses.Field) -> Any:
    """A field's default value (its factory's product), or `dataclasses.MISSING`."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def as_data(value: Any) -> Any:
    """A default as recipe data: dataclasses as mappings, other values copied."""
    if dataclasses.is_dataclass(value):
        return {f.name: as_data(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    return copy.deepcopy(value)


def laid_over(cls: type, default: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Data of section `cls`: `given` over `default`, section by section (any other value, a mapping too, is
    replaced whole)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    merged = dict(default)
    for key, value in given.items():
        section = section_class(hints[key]) if key in hints else None
        if section is not None and isinstance(value, dict) and isinstance(default.get(key), dict):
            value = laid_over(section, default[key], value)
        merged[key] = value
    return merged


def section_class(tp: Any) -> type | None:
    """The dataclass a field holds (`X` or `X | None`), if it holds one."""
    tp = unwrap(tp)
    return tp if dataclasses.is_dataclass(tp) else None


def unwrap(tp: Any) -> Any:
    """`Annotated[X, ...]` and `X | None` -> X."""
    tp = without_none(tp)
    return unwrap(typing.get_args(tp)[0]) if typing.get_origin(tp) is Annotated else tp


def without_none(tp: Any) -> Any:
    """`X | None` -> X."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return options[0] if len(options) == 1 else tp
    return tp
