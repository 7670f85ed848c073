"""The agent's opening messages (system prompt and task message): the built-in ones, or templates taken from the
training data, so that at evaluation the model reads exactly what it was trained on.

`extract` derives, from canonical trajectories (any importer's output), one template per stage (zero / hero): in
every trajectory's system and first user message it locates the per-task values (workspace path and name,
repository, instance id, base commit, the repository's language word) and replaces them with named fields; what
still varies between trajectories once they are removed is the problem statement (or, with a task file, whichever
task column it equals). A trajectory counts as covered only if its template, filled as the agent fills it (with the
trajectory's own values and problem statement: the task file's, else the text in the statement's place), gives back
its opening messages exactly. A template must cover at least 95% of its stage's trajectories; otherwise the error
names two trajectories that disagree, or one the template does not give back. Templates are stored as lists of text
and `{"field": name}` parts, so no text of the prompt can be mistaken for a placeholder.

Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
from collections import Counter
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from string import Template

from swehero.errors import InputError, few
from swehero.jsonio import existing_file

FORMAT = "swehero-prompts/1"
COVERAGE = 0.95
"""Share of a stage's trajectories a template must reproduce exactly."""
STAGES = {"zero": "zero", "exec": "hero"}
"""Agent mode -> the training stage whose template it uses."""
BUILTIN = "v3"
"""Version of the built-in prompts (`swehero/agent/prompts/*.v3.txt`). In exec mode they are OpenHands 0.54.0's own:
CodeActAgent's system prompt and its SWE-bench instruction (`swe_default.j2`), which the SWE-Hero teacher and the
paper's evaluation used; in zero mode they are ours (the paper's execution-free prompt is not published)."""
FIELDS = ("workspace", "workspace_name", "repo", "instance_id", "base_commit", "language", "problem_statement")
"""What a template may ask for, all known when the agent starts an attempt."""
_WORKSPACE = re.compile(r"/workspace/[^\s<>\"'`]+|/testbed\b")
_SHA = re.compile(r"\b[0-9a-f]{40}\b")
_LANGUAGE_WORD = re.compile(r"\bpython\b", re.IGNORECASE)


class PromptsError(InputError):
    """Trajectories no template can be taken from, or a prompts file an attempt cannot use."""


@dataclass(frozen=True)
class Opening:
    """The values a template is filled with for one attempt."""

    workspace: str
    repo: str
    instance_id: str
    base_commit: str
    problem_statement: str
    language: str = "python"

    def values(self) -> dict[str, str]:
        return {"workspace": self.workspace, "workspace_name": posixpath.basename(self.workspace.rstrip("/")),
                "repo": self.repo, "instance_id": self.instance_id, "base_commit": self.base_commit,
                "language": self.language, "problem_statement": self.problem_statement}


# ------------------------------------------------------------------------------------------------ rendering


def opening_messages(prompts_file: str, mode: str, opening: Opening) -> tuple[list[dict], str]:
    """The system and task messages for an attempt in `mode`, and the prompts' identity (the file's sha256, or
    `builtin-v3`) for the trajectory's metadata."""
    if not prompts_file:
        values = {**opening.values(), "language": opening.language.lower()}
        return [{"role": "system", "content": _builtin("system", mode, values)},
                {"role": "user", "content": _builtin("task", mode, values)}], f"builtin-{BUILTIN}"
    template = read_template(prompts_file, mode)
    return [{"role": "system", "content": fill(template["system"], opening)},
            {"role": "user", "content": fill(template["task"], opening)}], digest(prompts_file)


