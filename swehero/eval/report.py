"""`report.json`, `report.md` and `report.png` of an eval folder, and side-by-side comparison of several.

Every selected instance lands in exactly one outcome class. A resolved instance counts as resolved however the
agent ended (pass@1 counts the patch); otherwise the first matching reason wins: the infrastructure failed, the
patch is not graded yet (an infra_error the report flags, whatever the finish reason), the agent hit a limit or kept
sending malformed tool calls, the patch was empty, or it was graded and not resolved.
"""

from __future__ import annotations

import math
from pathlib import Path

from swehero.errors import InputError
from swehero.eval.grade import current_grades, is_final
from swehero.eval.inference import finished, trajectory_path
from swehero.eval.leaks import seeking_commands
from swehero.eval.paper import SCAFFOLDS, paper_figure
from swehero.eval.runs import percent
from swehero.jsonio import read_json, write_json_atomic, write_text_atomic

TEACHER_FORCED = "teacher_forced.json"
"""Written by the eval pipeline when it is given held-out trajectories (see teacher_forced.py)."""
OUTCOMES = ("resolved", "unresolved", "empty_patch", "stuck", "step_limit", "context_limit", "time_limit",
            "tool_parse_failure", "infra_error")
NOT_GRADED = "not graded"
_LIMITS = {"stuck": "stuck", "step_limit": "step_limit", "context_limit": "context_limit", "time_limit": "time_limit",
           "tool_parse_failures": "tool_parse_failure"}


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound at 0%, 100% and small n, unlike the normal one)."""
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def outcome(attempt: dict, grade: dict | None, patch: str) -> tuple[str, str]:
    """(outcome class, detail) of one instance with a committed prediction; `attempt` is its trajectory's
    metadata (finish_reason, error)."""
    if grade and grade["resolved"]:
        return "resolved", ""
    # Not graded yet, whatever the finish reason (an agent_error keeps its partial patch, which is graded too):
    # before the limits, since a patch at a limit may resolve; the notice and `eval select` count these
    if grade and not is_final(grade):  # a grading error to retry: no verdict yet
        return "infra_error", f"{NOT_GRADED}: {grade.get('error', '')}"
    if grade is None and patch.strip():
        return "infra_error", NOT_GRADED
    if attempt.get("finish_reason") == "agent_error":
        return "infra_error", attempt.get("error", "")
    if grade and grade.get("infra_failure"):
        return "infra_error", grade.get("error", "")
    if attempt.get("finish_reason") in _LIMITS:
        return _LIMITS[attempt["finish_reason"]], attempt.get("error", "")
    if not patch.strip():
        return "empty_patch", ""
    return "unresolved", grade.get("error", "")


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 6) if values else None


def build_report(tasks: list[dict], out_dir: Path, model: str, benchmark: str, price_prompt: float = 0.0,
                 price_completion: float = 0.0, teacher_forced: dict | None = None, task_file: str = "",
                 mode: str = "exec") -> dict:
    """Summarize an eval folder (one run) of the tasks of `task_file`, attempted in the agent's `mode` (the scaffold
    the paper's figure is looked up for). Prices are $ per million prompt / completion tokens (0: no cost column);
    `teacher_forced` is the checkpoint's score on held-out trajectories, when measured."""
    out_dir = Path(out_dir)
    # a grade made against another version of its task is no grade of this one
    predictions, graded = finished(out_dir), current_grades(out_dir, tasks)
    instances, pending = [], []
    for task in tasks:
        iid = task["instance_id"]
        if iid not in predictions:
            pending.append(iid)
            continue
        path = trajectory_path(out_dir, iid)
        record = read_json(path, "a trajectory")
        meta = record.get("metadata")
        if not isinstance(meta, dict):
            raise InputError(f"{path}: not a trajectory (no metadata object)")
        grade = graded.get(iid)
        cls, detail = outcome(meta, grade, predictions[iid]["model_patch"] or "")
        prompt, completion = meta.get("prompt_tokens"), meta.get("completion_tokens")
        priced = ((prompt, price_prompt), (completion, price_completion))
        # a priced count that is missing makes the cost unknown: counting it as 0 would understate it
        cost = None if not (price_prompt or price_completion) or any(n is None and p for n, p in priced) else \
            sum(n * p for n, p in priced if p) / 1e6
        instances.append({"instance_id": iid, "repo": task["repo"], "outcome": cls, "detail": detail[:500],
                          "finish_reason": meta.get("finish_reason"), "steps": meta.get("steps", 0),
                          # A turn whose one tool call parsed, named a tool and had valid arguments, so it ran.
                          "valid_tool_calls": meta.get("steps", 0) - meta.get("format_errors", 0),
                          "prompt_tokens": prompt, "completion_tokens": completion, "cost_usd": cost,
                          "seconds": meta.get("seconds"), "attempts": meta.get("attempts", 1),
                          "prompts": meta.get("prompts"),
                          "seeking": seeking_commands(record, task.get("base_commit", "")),
                          # the grader's report and test output, relative to the run's folder
                          "logs": (grade or {}).get("logs")})
    total = len(tasks)
    resolved = sum(i["outcome"] == "resolved" for i in instances)
    per_repo: dict[str, dict] = {}
    for task in tasks:
        per_repo.setdefault(task["repo"], {"total": 0, "resolved": 0})["total"] += 1
    for inst in instances:
        per_repo[inst["repo"]]["resolved"] += inst["outcome"] == "resolved"
    for row in per_repo.values():
        row["rate"] = row["resolved"] / row["total"]
    low, high = wilson(resolved, total)
    paper = paper_figure(model, benchmark, mode)
    turns, valid = sum(i["steps"] for i in instances), sum(i["valid_tool_calls"] for i in instances)
    return {
        "model": model, "benchmark": benchmark, "mode": mode, "task_file": task_file,
        "graders": sorted({grade["grader"] for grade in graded.values() if grade.get("grader")}),
        "total": total, "finished": len(instances), "pending": len(pending),
        "resolved": resolved, "resolved_rate": resolved / total if total else 0.0,
        "ci95": [low, high],
        "outcomes": {name: sum(i["outcome"] == name for i in instances) for name in OUTCOMES},
        "per_repo": dict(sorted(per_repo.items())),
        "averages": averages(instances),
        "paper": {"model": paper[0], "benchmark": benchmark, "scaffold": SCAFFOLDS[mode],
                  "resolved_rate": paper[1] / 100} if paper else None,
        "tool_calls": {"turns": turns, "valid": valid, "valid_rate": valid / turns if turns else None},
        "teacher_forced": teacher_forced,
        "ungraded": sum(i["detail"].startswith(NOT_GRADED) for i in instances),
        "prompts": sorted({i["prompts"] for i in instances if i["prompts"]}),
        "attempts": {"max": max((i["attempts"] for i in instances), default=1),
                     "retried": sum(i["attempts"] > 1 for i in instances)},
        "leak_audit": [{"instance_id": i["instance_id"], "resolved": i["outcome"] == "resolved",
                        "commands": i["seeking"]} for i in instances if i["seeking"]],
        "pending_ids": pending,
        "instances": instances,
    }


