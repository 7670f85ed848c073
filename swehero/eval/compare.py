"""Eval folders side by side (`swehero eval compare`, stage kind `compare`): one column per folder, then how each
differs from the first (the baseline) on the three measures of a trained agent, with a paired bootstrap interval on
the resolved rate, and warnings where the folders were not evaluated alike (prompts, retries, benchmark, graders,
held-out trajectories, and any other setting `eval.json` records of how the attempts were made)."""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePath

from swehero.eval.report import OUTCOMES
from swehero.eval.runs import EVAL_FILE, MIN_SHARED, EvalFolderError, paired_difference, percent
from swehero.jsonio import read_json
from swehero.rollout.runner import TOKENIZER, WEIGHTS, recorded_differences

NOT_PROTOCOL = ("model", "serve_model", WEIGHTS, TOKENIZER, "serve_weights", "agent.policy", "agent.openai.model",
                "runs", "seed", "agent.openai.seed", "agent.prompts")
"""What `eval.json` records of the attempts that is no difference of protocol between two folders: the checkpoint
(what is compared), the number of runs (its own row), the sampling seeds (run-to-run noise, which the paired
bootstrap measures) and the prompts (their own warning, by the names the reports give them)."""


def _resolved(report: dict) -> str:
    if "per_run" in report:
        return f"{percent(report['resolved_rate'])} mean of {report['runs']} runs (std {100 * report['std_rate']:.1f})"
    return f"{report['resolved']}/{report['total']} = {percent(report['resolved_rate'])}"


def _accuracy(report: dict) -> float | None:
    return report["teacher_forced"]["accuracy"] if report["teacher_forced"] else None


_MEASURES = (("teacher-forced accuracy", _accuracy), ("valid tool calls", lambda r: r["tool_calls"]["valid_rate"]),
             ("resolved", lambda r: r["resolved_rate"]))


def compare(eval_dirs: list[Path]) -> str:
    """The comparison as markdown (each folder holds a report.json, of one run or of repeated runs)."""
    missing = [str(d) for d in eval_dirs if not (Path(d) / "report.json").is_file()]
    if missing:
        raise EvalFolderError(f"no report.json in {', '.join(missing)}: not eval folders, or not reported yet "
                              "(`swehero eval report FOLDER` writes it)")
    reports = [read_json(Path(d) / "report.json", "an eval report") for d in eval_dirs]
    for folder, report in zip(eval_dirs, reports):
        if missing := _missing_fields(report):
            raise EvalFolderError(f"{folder}: report.json is no eval report (no {', '.join(missing)}): "
                                  "`swehero eval report FOLDER` writes it again")
    protocols = [_protocol(Path(d)) for d in eval_dirs]
    paths = [os.path.abspath(d) for d in eval_dirs]
    names = column_names(paths)
    row = lambda label, cells: f"| {label} | " + " | ".join(cells) + " |"  # noqa: E731
    rows = [row("metric", names), "|---" * (len(reports) + 1) + "|",
            row("model", [r["model"] for r in reports]), row("benchmark", [r["benchmark"] for r in reports]),
            row("runs", [str(r.get("runs", 1)) for r in reports]),
            row("resolved", [_resolved(r) for r in reports]),
            row("95% CI (one run, Wilson)", [f"{percent(r['ci95'][0])} – {percent(r['ci95'][1])}" if "ci95" in r else "—"
                                             for r in reports]),
            row("pass@k (k = runs)", [percent(r["pass_at_k"][str(r["runs"])]) if "pass_at_k" in r else "—"
                                      for r in reports]),
            row("paper", [percent(r["paper"]["resolved_rate"]) if r["paper"] else "—" for r in reports]),
            row("valid tool calls", [f"{r['tool_calls']['valid']}/{r['tool_calls']['turns']} = "
                                     f"{percent(r['tool_calls']['valid_rate'])}" for r in reports]),
            row("teacher-forced accuracy", [percent(_accuracy(r)) for r in reports])]
    # a folder of several runs counts every run's attempts: per run, its counts compare with a single run's
    rows += [row(f"{name} (per run)", [f"{round(r['outcomes'].get(name, 0) / r.get('runs', 1), 2):g}" for r in reports])
             for name in OUTCOMES[1:]]
    rows += [row(f"avg {key}", [str(r["averages"][key]) if r.get("averages", {}).get(key) is not None else "—"
                                for r in reports]) for key in ("steps", "prompt_tokens", "completion_tokens", "cost_usd")]
    rows += ["", "Folders: " + "; ".join(f"{name} is {path}" for name, path in zip(names, paths)), ""]
    for name, report in zip(names[1:], reports[1:]):
        parts = [_difference(label, value(report), value(reports[0])) for label, value in _MEASURES]
        paired = paired_difference(report, reports[0])
        if paired:
            verdict = (f"too few shared instances to tell (fewer than {MIN_SHARED})" if paired["significant"] is None
                       else "a real difference" if paired["significant"] else "within run-to-run noise")
            parts.append(f"resolved difference {100 * paired['difference']:+.1f} points, 95% CI "
                         f"{100 * paired['ci95'][0]:+.1f} to {100 * paired['ci95'][1]:+.1f} (paired bootstrap over "
                         f"{paired['instances']} instances): {verdict}")
        rows.append(f"- **{name}** vs {names[0]}: " + "; ".join(parts))
    rows += [f"- **warning:** {w}" for w in warnings(names, reports, protocols)]
    return "\n".join(rows) + "\n"


