"""The paper's trajectory filters: named rules, applied per stage, each counted in `filter_report.json`.

Every rule reads only the canonical trajectory (messages, patch, metadata) and, for the test-file rule, the task's
test patch (from `metadata.test_files`, written by `swehero distill`, or from a task file). A trajectory is dropped
by the first rule it violates, in the order of RULES; the report also counts every rule's violations on its own,
so the effect of each rule is visible whatever the order. One without an assistant turn, which a distill run
commits for an episode that ended before its first, is dropped as `no_assistant_turn` before any rule runs. Rules
named in `skip` do not run, and the report says so.

`resolved_only` grades run tests, hours of them for a release's trajectories: each grade is committed to an
append-only log (`Grades`) the moment it is made, so a filter that is killed or stopped goes on where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from swehero.agent.loop import KEEP_GOING, LoopConfig
from swehero.data.select import Selection
from swehero.errors import InputError
from swehero.gitdiff import patch_files
from swehero.jsonio import JsonlLog, JsonlLogReader
from swehero.recipe.stage import InputPath, Range
from swehero.rollout.local_grader import LocalGraderConfig
from swehero.rollout.tasks import canonical_digest

STAGES = ("zero", "hero")
UNRESOLVED = "unresolved"
GRADES = "grades.jsonl"
"""The log of `resolved_only`'s grades in the output folder."""


@dataclass
class FilterConfig:
    """How trajectories are filtered."""

    stage: Literal["zero", "hero"] = "zero"
    """zero: SWE-Zero rules (adds the banned-command rule); hero: SWE-Hero rules."""
    max_steps: Annotated[int, Range(min=1)] = LoopConfig.max_steps
    """Assistant turns allowed (the agent's step limit, the paper's 100); an episode that ended at the limit is
    dropped too."""
    max_editor_errors: Annotated[int, Range(min=1)] = 3
    """Drop trajectories with this many `str_replace_editor` errors or more (the paper: 3)."""
    resolved_only: bool = False
    """hero only: keep only rollouts whose patch resolves the task (graded locally when not yet graded). The paper
    does NOT filter on this; off by default."""
    tasks: InputPath = ""
    """Task file: test files of each task's test patch (else `metadata.test_files`), and grading for
    `resolved_only`."""
    repos: str = ""
    """Folder of task repositories (`owner__name`) for grading; empty: `repos/` beside the task file. A plain path,
    as the rollout stages' `repos`: fingerprinting every file of every checkout on each plan would take minutes."""
    grading: LocalGraderConfig = field(default_factory=LocalGraderConfig)
    """How `resolved_only` grades: the task environments (install recipe, test dependencies, Python), or an
    interpreter to test with as it is, and the test timeout."""
    skip: list[Literal[SKIPPABLE]] = field(default_factory=list)
    """Rules not to run, listed in the report as skipped: `touches_test_files` where no test patch is known (the
    released datasets carry none)."""
    per_instance: Annotated[int, Range(min=1)] | None = None
    """Of the trajectories that pass the rules, keep at most this many per task (a seeded choice, as the import's
    selection; empty: all)."""
    limit: Annotated[int, Range(min=1)] | None = None
    """Of those, keep at most this many in all, after `per_instance` (a seeded choice; empty: all)."""
    seed: int | None = None
    """Seeds the selection; empty: the recipe's seed (1234 from the command line)."""

    def selection(self, seed: int = Selection.seed) -> Selection:
        """The selection among the trajectories that pass the rules; `seed` where the settings name none."""
        return Selection(self.per_instance, self.limit, seed if self.seed is None else self.seed)


def _assistant_turns(record: dict) -> list[dict]:
    return [m for m in record["messages"] if m["role"] == "assistant"]


def _calls(record: dict) -> list[dict]:
    return [c["function"] for m in _assistant_turns(record) for c in m.get("tool_calls") or []]


def _arguments(fn: dict) -> dict:
    args = fn.get("arguments")
    try:
        args = json.loads(args) if isinstance(args, str) else args
    except json.JSONDecodeError:
        return {}
    return args if isinstance(args, dict) else {}


