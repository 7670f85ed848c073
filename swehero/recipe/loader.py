"""Read a recipe YAML into plain data, remembering the line of every value, then apply `--set` overrides and
resolve `${...}` references.

Errors are `RecipeError`s whose lines read `file:line: field.path: message`, the way compilers report, so an
editor can jump to them. Each value's location is kept in a `Lines` map from field path to line.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from pathlib import Path
from typing import Any, Callable

import yaml

FieldPath = tuple[str | int, ...]


class RecipeError(Exception):
    """One or more problems with a recipe, each already formatted as `file:line: field: message`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def suggest(name: str, options: list[str]) -> str:
    """The nearest of `options` to a mistyped `name`, or all of them when none is near."""
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f" (valid: {', '.join(options)})"


def format_path(path: FieldPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "<root>"


class Lines:
    """Where each value came from: `file:line`, or `--set` for command-line overrides."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.by_path: dict[FieldPath, str] = {}
        self.written: dict[FieldPath, str] = {}
        """Values written with a `${...}` reference, as written (resolved since): a message about such a value
        shows what to change, e.g. which environment variable to set."""

    def forget(self, path: FieldPath) -> None:
        """Drop the locations at and under `path`, whose value was replaced: they would be blamed for the
        problems of the value that replaced it."""
        for stale in [p for p in self.by_path if p[: len(path)] == path]:
            del self.by_path[stale]

    def where(self, path: FieldPath) -> str:
        # Fall back to the nearest enclosing value that has a location (e.g. a missing field -> its section).
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.by_path:
                return self.by_path[path[:cut]]
        return self.file

    def problem(self, path: FieldPath, message: str) -> str:
        return f"{self.where(path)}: {format_path(path)}: {message}"


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-5` as a float (YAML 1.1 wants `1.0e-5`; people write `1e-5`)."""


# The mantissa needs a digit (`1e5`, `1.e5`, `.5e5`), as in YAML 1.2: `-e5` or `.e5` stay strings.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _construct(loader: _Loader, node: yaml.Node, where: str) -> Any:
    """A scalar's value. One that looks like a date but is none (`2020-13-45`) raises ValueError: say where."""
    try:
        return loader.construct_object(node)
    except ValueError as e:
        raise RecipeError([f"{where}: cannot read {node.value!r}: {e} (quote it to keep it a string)"]) from None


_MERGE = "tag:yaml.org,2002:merge"


def _pairs(node: yaml.MappingNode, path: FieldPath, lines: Lines, loader: _Loader,
           inside: frozenset[int]) -> list[tuple[str, yaml.Node]]:
    """A mapping's keys and value nodes, its YAML merge keys (`<<: *anchor`, `<<: [*a, *b]`) replaced by the pairs
    they merge in, merged first, as the YAML spec says: the mapping's own keys win, then the earlier of the merged
    mappings. Not PyYAML's `flatten_mapping`: it rewrites the nodes in place (an anchored node is walked again
    wherever it is aliased), and 6.0.4's tells keys apart by the `id()` of their text, so which of `<<: [{run: a},
    {run: b}]` wins depends on Python interning the string."""
    own: list[tuple[str, yaml.Node]] = []
    sources: list[yaml.Node] = []
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE:
            sources += value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            continue
        where = f"{lines.file}:{key_node.start_mark.line + 1}"
        key = _construct(loader, key_node, f"{where}: {format_path(path)}")
        if not isinstance(key, str):
            raise RecipeError([f"{where}: keys must be strings, got {key!r}"])
        if any(key == k for k, _ in own):
            raise RecipeError([f"{where}: {format_path(path + (key,))}: duplicate key"])
        own.append((key, value_node))
    merged: list[tuple[str, yaml.Node]] = []
    for source in sources:
        if not isinstance(source, yaml.MappingNode):
            raise RecipeError([f"{lines.file}:{source.start_mark.line + 1}: {format_path(path)}: `<<` merges a mapping "
                               f"or a list of mappings, got a {source.id}"])
        _not_inside(source, inside, path, lines)
        have = {k for k, _ in own + merged}
        merged += [(key, value) for key, value in _pairs(source, path, lines, loader, inside | {id(source)})
                   if key not in have]
    return merged + own


def _to_data(node: yaml.Node, path: FieldPath, lines: Lines, loader: _Loader,
             inside: frozenset[int] = frozenset()) -> Any:
    """The data of `node`, at `path`; `inside`: the collections it is in (an alias of one of them never ends)."""
    _not_inside(node, inside, path, lines)
    lines.by_path[path] = f"{lines.file}:{node.start_mark.line + 1}"
    inside |= {id(node)}
    if isinstance(node, yaml.MappingNode):
        # a merged value keeps the line it is written on (the anchor's), under the path it is merged into
        return {key: _to_data(value, path + (key,), lines, loader, inside)
                for key, value in _pairs(node, path, lines, loader, inside)}
    if isinstance(node, yaml.SequenceNode):
        return [_to_data(item, path + (i,), lines, loader, inside) for i, item in enumerate(node.value)]
    return _construct(loader, node, f"{lines.by_path[path]}: {format_path(path)}")


def _not_inside(node: yaml.Node, inside: frozenset[int], path: FieldPath, lines: Lines) -> None:
    if id(node) in inside:  # `a: &x [*x]`: YAML allows it, as data it is endless
        raise RecipeError([f"{lines.file}:{node.start_mark.line + 1}: {format_path(path)}: an alias of the anchor it "
                           "is inside (the value would contain itself)"])


def load_yaml(file: Path) -> tuple[dict[str, Any], Lines]:
    lines = Lines(str(file))
    try:
        text = file.read_text()
    except OSError as e:
        raise RecipeError([f"{file}: cannot read recipe: {e.strerror}"]) from None
    except UnicodeDecodeError as e:
        line = file.read_bytes()[:e.start].count(b"\n") + 1
        raise RecipeError([f"{file}:{line}: not UTF-8 text (byte {e.object[e.start]:#04x})"]) from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = {} if node is None else _to_data(node, (), lines, loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark else ""
        context = f" ({e.context} at line {e.context_mark.line + 1})" if e.context and e.context_mark else ""
        raise RecipeError([f"{file}{line}: YAML syntax error: {e.problem}{context}"]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise RecipeError([f"{file}:1: a recipe is a mapping of fields, got {type(data).__name__}"])
    return data, lines


# ---------------------------------------------------------------------------------------------- bases


def merge_base(base: dict[str, Any], base_lines: Lines, variant: dict[str, Any], lines: Lines) -> dict[str, Any]:
    """A variant recipe (`base: other.yaml`) on top of its base: mappings merge key by key, stages merge by
    name (a variant's stage updates the base's stage of that name, new ones are appended), other values are
    replaced. Each value keeps the file and line it came from."""
    merged_lines = dict(base_lines.by_path)

    def merge(old: Any, new: Any, path: FieldPath, new_path: FieldPath) -> Any:
        if isinstance(old, dict) and isinstance(new, dict):
            out = dict(old)
            for key, value in new.items():
                out[key] = merge(old.get(key), value, path + (key,), new_path + (key,))
            return out
        if path == ("stages",) and isinstance(old, list) and isinstance(new, list):
            out = list(old)
            names = [s.get("name") if isinstance(s, dict) else None for s in old]
            for j, stage in enumerate(new):
                name = stage.get("name") if isinstance(stage, dict) else None
                i = names.index(name) if name in names else len(out)
                if i == len(out):
                    out.append(None)
                out[i] = merge(out[i], stage, path + (i,), new_path + (j,))
            return out
        # Replaced: forget the base's locations under this value, take the variant's.
        for key in [k for k in merged_lines if k[: len(path)] == path]:
            del merged_lines[key]
        for key, where in lines.by_path.items():
            if key[: len(new_path)] == new_path:
                merged_lines[path + key[len(new_path):]] = where
        return new

    data = merge(base, {k: v for k, v in variant.items() if k != "base"}, (), ())
    lines.by_path = merged_lines
    return data


# ---------------------------------------------------------------------------------------------- overrides


def apply_override(data: dict[str, Any], lines: Lines, assignment: str) -> None:
    """Apply one `--set a.b.c=value`. In `stages`, a part may be a stage name or an index (`stages.5` or, as
    problems are reported, `stages[5]`)."""
    key, eq, raw = assignment.partition("=")
    if not eq or not key:
        raise RecipeError([f"--set {assignment}: expected KEY=VALUE, e.g. stages.sft_zero.optimizer.lr=3e-5"])
    loader = _Loader(raw)
    try:
        parsed = loader.get_single_node()  # the value is YAML, so 3, 1e-5, true, [a, b] have their types
        if (parsed.end_mark.index if parsed else 0) < len(raw.rstrip()):
            # YAML read ` #...` as a comment; in a value it is text (`description=run #2`), as Hydra reads it
            if parsed is not None and not (isinstance(parsed, yaml.ScalarNode) and parsed.style is None):
                raise RecipeError([f"--set {assignment}: ` #` starts a YAML comment after a list or mapping: quote "
                                   "the text that holds it (`[a, 'b #2']`)"])
            value = _plain(raw.strip())
        else:
            value = None if parsed is None else loader.construct_document(parsed)
    except (yaml.YAMLError, ValueError) as e:
        reason = getattr(e, "problem", None) or str(e)  # a MarkedYAMLError's `problem` is the one-line reason
        raise RecipeError([f"--set {assignment}: the value is not YAML: {reason} (quote it to keep it a string)"]) from None
    finally:
        loader.dispose()
    parts = re.sub(r"\[(\d+)\]", r".\1", key).split(".")
    node: Any = data
    path: FieldPath = ()
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            index = _list_index(node, part)
            if index is None:
                names = [s.get("name") for s in node if isinstance(s, dict)]
                raise RecipeError([f"--set {key}: no item {part!r} in {format_path(path)} (have {names})"])
            part = index
        elif not isinstance(node, dict):
            hint = ""
            if isinstance(node, str) and (reference := re.fullmatch(r"\$\{([^:}]+)\}", node.strip())):
                hint = (f" but {node.strip()}, a reference: set {reference[1]}.{'.'.join(parts[i:])} (every section "
                        f"that refers to it changes), or {format_path(path)} whole")
            raise RecipeError([f"--set {key}: {format_path(path)} is not a mapping{hint}"])
        path += (part,)
        if last:
            node[part] = value
            lines.forget(path)  # the file's lines for what the value replaced
        else:
            if isinstance(node, dict) and part not in node:
                node[part] = {}
                lines.by_path[path] = "--set"  # a key the override made up is reported there, not in the recipe
            node = node[part]
    lines.by_path[path] = "--set"


def _list_index(items: list[Any], part: str) -> int | None:
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    if part.isdigit() and int(part) < len(items):
        return int(part)
    return None


# ---------------------------------------------------------------------------------------------- references

_TOKEN = re.compile(r"\$\$\{|\$\{|\}")
"""What `_parse` looks for: `$${` (the text `${`), `${` (a reference opens) and `}` (the innermost open one closes)."""
_SHELL_NAME = re.compile(r"[A-Z_][A-Z0-9_]*\b")


@dataclasses.dataclass
class _Ref:
    """One `${...}` of a value: its text and the references nested in it, and the reference as written."""

    parts: list[str | _Ref]
    written: str


def _parse(text: str) -> list[str | _Ref]:
    """`text` as its literal parts and references, innermost ones inside the others (`${env:A,${env:B}/x}`). `$${`
    is the text `${` (bash's `${VAR}` in a command). ValueError for a `${` that no `}` closes."""
    open_refs: list[tuple[list[str | _Ref], int]] = [([], 0)]  # the parts of the value, then of each open reference
    at = 0
    for token in _TOKEN.finditer(text):
        parts = open_refs[-1][0]
        parts.append(text[at:token.start()])
        at = token.end()
        if token[0] == "$${":
            parts.append("${")
        elif token[0] == "${":
            open_refs.append(([], token.start()))
        elif len(open_refs) > 1:
            inner, start = open_refs.pop()
            open_refs[-1][0].append(_Ref([p for p in inner if p], text[start:at]))
        else:
            parts.append("}")  # not in a reference: text
    if len(open_refs) > 1:
        raise ValueError(f"{text[open_refs[1][1]:]!r}: a `${{` that no `}}` closes (`$${{` writes the text `${{`)")
    return [p for p in open_refs[0][0] + [text[at:]] if p]


def substitute(value: Any, name: str, text: str) -> Any:
    """`value` with every `${name}` in it replaced by `text`, other references left as written. `${` not after a `$`
    is a reference, as `_parse` reads it."""
    ref = re.compile(r"(?<!\$)\$\{\s*" + re.escape(name) + r"\s*\}")
    if isinstance(value, dict):
        return {k: substitute(v, name, text) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, name, text) for v in value]
    return ref.sub(lambda _: text, value) if isinstance(value, str) else value


class Unresolved(str):
    """A value whose reference could not be resolved: already reported, so the schema accepts it as any type
    (its problem would otherwise be reported twice, as the reference's and as a wrong type)."""


def resolve_references(data: dict[str, Any], lines: Lines, builtins: dict[str, Any],
                       default_of: Callable[[FieldPath], Any], problems: list[str], *,
                       no_values: str | None = None,
                       as_given: Callable[[FieldPath, dict[str, Any]], dict[str, Any]] | None = None
                       ) -> dict[str, Any]:
    """Replace `${a.b}` (another value of the recipe, stages addressed by name), `${env:NAME}` and
    `${env:NAME,default}` everywhere; references nested in one (`${env:A,${env:B}/x}`) first, and `$${` by the text
    `${`. A value that is exactly one reference keeps the referenced value's type, and an environment variable that
    is the whole value is read as a YAML scalar (`seed: ${env:SEED,7}` is an int); references inside longer strings
    are substituted as text. `builtins` supplies computed values such as `${recipe_dir}` and `${stages.NAME.dir}`
    (which may themselves hold references). `default_of(path)` gives the value of a setting the recipe leaves out,
    `dataclasses.MISSING` if the path names no setting, or raises KeyError saying why it has none; `as_given(path,
    section)` a section the recipe writes at `path` as the setting gets it (the rest of it from its default).
    `no_values`: where `${a.b}` cannot name another value (settings read outside a recipe), why, reported for each
    such reference. Every reference that cannot be resolved is appended to `problems` and its value left
    `Unresolved`, so that the rest is still checked."""

    def lookup(expr: str, at: FieldPath, active: tuple[str, ...], whole: bool) -> Any:
        if not expr:
            raise KeyError("${}: an empty reference")
        if expr.startswith("env:"):
            name, comma, default = expr[4:].partition(",")
            if name in os.environ:
                text = os.environ[name]
            elif comma:
                text = default
            else:
                raise KeyError(f"environment variable {name} is not set (use ${{env:{name},default}} for a default)")
            return _scalar(text, expr) if whole else text
        if expr in active:
            raise KeyError(f"reference cycle: {' -> '.join(active + (expr,))}")
        if expr in builtins:
            return resolve(builtins[expr], at, active + (expr,))
        if no_values is not None:
            raise KeyError(f"${{{expr}}}: {no_values}")
        node: Any = data
        ref_path: FieldPath = ()
        for part in expr.split("."):
            if isinstance(node, list):
                index = _list_index(node, part)
                if index is None:
                    names = [n for item in node if isinstance(item, dict) and isinstance(n := item.get("name"), str)]
                    raise KeyError(f"${{{expr}}}: no item {part!r} in {format_path(ref_path)}" + suggest(part, names))
                node = node[index]
                ref_path += (index,)
            elif isinstance(node, dict) and part in node:
                node = node[part]
                ref_path += (part,)
            else:
                # Left out of the recipe, a setting still has the value its default gives it.
                try:
                    node = default_of(ref_path + (part,)) if isinstance(node, dict) else dataclasses.MISSING
                except KeyError as e:
                    raise KeyError(f"${{{expr}}}: {format_path(ref_path + (part,))} {e.args[0]}") from None
                if node is dataclasses.MISSING:
                    shell = _SHELL_NAME.match(expr) if not ref_path else None
                    hint = (f" (a shell variable? write ${expr} or $${{{expr}}})" if shell and shell[0] == expr else
                            f" (a shell variable? write $${{{expr}}})" if shell else "")
                    raise KeyError(f"${{{expr}}}: {format_path(ref_path + (part,))} does not exist{hint}")
                ref_path += (part,)
        value = resolve(node, ref_path, active + (expr,))
        # a section is what its own stage gets, not only what the recipe writes: another stage that refers to it
        # would lay it over its own field's default (an eval's agent), which may differ
        return as_given(ref_path, value) if as_given and isinstance(value, dict) else value

    def reference(ref: _Ref, at: FieldPath, active: tuple[str, ...], failed: list[str], whole: bool) -> Any:
        nested: list[str] = []
        expr = text(ref.parts, at, active, nested).strip()
        if expr.startswith("env:") and expr[4:].partition(",")[0] in os.environ:
            nested = []  # the variable is set: its default, and what that failed on, is not used
        if nested:
            failed += nested
            return Unresolved(ref.written)
        try:
            return lookup(expr, at, active, whole)
        except KeyError as e:
            failed.append(str(e.args[0]))
            return Unresolved(ref.written)

    def text(parts: list[str | _Ref], at: FieldPath, active: tuple[str, ...], failed: list[str]) -> str:
        return "".join(p if isinstance(p, str) else str(reference(p, at, active, failed, whole=False)) for p in parts)

    def resolve(value: Any, at: FieldPath, active: tuple[str, ...]) -> Any:
        if isinstance(value, dict):
            return {k: resolve(v, at + (k,), active) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, at + (i,), active) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value
        failed: list[str] = []  # every bad reference of the value, not only the first
        try:
            parts = _parse(value)
        except ValueError as e:
            parts, failed = [], [str(e)]
        if any(isinstance(p, _Ref) for p in parts):
            lines.written.setdefault(at, value)
        if len(parts) == 1 and isinstance(parts[0], _Ref):
            resolved = reference(parts[0], at, active, failed, whole=True)
        else:
            resolved = text(parts, at, active, failed)
        for message in failed:
            problem = lines.problem(at, message)
            if problem not in problems:
                problems.append(problem)
        return Unresolved(value) if failed else resolved

    return resolve(data, (), ())


def _scalar(text: str, expr: str) -> Any:
    """An environment value read as the recipe would read it written in place of the reference: `7` an int, `1e-5`
    a float, `true` a bool. Read as one plain scalar, not parsed as YAML text, so that `a: b`, `[x` or `x #y` stay
    the text they are; but a value that starts with a quote is one quoted YAML scalar, a string without its quotes
    (`REV='"0123"'` keeps an all-digit revision the string 0123)."""
    if not text:
        return text  # `${env:NAME,}` is how a recipe writes "empty" (a required revision): not YAML's null
    if text[0] in "'\"":
        return _quoted(text, expr)
    try:
        return _plain(text)
    except ValueError as e:  # a date that is none, `2020-13-45`
        raise KeyError(f"${{{expr}}}: cannot read {text!r}: {e}") from None


def _plain(text: str) -> Any:
    """`text` as one plain YAML scalar, `#` and `: ` included: `7` an int, `1e-5` a float, `run #2` a string."""
    loader = _Loader("")
    try:
        return loader.construct_object(yaml.ScalarNode(loader.resolve(yaml.ScalarNode, text, (True, False)), text))
    finally:
        loader.dispose()


def _quoted(text: str, expr: str) -> str:
    """The string a quoted YAML scalar (`"0123"`, `'it''s'`) writes; anything else (`"a": b`, `"open`) is an error."""
    loader = _Loader(text)
    reason = ""
    try:
        node = loader.get_single_node()
        if isinstance(node, yaml.ScalarNode) and node.style == text[0]:
            return node.value
    except yaml.MarkedYAMLError as e:
        reason = f": {e.problem}"
    finally:
        loader.dispose()
    raise KeyError(f"${{{expr}}}: cannot read {text!r}: not one quoted string{reason}")
