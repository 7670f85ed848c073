"""The paper's trajectory filters: named rules, applied per stage, each counted in `filter_report.json`.

Every rule reads only the canonical trajectory (messages, patch, metadata) and, for the test-file rule, the task's
test patch (from `metadata.test_files`, written by `swehero distill`, or from a task file). A trajectory is dropped
by the first rule it violates, in the order of RULES; the report also counts every rule's violations on its own,
so the effect of each rule is visible whatever the order.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from swehero.agent.loop import KEEP_GOING, LoopConfig
from swehero.errors import InputError
from swehero.rollout.local_grader import LocalGraderConfig

STAGES = ("zero", "hero")
_DIFF_HEADER = re.compile(r"^diff --git a/(\S+) b/(\S+)$", re.MULTILINE)


@dataclass
class FilterConfig:
    """How trajectories are filtered."""

    stage: Literal["zero", "hero"] = "zero"
    """zero: SWE-Zero rules (adds the banned-command rule); hero: SWE-Hero rules."""
    max_steps: int = LoopConfig.max_steps
    """Assistant turns allowed (the agent's step limit, the paper's 100); an episode that ended at the limit is
    dropped too."""
    max_editor_errors: int = 3
    """Drop trajectories with this many `str_replace_editor` errors or more (the paper: 3)."""
    resolved_only: bool = False
    """hero only: keep only rollouts whose patch resolves the task (graded locally when not yet graded). The paper
    does NOT filter on this; off by default."""
    tasks: str = ""
    """Task file: test files of each task's test patch (else `metadata.test_files`), and grading for
    `resolved_only`."""
    repos: str = ""
    """Folder of task repositories (`owner__name`) for grading; empty: `repos/` beside the task file."""
    grading: LocalGraderConfig = field(default_factory=LocalGraderConfig)
    """How `resolved_only` grades: the task environments (install recipe, test dependencies, Python), or an
    interpreter to test with as it is, and the test timeout."""


def patch_files(patch: str) -> list[str]:
    """Files a unified git diff touches (old and new paths, so deleted and renamed files count)."""
    return sorted({path for pair in _DIFF_HEADER.findall(patch or "") for path in pair})


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
    its program is computed at run time) counts as banned too."""
    from swehero.agent.banned import RefusedCommand, banned_commands

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
    Rule("unresolved", ("hero",), unresolved),
]
DUPLICATE = "duplicate"
"""Last rule, over the survivors of the others."""
DUPLICATE_DOC = "Identical (messages and patch) to a trajectory kept earlier."


def fingerprint(record: dict) -> str:
    body = json.dumps([record["messages"], record.get("patch") or ""], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def active_rules(cfg: FilterConfig) -> list[Rule]:
    if cfg.stage not in STAGES:
        raise InputError(f"filter stage must be one of {', '.join(STAGES)}, got {cfg.stage!r}")
    if cfg.resolved_only and cfg.stage != "hero":
        raise InputError("resolved_only applies to the hero stage only")
    return [r for r in RULES if cfg.stage in r.stages and (r.name != "unresolved" or cfg.resolved_only)]


def filter_trajectories(records: Iterable[dict], cfg: FilterConfig, keep: Callable[[dict], None],
                        drop: Callable[[dict], None]) -> dict:
    """Hand each record to `keep`, or its drop entry (the rule, and every rule it violates) to `drop`, one record at
    a time: a distillation's trajectories can be far larger than memory. Returns the report. With `resolved_only`,
    a record not graded yet is graded first; a task whose repository is missing is named, with every other such
    task, in a `MissingRepository` raised at the end."""
    rules = active_rules(cfg)
    tasks = _tasks(cfg.tasks)
    seen, kept_tasks, missing = set(), set(), []
    first_hit, violations, counts = Counter(), Counter(), Counter()
    for record in records:
        counts["input"] += 1
        if cfg.resolved_only and record.get("resolved") is None and not _grade(record, tasks, cfg, missing):
            continue
        hits = [r.name for r in rules if _violates(r, record, cfg, tasks)]
        violations.update(hits)
        if not hits:
            fp = fingerprint(record)
            if fp in seen:
                hits = [DUPLICATE]
                violations[DUPLICATE] += 1
            seen.add(fp)
        if hits:
            first_hit[hits[0]] += 1
            counts["dropped"] += 1
            drop({"id": record.get("id"), "instance_id": record["instance_id"], "rule": hits[0],
                  "violates": hits})
        else:
            counts["kept"] += 1
            kept_tasks.add(record["instance_id"])
            keep(record)
    if missing:
        from swehero.agent.local import MissingRepository

        raise MissingRepository("; ".join(dict.fromkeys(missing)))
    return {
        "stage": cfg.stage, "input": counts["input"], "kept": counts["kept"], "dropped": counts["dropped"],
        "rules": [{"name": r.name, "doc": r.doc, "dropped": first_hit[r.name], "violations": violations[r.name]}
                  for r in rules]
                 + [{"name": DUPLICATE, "doc": DUPLICATE_DOC, "dropped": first_hit[DUPLICATE],
                     "violations": violations[DUPLICATE]}],
        "kept_tasks": len(kept_tasks),
    }


def _violates(rule: Rule, record: dict, cfg: FilterConfig, tasks: dict[str, dict]) -> bool:
    if not rule.needs_test_files:
        return rule.check(record, cfg)
    task = tasks.get(record["instance_id"])
    meta = record.get("metadata") or {}
    if task is not None:
        files = patch_files(task.get("test_patch") or "")
    elif "test_files" in meta:
        files = meta["test_files"]
    else:
        raise InputError(f"{record['instance_id']}: no test patch known (pass the task file: --tasks)")
    return rule.check(record, cfg, files)


def _tasks(path: str) -> dict[str, dict]:
    if not path:
        return {}
    from swehero.rollout.tasks import load_tasks

    return {t["instance_id"]: t for t in load_tasks(path)}


def _grade(record: dict, tasks: dict[str, dict], cfg: FilterConfig, missing: list[str]) -> bool:
    """Fill the record's `resolved` with the local grader (the task's FAIL_TO_PASS/PASS_TO_PASS tests); False, with
    the reason added to `missing`, when the task's repository is missing."""
    from swehero.agent.local import MissingRepository
    from swehero.rollout.local_grader import grade_instance
    from swehero.rollout.tasks import repo_dir

    if not tasks:
        raise InputError("resolved_only needs the task file (--tasks) to grade ungraded trajectories")
    task = tasks[record["instance_id"]]
    repos = Path(cfg.repos) if cfg.repos else Path(cfg.tasks).parent / "repos"
    prediction = {"instance_id": task["instance_id"], "model_name_or_path": "distill",
                  "model_patch": record.get("patch") or ""}
    try:
        with tempfile.TemporaryDirectory(prefix="swehero-grade-") as work:
            report = grade_instance(task, prediction, repo_dir(repos, task["repo"]), Path(work) / "grade", cfg.grading)
    except MissingRepository as e:
        missing.append(str(e))
        return False
    record["resolved"] = bool(report.get("resolved"))
    return True