def read_template(prompts_file: str, mode: str) -> dict:
    """The template a prompts file holds for `mode`, checked: runs call this before their first attempt, so a file
    that is not one fails the run in one line instead of every attempt."""
    try:
        data = json.loads(existing_file(prompts_file).read_text())
    except json.JSONDecodeError as e:
        raise PromptsError(f"{prompts_file}: not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("templates"), dict):
        raise PromptsError(f"{prompts_file}: not a prompts file (format {FORMAT}, as `swehero agent prompts extract` "
                           "writes)")
    stage = STAGES[mode]
    if stage not in data["templates"]:
        raise PromptsError(f"{prompts_file} has no template for {mode} mode (it needs {stage} trajectories; it has "
                           f"{', '.join(data['templates'])})")
    template = data["templates"][stage]
    for kind in ("system", "task"):
        parts = template.get(kind) if isinstance(template, dict) else None
        if not isinstance(parts, list) or not all(isinstance(p, str) or isinstance(p, dict) and p.get("field") in FIELDS
                                                  for p in parts):
            raise PromptsError(f"{prompts_file}: templates.{stage}.{kind}: not a list of text and {{\"field\": F}} "
                               f"parts, F one of {', '.join(FIELDS)}")
    return template


def fill(parts: list, opening: Opening) -> str:
    values = opening.values()
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif part["field"] == "language":  # written as the training data wrote its language word
            out.append(_cased(opening.language, part.get("case", "lower")))
        else:
            out.append(values[part["field"]])
    return "".join(out)


def digest(prompts_file: str) -> str:
    return "sha256:" + hashlib.sha256(Path(prompts_file).read_bytes()).hexdigest()


def builtin_templates() -> list[str]:
    """The built-in templates, unfilled (the tiny tokenizer learns their words: every trajectory's prompt has them)."""
    return [_builtin_template(kind, mode) for mode in STAGES for kind in ("system", "task")]


def _builtin(kind: str, mode: str, values: dict[str, str]) -> str:
    # OpenHands strips its system prompt, and jinja drops a template's last newline
    return Template(_builtin_template(kind, mode)).substitute(values).strip()


def _builtin_template(kind: str, mode: str) -> str:
    return resources.files("swehero.agent").joinpath("prompts", f"{kind}_{mode}.{BUILTIN}.txt").read_text()


def _cased(language: str, case: str) -> str:
    return {"lower": language.lower(), "title": language, "upper": language.upper()}[case]


# ------------------------------------------------------------------------------------------------ extraction


def extract_files(trajectory_files: list[str], out: Path, tasks_file: str = "", progress=print) -> dict:
    """`extract` over canonical trajectory files (and, optionally, their task file), written to `out`. A task file
    with none of the trajectories' instances is refused (it is not theirs); one lacking some is said, in one line:
    then every problem statement is taken from the trajectories, as without a task file."""
    from swehero.data.sources import iter_trajectories  # training data's format, checked as the importers check it
    from swehero.jsonio import write_json_atomic

    records = [_opening(r) for path in trajectory_files for r in iter_trajectories(Path(path))]
    if not records:
        raise PromptsError(f"no trajectories in {', '.join(trajectory_files)}")
    tasks = {}
    if tasks_file:
        from swehero.rollout.tasks import load_tasks

        tasks = {t["instance_id"]: t for t in load_tasks(tasks_file)}
        instances = list(dict.fromkeys(r["instance_id"] for r in records if r["instance_id"]))
        lacking = [iid for iid in instances if iid not in tasks]
        if lacking and len(lacking) == len(instances):
            raise PromptsError(f"{tasks_file}: has none of the {len(instances)} instance(s) of the trajectories "
                               f"({few(instances)}): not their task file")
        if lacking:
            # every statement found one way: rows' statements for some and the messages' for others made two shapes
            # of one task message, and no template covered 95% of them
            progress(f"warning: {tasks_file} lacks {len(lacking)} of the {len(instances)} instances of the "
                     f"trajectories ({few(lacking)}): the problem statements are taken from the trajectories, as "
                     "without --tasks")
            tasks = {iid: {k: v for k, v in row.items() if k != "problem_statement"} for iid, row in tasks.items()}
    prompts = {**extract(records, tasks), "sources": [str(p) for p in trajectory_files]}
    write_json_atomic(Path(out), prompts, indent=1)
    return prompts


def _opening(record: dict) -> dict:
    """What `extract` reads of a trajectory (its ids, stage and opening messages), not the whole episode: training
    data runs to tens of GB."""
    firsts = [next((m for m in record["messages"] if m["role"] == role), None) for role in ("system", "user")]
    return {**{k: record.get(k) for k in ("id", "instance_id", "repo", "stage")},
            "messages": [m for m in firsts if m is not None]}


def summary(prompts: dict) -> list[str]:
    """One line per stage: how many trajectories its template covers, and its fields."""
    return [f"{stage}: the template covers {t['covered']} of {t['trajectories']} trajectories "
            f"({t['covered'] / t['trajectories']:.1%}); fields: {', '.join(t['fields'])}"
            for stage, t in prompts["templates"].items()]


def extract(records: list[dict], tasks: dict[str, dict] | None = None) -> dict:
    """Templates of the opening messages of `records`, one per stage (records without a stage count as hero)."""
    by_stage: dict[str, list[dict]] = {}
    for record in records:
        by_stage.setdefault(record.get("stage") or "hero", []).append(record)
    templates = {}
    for stage, group in sorted(by_stage.items()):
        system = _template([_first(r, "system") for r in group], group, tasks or {}, False)
        task = _template([_first(r, "user") for r in group], group, tasks or {}, True)
        templates[stage] = {"system": system, "task": task, "trajectories": len(group),
                            "covered": _covered(system, task, group, tasks or {}),
                            "fields": sorted({p["field"] for p in system + task if isinstance(p, dict)})}
    return {"format": FORMAT, "templates": templates}


def _covered(system: list, task: list, records: list[dict], tasks: dict[str, dict]) -> int:
    """How many of `records` the templates give back exactly; fewer than 95% is an error naming one they do not."""
    missed = [r["id"] for r in records if not _reproduces(system, task, r, tasks)]
    if len(records) - len(missed) < math.ceil(len(records) * COVERAGE):
        raise PromptsError(f"the template gives back the opening messages of only {len(records) - len(missed)} of "
                           f"{len(records)} trajectories (e.g. not those of {missed[0]})")
    return len(records) - len(missed)


def _reproduces(system: list, task: list, record: dict, tasks: dict[str, dict]) -> bool:
    """Whether the templates, filled as the agent fills them for this trajectory's task (Task.language is title
    case), give back its system and task messages exactly."""
    texts = _first(record, "system"), _first(record, "user")
    known = dict(pair for text in texts for pair in _known_values(record, text, tasks))
    opening = Opening(known.get("workspace", ""), known.get("repo", ""), known.get("instance_id", ""),
                      known.get("base_commit", ""), "", "Python")
    statement = tasks.get(record["instance_id"], {}).get("problem_statement")
    if statement is None:
        statement = _text_in_place_of_statement(task, texts[1], opening)
    if statement is None:
        return False
    opening = replace(opening, problem_statement=statement)
    return (fill(system, opening), fill(task, opening)) == texts


def _text_in_place_of_statement(parts: list, text: str, opening: Opening) -> str | None:
    """What `text` holds where `parts` has the problem statement ("" if it has none), or None if `text` does not
    follow `parts` around it."""
    at = next((i for i, p in enumerate(parts) if isinstance(p, dict) and p["field"] == "problem_statement"), None)
    if at is None:
        return ""
    before, after = fill(parts[:at], opening), fill(parts[at + 1:], opening)
    if len(before) + len(after) > len(text) or not (text.startswith(before) and text.endswith(after)):
        return None
    return text[len(before): len(text) - len(after)]


def _first(record: dict, role: str) -> str:
    """The system prompt or the task message (the first user message) of a trajectory."""
    found = next((m for m in record["messages"] if m["role"] == role), None)
    if found is None:
        raise PromptsError(f"trajectory {record['id']} has no {role} message")
    return found["content"]


def _known_values(record: dict, text: str, tasks: dict[str, dict]) -> list[tuple[str, str]]:
    """(field, value) pairs of one trajectory found in its text, longest value first."""
    task = tasks.get(record["instance_id"], {})
    found: dict[str, str] = {}
    workspace = _WORKSPACE.search(text)
    if workspace:
        found["workspace"] = workspace.group(0).rstrip(".,:;)")
        found["workspace_name"] = posixpath.basename(found["workspace"])
    commits = set(_SHA.findall(text))
    if task.get("base_commit") or len(commits) == 1:
        found["base_commit"] = task.get("base_commit") or commits.pop()
    for field in ("instance_id", "repo"):
        if record.get(field) or task.get(field):
            found[field] = record.get(field) or task.get(field)
    if task.get("problem_statement"):
        found["problem_statement"] = task["problem_statement"]
    return sorted(((f, v) for f, v in found.items() if v and v in text), key=lambda fv: -len(fv[1]))


def _parts(text: str, values: list[tuple[str, str]], language: bool) -> list:
    """`text` as a list of text and field parts, each known value replaced wherever it occurs (and, in a task
    message, the language word)."""
    parts: list = [text]
    for field, value in values:
        out: list = []
        for part in parts:
            if not isinstance(part, str):
                out.append(part)
                continue
            pieces = part.split(value)
            for i, piece in enumerate(pieces):
                if i:
                    out.append({"field": field})
                out.append(piece)
        parts = out
    parts = [p for p in parts if p != ""]
    return _language_slot(parts) if language else parts


def _language_slot(parts: list) -> list:
    """The first whole word `python` of the text names the repository's language: a field, so a Multilingual task
    reads its own language there and the rest word for word."""
    for i, part in enumerate(parts):
        if isinstance(part, str) and (m := _LANGUAGE_WORD.search(part)):
            word = m.group(0)
            case = "lower" if word.islower() else "upper" if word.isupper() else "title"
            return parts[:i] + [part[: m.start()], {"field": "language", "case": case},
                                part[m.end():]] + parts[i + 1:]
    return parts


def _template(texts: list[str], records: list[dict], tasks: dict[str, dict], language: bool) -> list:
    """The template most of `texts` follow once their known values are fields."""
    shapes = [_parts(text, _known_values(r, text, tasks), language) for text, r in zip(texts, records)]
    keys = [json.dumps(shape) for shape in shapes]
    shape, count = Counter(keys).most_common(1)[0]
    if count / len(keys) >= COVERAGE:
        return json.loads(shape)
    return _with_varying_part(shapes, records, tasks)


def _with_varying_part(shapes: list[list], records: list[dict], tasks: dict[str, dict]) -> list:
    """The template when one part of the text still varies between trajectories: what lies between the text
    before and after it that (at least 95% of) them share. When a majority shares more of the text around it than
    95% do, the trajectories follow different templates, and the error names two that disagree."""
    flat = [_flatten(shape) for shape in shapes]
    prefix, suffix = _common_ends(flat, COVERAGE)
    majority_prefix, majority_suffix = _common_ends(flat, 0.5)
    if len(majority_prefix.strip()) > len(prefix.strip()) or len(majority_suffix.strip()) > len(suffix.strip()):
        follows = [f.startswith(majority_prefix) and f.endswith(majority_suffix) for f in flat]
        raise PromptsError(f"no template covers {COVERAGE:.0%} of the trajectories (the commonest covers "
                           f"{sum(follows)} of {len(flat)}): {records[follows.index(True)]['id']} and "
                           f"{records[follows.index(False)]['id']} disagree")
    prefix, suffix = _statement_whitespace_given_back(prefix, suffix)
    middles = [f[len(prefix): len(f) - len(suffix)] for f in flat]
    name = _name_of_varying_part(middles, records, tasks)
    return _unflatten(prefix) + [{"field": name}] + _unflatten(suffix)


def _statement_whitespace_given_back(prefix: str, suffix: str) -> tuple[str, str]:
    """The text around the varying part less the whitespace that belongs to the problem statements: the agent fills
    in a raw statement, whose own whitespace the trajectories carry too (SWE-bench's end in a line break). Which
    whitespace is the template's the trajectories cannot tell when (nearly) all statements share it, so the template
    keeps the one line break that puts the statement on lines of its own (as OpenHands' templates place it), and
    the indentation of the text after it; any other whitespace next to it is the statement's."""
    run = prefix[len(prefix.rstrip()):]
    if "\n" in run:
        prefix = prefix[: len(prefix) - len(run) + run.index("\n") + 1]
    run = suffix[: len(suffix) - len(suffix.lstrip())]
    if "\n" in run:
        suffix = suffix[run.rindex("\n"):]
    return prefix, suffix


_MARK = "\x00"


def _flatten(parts: list) -> str:
    """Parts as one string with fields as `\\0name[:case]\\0` (NUL never occurs in prompts)."""
    return "".join(p if isinstance(p, str) else f"{_MARK}{p['field']}:{p.get('case', '')}{_MARK}" for p in parts)


def _unflatten(text: str) -> list:
    out: list = []
    for i, piece in enumerate(text.split(_MARK)):
        if i % 2:
            field, case = piece.split(":")
            out.append({"field": field, **({"case": case} if case else {})})
        elif piece:
            out.append(piece)
    return out


def _common_ends(texts: list[str], share: float) -> tuple[str, str]:
    """Longest prefix and suffix shared by more than `share` of `texts` (at least 95%: that many), cut back to
    whitespace (a varying part starts and ends at a word boundary, so a problem statement that happens to begin
    like another stays whole)."""
    need = math.ceil(len(texts) * share) if share >= COVERAGE else len(texts) // 2 + 1

    def shared(strings: list[str]) -> str:
        best = ""
        for candidate in Counter(strings).most_common(3):  # anchor on the commonest texts
            text = candidate[0]
            lo, hi = 0, len(text)
            while lo < hi:  # the longest prefix of `text` that `need` strings start with
                mid = (lo + hi + 1) // 2
                if sum(s.startswith(text[:mid]) for s in strings) >= need:
                    lo = mid
                else:
                    hi = mid - 1
            best = max(best, text[:lo], key=len)
        return best

    prefix = shared(texts)
    prefix = prefix[: max((prefix.rfind(c) for c in " \n\t"), default=-1) + 1]
    suffix = shared([t[len(prefix):][::-1] for t in texts])[::-1]
    cut = min((i for i in (suffix.find(c) for c in " \n\t") if i >= 0), default=len(suffix))
    return prefix, suffix[cut:]


def _name_of_varying_part(middles: list[str], records: list[dict], tasks: dict[str, dict]) -> str:
    """The varying part is the problem statement: the one per-task text the trajectories carry with no column of
    their own. With a task file it is checked against the tasks' problem statements."""
    statements = {iid: row["problem_statement"] for iid, row in tasks.items() if "problem_statement" in row}
    wrong = [r["id"] for m, r in zip(middles, records)
             if r["instance_id"] in statements and m.strip() != statements[r["instance_id"]].strip()]
    if wrong:
        raise PromptsError(f"the part of the task message that varies between trajectories is not the task's "
                           f"problem statement (e.g. in {wrong[0]})")
    return "problem_statement"