def averages(instances: list[dict]) -> dict[str, float | None]:
    """Mean steps, tokens, cost and seconds of the finished `instances` (attempts), each over those that have it."""
    return {key: _mean([i[key] for i in instances])
            for key in ("steps", "prompt_tokens", "completion_tokens", "cost_usd", "seconds")}


def markdown(report: dict) -> str:
    lo, hi = report["ci95"]
    lines = [f"# Eval: {report['model']} on {report['benchmark']}", "", source_line(report), "",
             (f"**Resolved: {report['resolved']}/{report['total']} = {percent(report['resolved_rate'])}** "
              f"(95% Wilson CI {percent(lo)} – {percent(hi)})")]
    if report["paper"]:
        lines.append(paper_line(report))
    if report["pending"]:
        lines.append(f"\n**Incomplete:** {report['pending']} instance(s) have no prediction yet (counted as "
                     "unresolved in the rate above, as SWE-bench counts an instance without a prediction).")
    if report["ungraded"]:
        lines.append(ungraded_line(report["ungraded"]))
    calls = report["tool_calls"]
    lines.append(f"\nValid tool calls: {calls['valid']}/{calls['turns']} assistant turns = {percent(calls['valid_rate'])}")
    if report["teacher_forced"]:
        tf = report["teacher_forced"]
        files = f" in {', '.join(tf['files'])}" if tf.get("files") else ""
        lines.append(f"Teacher-forced accuracy on held-out trajectories: {percent(tf['accuracy'])} of {tf['tokens']} "
                     f"assistant tokens ({tf['trajectories']} trajectories{files})")
    lines += ["", "## Outcomes", "", "| outcome | count |", "|---|---|"]
    lines += [f"| {name} | {count} |" for name, count in report["outcomes"].items()]
    if report["pending"]:
        lines.append(f"| pending (no prediction yet) | {report['pending']} |")
    lines += ["", "## Per repository", "", "| repo | resolved | total | rate |", "|---|---|---|---|"]
    lines += [f"| {repo} | {r['resolved']} | {r['total']} | {percent(r['rate'])} |" for repo, r in report["per_repo"].items()]
    lines += averages_lines(report, "finished instance")
    return "\n".join(lines + protocol_lines(report)) + "\n"