_FIELDS = ("model", "benchmark", "resolved_rate", "pending", "paper", "outcomes", "tool_calls", "teacher_forced")
_ONE_RUN = ("resolved", "total", "instances", "pending_ids")
_RUNS = ("runs", "std_rate", "per_instance")  # a report of repeated runs is the one with `per_run`


def _missing_fields(report: dict) -> list[str]:
    """The fields of a report (one run's or repeated runs') that the comparison reads and `report` lacks: a report
    edited by hand or cut short."""
    fields = _FIELDS + (_RUNS if "per_run" in report else _ONE_RUN)
    missing = [key for key in fields if key not in report]
    if "tool_calls" in report:
        counts = report["tool_calls"]
        missing += [f"tool_calls.{key}" for key in ("valid", "turns", "valid_rate")
                    if not isinstance(counts, dict) or key not in counts]
    return missing


def column_names(paths: list[str]) -> list[str]:
    """Each folder named by the shortest path suffix that tells the folders apart: `v-7b` beside `v-14b`, but
    `runA/eval_verified` beside `runB/eval_verified` (the same stage of two recipe runs, the usual comparison)."""
    parts = [PurePath(path).parts for path in paths]
    for length in range(1, max(map(len, parts))):
        names = [str(PurePath(*p[-length:])) for p in parts]
        if len(set(names)) == len(set(parts)):
            return names
    return [str(PurePath(*p)) for p in parts]


def _protocol(folder: Path) -> dict:
    """How a folder's attempts were made, as its `eval.json` records it (`attempts`), less `NOT_PROTOCOL`; {} where
    it records none (a folder of an older version, or a report copied without it): nothing to compare."""
    saved = read_json(folder / EVAL_FILE, "an eval folder's settings") if (folder / EVAL_FILE).is_file() else {}
    protocol = json.loads(json.dumps(saved.get("attempts", {})))  # a copy to prune
    for dotted in NOT_PROTOCOL:
        *sections, name = dotted.split(".")
        record = protocol
        for section in sections:
            record = record.get(section, {})
        record.pop(name, None)
    return protocol


def warnings(names: list[str], reports: list[dict], protocols: list[dict]) -> list[str]:
    """Where the folders were not evaluated alike, so their numbers do not compare directly; `protocols`: how each
    folder's attempts were made (`_protocol`)."""
    out = []
    for name, protocol in zip(names[1:], protocols[1:]):
        if changed := recorded_differences(protocols[0], protocol):  # the mode, turns, sampling, context, ...
            out.append(f"{name} made its attempts otherwise than {names[0]} (from {names[0]} to {name}: "
                       f"{'; '.join(changed)}): the difference is not the checkpoints' alone")
    prompts = [tuple(r.get("prompts", [])) for r in reports]
    if len(set(prompts)) > 1:
        out.append("the runs used different prompts (" + "; ".join(
            f"{n}: {', '.join(p) or 'unknown'}" for n, p in zip(names, prompts)) + ")")
    retried = [n for n, r in zip(names, reports) if r.get("attempts", {}).get("max", 1) > 1]
    if retried:
        out.append(f"{', '.join(retried)} retried attempts that ended without a patch, which raises pass@1")
    if len({r["benchmark"] for r in reports}) > 1:
        out.append("the runs are on different benchmarks")
    # a folder with no grade (empty patches alone, or not graded yet) was graded by no other grader
    graders = {n: tuple(r["graders"]) for n, r in zip(names, reports) if r.get("graders")}
    if len(set(graders.values())) > 1:
        out.append("the runs were graded by different graders (" + "; ".join(
            f"{n}: {', '.join(g)}" for n, g in graders.items()) + ")")
    heldout = {name: r["teacher_forced"] for name, r in zip(names, reports) if r["teacher_forced"]}
    # the files name the set; the token count tells the same files cut to another context, or edited since
    if len({(tuple(tf.get("files", ())), tf["tokens"]) for tf in heldout.values()}) > 1:
        out.append("teacher-forced accuracy is measured on different held-out trajectories (" + "; ".join(
            f"{name}: {tf['trajectories']} trajectories, {tf['tokens']} tokens of "
            f"{', '.join(tf.get('files', ())) or 'unrecorded files'}" for name, tf in heldout.items())
            + "): its difference is not the checkpoints' alone")
    for name, report in zip(names, reports):
        if report["pending"]:  # `pending` counts instances in one run's report, attempts in one of several runs
            out.append(f"{name} is incomplete: {report['pending']} attempt(s) not made yet; its rates count them as "
                       "unresolved, the paired difference leaves them out")
    baseline = _selected(reports[0])
    for name, report in zip(names[1:], reports[1:]):
        mine = _selected(report)
        if mine != baseline:  # another --limit, --shard or task file: the rates above are over other tasks
            shared = len(mine & baseline)
            out.append(f"{name} evaluated {len(mine)} instances, {shared} of {names[0]}'s {len(baseline)}: "
                       + ("its rates are over other tasks; the paired difference uses the shared ones alone" if shared
                          else "no task in common, so the rates do not compare"))
    return out


def _selected(report: dict) -> set[str]:
    """The instances a folder evaluates, attempted yet or not."""
    if "per_instance" in report:
        return set(report["per_instance"])
    return {i["instance_id"] for i in report["instances"]} | set(report["pending_ids"])


def _difference(label: str, value: float | None, baseline: float | None) -> str:
    if value is None or baseline is None:
        return f"{label} not measured"
    word = "higher" if value > baseline else "lower" if value < baseline else "the same"
    return f"{label} {percent(value)} vs {percent(baseline)} ({word})"