def ran_banned_command(record: dict, cfg: FilterConfig) -> bool:
    """Some `execute_bash` call would run a banned program (python, pytest, pip, ...), by the same parser the
    execution-free runtime refuses commands with; a command it refuses for another reason (bash could not parse it,
    its program is computed at run time) counts as banned too. So does a trajectory whose metadata says the runtime
    refused a banned command (`banned`, `banned_commands`): what bash ran may differ from what was typed (history
    expansion, `!!:1` or `^echo^pytest`), and the runtime judged what would have run."""
    from swehero.agent.banned import RefusedCommand, banned_commands

    meta = record.get("metadata") or {}
    if meta.get("banned") or meta.get("banned_commands"):
        return True
    for fn in _calls(record):
        command = _arguments(fn).get("command")
        if fn["name"] != "execute_bash" or not isinstance(command, str):
            continue
        try:
            if banned_commands(command):
                return True
        except RefusedCommand:
            return True
    return False


def over_step_limit(record: dict, cfg: FilterConfig) -> bool:
    """More than `max_steps` assistant turns, or the episode was stopped by the step limit."""
    return (len(_assistant_turns(record)) > cfg.max_steps
            or (record.get("metadata") or {}).get("finish_reason") == "step_limit")


def empty_patch(record: dict, cfg: FilterConfig) -> bool:
    """The final patch is missing or blank."""
    return not (record.get("patch") or "").strip()


def touches_test_files(record: dict, cfg: FilterConfig, test_files: list[str]) -> bool:
    """The patch modifies a file that the task's test patch touches."""
    return bool(set(patch_files(record.get("patch") or "")) & set(test_files))


def not_one_tool_call(record: dict, cfg: FilterConfig) -> bool:
    """Some assistant turn makes zero tool calls or several. Our agent leaves an empty reply out of the
    conversation, but the message that answers it (`KEEP_GOING`) stays and marks that turn."""
    return (any(len(m.get("tool_calls") or []) != 1 for m in _assistant_turns(record))
            or any(m["role"] == "user" and m["content"].startswith(KEEP_GOING) for m in record["messages"]))


def editor_errors(record: dict) -> int:
    """Tool results of `str_replace_editor` calls that are errors (OpenHands and our agent start them `ERROR`)."""
    names: dict[str, str] = {}
    pending: list[str] = []  # names of the latest assistant turn's calls, for results without a tool_call_id
    count = 0
    for m in record["messages"]:
        if m["role"] == "assistant":
            calls = m.get("tool_calls") or []
            names.update({c.get("id"): c["function"]["name"] for c in calls if c.get("id")})
            pending = [c["function"]["name"] for c in calls]
        elif m["role"] == "tool":
            name = m.get("name") or names.get(m.get("tool_call_id")) or (pending.pop(0) if pending else "")
            count += name == "str_replace_editor" and (m.get("content") or "").lstrip().startswith("ERROR")
    return count


def too_many_editor_errors(record: dict, cfg: FilterConfig) -> bool:
    """`max_editor_errors` or more `str_replace_editor` calls failed."""
    return editor_errors(record) >= cfg.max_editor_errors


def unresolved(record: dict, cfg: FilterConfig) -> bool:
    """The patch does not resolve the task (only with `resolved_only`)."""
    return record.get("resolved") is not True


@dataclass(frozen=True)
class Rule:
    name: str
    stages: tuple[str, ...]
    check: Callable[..., bool]
    needs_test_files: bool = False

    @property
    def doc(self) -> str:
        return " ".join(self.check.__doc__.split())


RULES = [
    Rule("banned_command", ("zero",), ran_banned_command),
    Rule("step_limit", STAGES, over_step_limit),
    Rule("empty_patch", STAGES, empty_patch),
    Rule("touches_test_files", STAGES, touches_test_files, needs_test_files=True),
    Rule("not_one_tool_call", STAGES, not_one_tool_call),
    Rule("editor_errors", STAGES, too_many_editor_errors),
    Rule(UNRESOLVED, ("hero",), unresolved),
]
SKIPPABLE = tuple(r.name for r in RULES if r.name != UNRESOLVED)
"""The rules `skip` may name (`unresolved` is `resolved_only`'s to turn on)."""
DUPLICATE = "duplicate"
"""Last rule, over the survivors of the others."""
DUPLICATE_DOC = "Identical (messages and patch) to a trajectory kept earlier."
NO_ASSISTANT_TURN = "no_assistant_turn"
"""First rule, before the others: a distill run commits an episode that ended before the teacher's first turn (its
task's problem statement past the context, a time limit), so that a resume does not make it again and again."""
NO_ASSISTANT_TURN_DOC = ("Has no assistant turn: the episode ended before the teacher's first reply (e.g. the task "
                         "did not fit the context). Dropped by this rule alone: the others judge a conversation.")