def paper_line(report: dict) -> str:
    """The paper's figure for the model, benchmark and scaffold of a report (of one run or of several)."""
    paper = report["paper"]
    scaffold = f", {paper['scaffold']} scaffold" if "scaffold" in paper else ""  # not recorded in older reports
    return f"Paper ({paper['model']}, {report['benchmark']}{scaffold}, pass@1): {percent(paper['resolved_rate'])}"


def averages_lines(report: dict, per: str) -> list[str]:
    """The table of mean steps, tokens, cost and seconds `per` attempt, in the report of one run and of several."""
    return (["", f"## Averages per {per}", "", "| metric | mean |", "|---|---|"]
            + [f"| {key} | {'—' if v is None else v} |" for key, v in report["averages"].items()])


def source_line(report: dict) -> str:
    """What was evaluated and how it was graded, in the report of one run and of several."""
    return (f"Tasks: {report['task_file'] or '—'} ({report['total']}); graded by: "
            f"{', '.join(report['graders']) or '—'}")


def ungraded_line(ungraded: int) -> str:
    """The notice of predictions without a grade, in the report of one run and of several."""
    return f"\n**Not graded:** {ungraded} prediction(s) (counted as infra_error); run `swehero eval grade`."


def protocol_lines(report: dict) -> list[str]:
    """How the attempts were made (prompts, retries) and what they looked for: the report's fine print."""
    lines = ["", "## Protocol", "", f"Prompts: {', '.join(report['prompts']) or '—'}"]
    if report["attempts"]["max"] > 1:
        lines.append(f"**Retried:** {report['attempts']['retried']} instance(s) that ended without a patch were "
                     f"attempted again (up to {report['attempts']['max']} attempts): this raises pass@1, so it is "
                     "not comparable with single-attempt runs such as the paper's.")
    else:
        lines.append("One attempt per instance (the paper's protocol).")
    lines += ["", "## Leak audit", ""]
    if not report["leak_audit"]:
        return lines + ["No attempt ran history- or network-seeking commands."]
    lines += [f"{len(report['leak_audit'])} attempt(s) ran history- or network-seeking commands "
              f"({sum(a['resolved'] for a in report['leak_audit'])} of them resolved):", "",
              "| instance | resolved | commands |", "|---|---|---|"]
    for audit in report["leak_audit"]:
        kinds = ", ".join(sorted({c["kind"] for c in audit["commands"]}))
        lines.append(f"| {audit['instance_id']} | {'yes' if audit['resolved'] else 'no'} | {kinds} |")
    return lines


def chart(report: dict, path: Path) -> None:
    from swehero.plots import figure

    bars = {**report["outcomes"], **({"pending": report["pending"]} if report["pending"] else {})}  # adds up to total
    names, counts = list(bars), list(bars.values())
    labels, rates = ["ours"], [100 * report["resolved_rate"]]
    lo, hi = report["ci95"]
    errors = [[max(rates[0] - 100 * lo, 0.0)], [max(100 * hi - rates[0], 0.0)]]  # 1.0 - 1e-16 is no interval
    if report["paper"]:
        labels.append("paper")
        rates.append(100 * report["paper"]["resolved_rate"])
        errors = [errors[0] + [0], errors[1] + [0]]
    with figure(path, 1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]}) as (left, right):
        left.bar(names, counts, color=["#2a9d8f" if n == "resolved" else "#8d99ae" for n in names])
        left.set_ylabel("instances")
        left.set_title(f"{report['model']} on {report['benchmark']}: outcomes")
        left.tick_params(axis="x", rotation=30)
        right.bar(labels, rates, yerr=errors, capsize=6, color=["#2a9d8f", "#e9c46a"][: len(labels)])
        right.set_ylabel("% resolved (95% CI)")
        right.set_ylim(0, 100)


def write_report(report: dict, out_dir: Path) -> dict[str, str]:
    """The three report files, each written whole (`eval compare` may read them while a run rewrites them)."""
    out_dir = Path(out_dir)
    paths = {"report": out_dir / "report.json", "report_md": out_dir / "report.md", "chart": out_dir / "report.png"}
    write_json_atomic(paths["report"], report, indent=2)
    write_text_atomic(paths["report_md"], markdown(report))
    chart(report, paths["chart"])
    return {name: str(path) for name, path in paths.items()}
