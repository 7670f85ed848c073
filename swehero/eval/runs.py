"""Repeated runs of one evaluation, and telling a real difference from run-to-run spread.

With `runs: N`, every instance is attempted N times with distinct sampling seeds, each run in its own folder
(`run-0` ... `run-{N-1}`, each a complete single-run eval folder). The aggregate report gives the resolved rate of
each run, their mean and standard deviation, pass@k for k = 1..N with the unbiased estimator of Chen et al. (2021)
(per instance 1 - C(n-c, k) / C(n, k), averaged), and how many runs resolved each instance. Runs of the same model
on 500 tasks differ by several points; `paired_difference` puts two evaluations of the same tasks side by side with
a paired bootstrap over instances, which is what a claimed improvement has to beat.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np

from swehero.errors import InputError
from swehero.jsonio import read_json

EVAL_FILE = "eval.json"
"""What an eval folder evaluates (task source, instance ids, model, number of runs, prices), written before
inference."""
MIN_SHARED = 10
"""Fewest shared instances on which `paired_difference` calls a difference real or noise. Below it the bootstrap
has too few distinct resamples to be calibrated (one instance gives a zero-width interval), and even a difference
that every shared instance agrees on is not significant by an exact sign test below 6 (2 * 0.5**n > 0.05)."""


class EvalFolderError(InputError):
    """Folders given as evaluations cannot be read as asked: not eval folders, not finished, or not comparable."""


def run_dirs(out_dir: Path, runs: int) -> list[Path]:
    """The folders of the runs: the eval folder itself for one run, `run-k` inside it for several."""
    return [Path(out_dir)] if runs == 1 else [Path(out_dir) / f"run-{k}" for k in range(runs)]


def is_eval_folder(path: Path) -> bool:
    return (Path(path) / EVAL_FILE).is_file()


def eval_runs(folder: Path) -> tuple[dict, list[Path]]:
    """The saved settings of an eval folder (`eval.json`) and its run folders."""
    if not is_eval_folder(folder):
        raise EvalFolderError(f"{folder} is not an eval folder (no {EVAL_FILE})")
    saved = read_json(Path(folder) / EVAL_FILE, "an eval folder's settings")
    if lacking := [key for key in ("tasks", "instance_ids") if key not in saved]:
        raise EvalFolderError(f"{Path(folder) / EVAL_FILE}: not an eval folder's settings: it lacks "
                              f"{', '.join(lacking)}")
    return saved, run_dirs(folder, saved.get("runs", 1))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k attempts, drawn without replacement from n with c correct, is correct."""
    if k > n:  # C(n-c, k) / C(n, k) is 0/0 there: returning 1 would claim a success that no draw can make
        raise ValueError(f"pass@{k} needs at least {k} attempts per instance, not {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def aggregate(reports: list[dict]) -> dict:
    """One report over several runs' reports (same model, benchmark and tasks). Its `outcomes` count the attempts
    of all runs; its `averages` are over all attempts."""
    from swehero.eval.report import averages

    first = reports[0]
    rates = [r["resolved_rate"] for r in reports]
    counts: dict[str, int] = {}
    missing: dict[str, int] = {}  # attempts not made yet, per instance that has any
    for report in reports:
        for inst in report["instances"]:
            counts[inst["instance_id"]] = counts.get(inst["instance_id"], 0) + (inst["outcome"] == "resolved")
        for iid in report["pending_ids"]:
            missing[iid] = missing.get(iid, 0) + 1
            counts.setdefault(iid, 0)
    n = len(reports)
    turns = sum(r["tool_calls"]["turns"] for r in reports)
    valid = sum(r["tool_calls"]["valid"] for r in reports)
    return {
        "model": first["model"], "benchmark": first["benchmark"], "mode": first["mode"],
        "task_file": first["task_file"],
        "graders": sorted({g for r in reports for g in r["graders"]}), "total": first["total"], "runs": n,
        "per_run": [{"run": k, "resolved": r["resolved"], "total": r["total"], "rate": r["resolved_rate"],
                     "pending": r["pending"], "ungraded": r["ungraded"]} for k, r in enumerate(reports)],
        "resolved_rate": statistics.mean(rates),
        "std_rate": statistics.stdev(rates) if n > 1 else 0.0,
        "pass_at_k": {str(k): statistics.mean(pass_at_k(n, c, k) for c in counts.values())
                      for k in range(1, n + 1)},
        "per_instance": dict(sorted(counts.items())),
        "outcomes": {name: sum(r["outcomes"][name] for r in reports) for name in first["outcomes"]},
        "averages": averages([i for r in reports for i in r["instances"]]),
        "tool_calls": {"turns": turns, "valid": valid, "valid_rate": valid / turns if turns else None},
        "paper": first["paper"], "teacher_forced": first["teacher_forced"],
        "prompts": sorted({p for r in reports for p in r["prompts"]}),
        "attempts": {"max": max(r["attempts"]["max"] for r in reports),
                     "retried": sum(r["attempts"]["retried"] for r in reports)},
        "leak_audit": [{**audit, "run": k} for k, r in enumerate(reports) for audit in r["leak_audit"]],
        "pending": sum(r["pending"] for r in reports),
        "missing_attempts": dict(sorted(missing.items())),
        "ungraded": sum(r["ungraded"] for r in reports),
    }


def resolve_fractions(report: dict) -> dict[str, float]:
    """Per instance with an attempt made, the share of its attempts that resolved it (a single run's report: 1 or
    0). An attempt not made yet is no failure: it is left out, and an instance with none is absent."""
    if "per_instance" in report:
        missing = report.get("missing_attempts", {})  # absent from reports written before it was recorded
        return {iid: count / (report["runs"] - missing.get(iid, 0)) for iid, count in report["per_instance"].items()
                if missing.get(iid, 0) < report["runs"]}
    return {i["instance_id"]: float(i["outcome"] == "resolved") for i in report["instances"]}


def paired_difference(report: dict, baseline: dict, resamples: int = 2000) -> dict | None:
    """Mean resolved rate of `report` minus `baseline` over the instances both evaluated (attempts made), with a
    95% paired bootstrap interval over instances (fixed seed, so the same reports always give the same interval).
    `significant` is None below `MIN_SHARED` shared instances: too few to tell."""
    a, b = resolve_fractions(report), resolve_fractions(baseline)
    shared = sorted(set(a) & set(b))
    if not shared:
        return None
    diffs = np.array([a[i] - b[i] for i in shared])
    rng = np.random.default_rng(0)
    means = diffs[rng.integers(0, len(diffs), size=(resamples, len(diffs)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"instances": len(shared), "difference": float(diffs.mean()),
            "ci95": [float(low), float(high)],
            "significant": bool(low > 0 or high < 0) if len(shared) >= MIN_SHARED else None}


def percent(x: float | None) -> str:
    """A fraction as a percentage with one decimal; a dash for none."""
    return "—" if x is None else f"{100 * x:.1f}%"


def markdown(agg: dict) -> str:
    from swehero.eval.report import averages_lines, paper_line, protocol_lines, source_line, ungraded_line

    lines = [f"# Eval: {agg['model']} on {agg['benchmark']}, {agg['runs']} runs", "", source_line(agg), "",
             f"**Resolved: {percent(agg['resolved_rate'])} mean over {agg['runs']} runs** (standard deviation "
             f"{100 * agg['std_rate']:.1f} points); pass@{agg['runs']} {percent(agg['pass_at_k'][str(agg['runs'])])}"]
    if agg["paper"]:
        lines.append(paper_line(agg))
    if agg["pending"]:
        lines.append(f"\n**Incomplete:** {agg['pending']} attempt(s) have no prediction yet (counted as unresolved "
                     "in the rates above, as in the report of one run).")
    if agg["ungraded"]:
        lines.append(ungraded_line(agg["ungraded"]))
    lines += ["", "## Runs", "", "| run (folder) | resolved | rate |", "|---|---|---|"]
    lines += [f"| run-{r['run']} | {r['resolved']}/{r['total']} | {percent(r['rate'])} |" for r in agg["per_run"]]
    lines += ["", "## Outcomes over all runs", "", "| outcome | attempts |", "|---|---|"]
    lines += [f"| {name} | {count} |" for name, count in agg["outcomes"].items()]
    lines += ["", "## pass@k (unbiased estimator)", "", "| k | pass@k |", "|---|---|"]
    lines += [f"| {k} | {percent(v)} |" for k, v in agg["pass_at_k"].items()]
    spread: dict[int, int] = {}
    for count in agg["per_instance"].values():
        spread[count] = spread.get(count, 0) + 1
    lines += ["", "## Instances by the number of runs that resolved them", "", "| runs resolving | instances |",
              "|---|---|"]
    lines += [f"| {c} of {agg['runs']} | {spread[c]} |" for c in sorted(spread)]
    lines += averages_lines(agg, "attempt (all runs)")
    return "\n".join(lines + protocol_lines(agg)) + "\n"


def write_runs_report(agg: dict, out_dir: Path) -> dict[str, str]:
    """`report.json`, `report.md` and `report.png` over all runs, in the eval folder."""
    from swehero.jsonio import write_json_atomic, write_text_atomic

    paths = {"report": Path(out_dir) / "report.json", "report_md": Path(out_dir) / "report.md",
             "chart": Path(out_dir) / "report.png"}
    write_json_atomic(paths["report"], agg, indent=2)
    write_text_atomic(paths["report_md"], markdown(agg))
    chart(agg, paths["chart"])
    return {name: str(path) for name, path in paths.items()}


def chart(agg: dict, path: Path) -> None:
    from swehero.plots import figure

    ks = [int(k) for k in agg["pass_at_k"]]
    with figure(path, 1, 2, figsize=(11, 4)) as (left, right):
        left.plot(ks, [100 * v for v in agg["pass_at_k"].values()], marker="o", color="#2a9d8f", label="pass@k")
        left.axhline(100 * agg["resolved_rate"], color="#8d99ae", linestyle="--", label="mean pass@1")
        if agg["paper"]:
            left.axhline(100 * agg["paper"]["resolved_rate"], color="#e9c46a", linestyle=":", label="paper pass@1")
        left.set_xlabel("k (attempts per instance)")
        left.set_xticks(ks)
        left.set_ylabel("% resolved")
        left.set_title(f"{agg['model']} on {agg['benchmark']}")
        left.legend()
        right.bar([str(r["run"]) for r in agg["per_run"]], [100 * r["rate"] for r in agg["per_run"]],
                  color="#2a9d8f")
        right.set_xlabel("run")
        right.set_ylabel("% resolved")