UNGRADED = "ungraded"
"""With `resolved_only`: a trajectory the grader could not judge, dropped from this run's output only."""
UNGRADED_DOC = ("The local grader could not tell whether it resolves the task (the task's environment or checkout "
                "failed, not the patch); not kept in grades.jsonl, so the next run grades it again.")


def fingerprint(record: dict) -> str:
    body = json.dumps([record["messages"], record.get("patch") or ""], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def grade_key(task: dict, patch: str, grading: LocalGraderConfig) -> str:
    """A fingerprint of what decides a grade: the task's entry, the patch and the grading settings."""
    return canonical_digest([task, patch, dataclasses.asdict(grading)])


def _by_key(line: dict) -> str:
    return line["key"]


def logged_grades(log: Path) -> dict[str, bool]:
    """The grades a `grades.jsonl` holds, by `grade_key`, read without changing the file (none if there is none)."""
    records = JsonlLogReader(log, key=_by_key).records() if Path(log).exists() else {}
    return {key: line["resolved"] for key, line in records.items()}


class Grades:
    """`resolved_only`'s grades by `grade_key`: each one graded is appended to `log` (when given; flushed and fsynced
    line by line) before the filter goes on, and one whose key is there is reused, not graded again. A changed task
    entry, patch or grading setting changes the key, so it is graded again, never given a stale grade."""

    def __init__(self, log: Path | None = None) -> None:
        self.log = JsonlLog(log, key=_by_key) if log is not None else None  # opened first: a torn line goes
        self.known = logged_grades(log) if log is not None else {}
        self.counts = Counter()

    def resolved(self, record: dict, task: dict, cfg: FilterConfig) -> bool | None:
        """Whether `record`'s patch resolves `task`: a grade made before, else the local grader's, logged; None when
        the grader could not tell, which is neither logged nor kept: the environment's failure, graded again by the
        next run (once the environment is mended), not a verdict on the patch."""
        patch = record.get("patch") or ""
        key = grade_key(task, patch, cfg.grading)
        if key in self.known:
            self.counts["reused"] += 1
            return self.known[key]
        resolved, failure = _run_grader(task, patch, cfg)
        if failure:
            self.counts["failed"] += 1
            print(f"  {task['instance_id']} ({record.get('id')}): not graded: {failure}", flush=True)
            return None
        if self.log is not None:
            self.log.append({"key": key, "instance_id": task["instance_id"], "id": record.get("id"),
                             "resolved": resolved})
        self.known[key] = resolved
        self.counts["graded"] += 1
        print(f"  {task['instance_id']} ({record.get('id')}): {'resolved' if resolved else 'not resolved'}", flush=True)
        return resolved


def active_rules(cfg: FilterConfig) -> list[Rule]:
    if cfg.stage not in STAGES:
        raise InputError(f"filter stage must be one of {', '.join(STAGES)}, got {cfg.stage!r}")
    if cfg.resolved_only and cfg.stage != "hero":
        raise InputError("resolved_only applies to the hero stage only")
    applicable = [r for r in RULES if cfg.stage in r.stages and (r.name != UNRESOLVED or cfg.resolved_only)]
    _check_skip(cfg, {r.name for r in applicable})
    return [r for r in applicable if r.name not in cfg.skip]


def _check_skip(cfg: FilterConfig, applicable: set[str]) -> None:
    """Raise `InputError` for a name in `skip` that is no rule of this stage: skipping it would skip nothing."""
    wrong = [name for name in cfg.skip if name not in SKIPPABLE or name not in applicable]
    if wrong:
        raise InputError(f"skip: {', '.join(map(repr, wrong))} is no rule of the {cfg.stage} stage that can be "
                         f"skipped ({', '.join(n for n in SKIPPABLE if n in applicable)})")


def filter_trajectories(records: Iterable[dict], cfg: FilterConfig, keep: Callable[[dict], None],
                        drop: Callable[[dict], None], grades: Grades | None = None) -> dict:
    """Hand each record to `keep`, or its drop entry (the rule, and every rule it violates) to `drop`, one record at
    a time: a distillation's trajectories can be far larger than memory. Returns the report. With `resolved_only`,
    a record not graded yet is graded (its tests run) only if it passes every other rule and repeats none kept, so
    `unresolved` counts violations among the graded only; `check_gradable` over the same records first names every
    task grading would lack before any is graded. `grades`: those made before, and where to log the new ones
    (default: none, and no log)."""
    rules = active_rules(cfg)
    grades = grades if grades is not None else Grades()
    tasks = _tasks(cfg.tasks)
    seen, kept_tasks = set(), set()
    first_hit, violations, counts = Counter(), Counter(), Counter()
    for record in records:
        counts["input"] += 1
        hits = _hits(record, rules, cfg, tasks, seen, grades)
        violations.update(hits)
        if hits:
            first_hit[hits[0]] += 1
            counts["dropped"] += 1
            drop({"id": record.get("id"), "instance_id": record["instance_id"], "rule": hits[0],
                  "violates": hits})
        else:
            counts["kept"] += 1
            kept_tasks.add(record["instance_id"])
            keep(record)

    def counted(name: str, doc: str) -> dict:
        return {"name": name, "doc": doc, "dropped": first_hit[name], "violations": violations[name]}

    report = {
        "stage": cfg.stage, "input": counts["input"], "kept": counts["kept"], "dropped": counts["dropped"],
        "rules": [counted(NO_ASSISTANT_TURN, NO_ASSISTANT_TURN_DOC)] + [counted(r.name, r.doc) for r in rules]
                 + [counted(name, doc) for name, doc in ((DUPLICATE, DUPLICATE_DOC), (UNGRADED, UNGRADED_DOC))
                    if name != UNGRADED or cfg.resolved_only],
        "skipped": list(cfg.skip),
        "kept_tasks": len(kept_tasks),
    }
    if cfg.resolved_only:
        report["grading"] = {"graded": grades.counts["graded"], "reused": grades.counts["reused"],
                             "failed": grades.counts["failed"]}
    return report


def check_gradable(records: Iterable[dict], cfg: FilterConfig, logged: Collection[str] = ()) -> None:
    """With `resolved_only`, before anything is graded: raise naming every task that the records to grade (not
    graded yet, passing every other rule, their grade not among the `logged` keys of an earlier run's log) would
    need but that is not in the task file, that the local grader cannot grade, or whose repository is missing
    (`MissingRepository`, all of them in one message)."""
    if not cfg.resolved_only:
        return
    from swehero.agent.local import MissingRepository, check_repository
    from swehero.rollout.local_grader import check_local
    from swehero.rollout.tasks import repo_dir

    rules, tasks = active_rules(cfg), _tasks(cfg.tasks)
    to_grade = {record["instance_id"] for record in records
                if record.get("resolved") is None and not _other_hits(record, rules, cfg, tasks)
                and not _graded_before(record, tasks, cfg, logged)}
    if to_grade:
        _check_known(sorted(to_grade), tasks, cfg)
    check_local([tasks[iid] for iid in sorted(to_grade)])
    missing = []
    for repo in sorted({tasks[iid]["repo"] for iid in to_grade}):
        try:
            check_repository(repo_dir(_repos(cfg), repo), repo)
        except MissingRepository as e:
            missing.append(str(e))
    if missing:
        raise MissingRepository.of(missing)


def _graded_before(record: dict, tasks: dict[str, dict], cfg: FilterConfig, logged: Collection[str]) -> bool:
    """Whether the record's grade is among the `logged` keys (its task in the task file, which the key covers)."""
    task = tasks.get(record["instance_id"])
    return task is not None and grade_key(task, record.get("patch") or "", cfg.grading) in logged


def _hits(record: dict, rules: list[Rule], cfg: FilterConfig, tasks: dict[str, dict], seen: set[str],
          grades: Grades) -> list[str]:
    """The rules `record` violates, in order; `[DUPLICATE]` if none but it repeats one kept (`seen`, which a record
    kept joins). Grading is slow, so a record is graded last, and only when nothing else drops it."""
    hits = _other_hits(record, rules, cfg, tasks)
    if hits == [NO_ASSISTANT_TURN]:  # by this rule alone: no conversation for the others, unresolved included
        return hits
    fp = None if hits else fingerprint(record)
    if cfg.resolved_only:
        if record.get("resolved") is None and fp is not None and fp not in seen:
            _grade(record, tasks, cfg, grades)
            if record["resolved"] is None:
                return [UNGRADED]
        if record.get("resolved") is not None and unresolved(record, cfg):
            hits.append(UNRESOLVED)
    if hits:
        return hits
    if fp in seen:
        return [DUPLICATE]
    seen.add(fp)
    return []


def _other_hits(record: dict, rules: list[Rule], cfg: FilterConfig, tasks: dict[str, dict]) -> list[str]:
    """The rules other than `unresolved` that `record` violates; `[NO_ASSISTANT_TURN]` alone for a record without
    an assistant turn."""
    if not _assistant_turns(record):
        return [NO_ASSISTANT_TURN]
    return [r.name for r in rules if r.name != UNRESOLVED and _violates(r, record, cfg, tasks)]


def _violates(rule: Rule, record: dict, cfg: FilterConfig, tasks: dict[str, dict]) -> bool:
    if not rule.needs_test_files:
        return rule.check(record, cfg)
    task = tasks.get(record["instance_id"])
    meta = record.get("metadata") or {}
    if task is not None:
        files = patch_files(task.get("test_patch") or "")
    elif "test_files" in meta:
        files = meta["test_files"]
    elif cfg.tasks:
        raise InputError(f"{cfg.tasks}: no task {record['instance_id']}, whose test patch {rule.name} reads (nor has "
                         "the trajectory metadata.test_files): pass the task file it was made from, or skip the rule")
    else:
        raise InputError(f"{record['instance_id']}: no test patch known (pass the task file: --tasks)")
    return rule.check(record, cfg, files)


def _tasks(path: str) -> dict[str, dict]:
    if not path:
        return {}
    from swehero.rollout.tasks import load_tasks

    return {t["instance_id"]: t for t in load_tasks(path)}


def _check_known(instance_ids: list[str], tasks: dict[str, dict], cfg: FilterConfig) -> None:
    """Raise `InputError` unless the task file has every task of `instance_ids`, which grading needs."""
    if not tasks:
        raise InputError("resolved_only needs the task file (--tasks) to grade ungraded trajectories")
    unknown = [iid for iid in instance_ids if iid not in tasks]
    if unknown:
        raise InputError(f"{cfg.tasks}: no task {', '.join(unknown)}, which resolved_only grades trajectories of")


def _repos(cfg: FilterConfig) -> Path:
    return Path(cfg.repos) if cfg.repos else Path(cfg.tasks).parent / "repos"


def _grade(record: dict, tasks: dict[str, dict], cfg: FilterConfig, grades: Grades) -> None:
    """Fill the record's `resolved`, from `grades`."""
    _check_known([record["instance_id"]], tasks, cfg)
    record["resolved"] = grades.resolved(record, tasks[record["instance_id"]], cfg)


def _run_grader(task: dict, patch: str, cfg: FilterConfig) -> tuple[bool, str]:
    """Whether `patch` resolves `task` by the local grader (the task's FAIL_TO_PASS/PASS_TO_PASS tests), and why
    the grader could not tell, if it could not: the environment's failure (an install that failed), or an error
    of its own (a clone on a full disk)."""
    from swehero.agent.local import MissingRepository
    from swehero.rollout.local_grader import failure_text, grade_instance
    from swehero.rollout.tasks import repo_dir

    prediction = {"instance_id": task["instance_id"], "model_name_or_path": "distill", "model_patch": patch}
    with tempfile.TemporaryDirectory(prefix="swehero-grade-") as work:
        try:
            report = grade_instance(task, prediction, repo_dir(_repos(cfg), task["repo"]), Path(work) / "grade",
                                    cfg.grading)
        except MissingRepository:  # checked before any grading (`check_gradable`): one gone since is the user's
            raise
        except Exception as e:
            return False, failure_text(e)
    if report.get("infra_failure") and not report.get("resolved"):
        return False, report.get("infra_failure_reason") or "the environment failed"
    return bool(report.get("resolved")), ""
