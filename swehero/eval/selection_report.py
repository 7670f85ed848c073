"""`select.md` and `select.png`: best@k of the verifier beside the majority patch, pass@k and the mean."""

from __future__ import annotations

from pathlib import Path

from swehero.eval.runs import percent


def markdown(report: dict) -> str:
    n, runs, v = report["instances"], report["runs"], report["verifier"]
    quality = report["verifier_quality"]
    auc = "—" if quality["auc"] is None else f"{quality['auc']:.3f}"
    lines = [f"# Best of {runs}: {n} instances, verifier {v['model']}", "",
             f"**best@{runs} {percent(report['best_at_k'][str(runs)])}** with the verifier; majority patch "
             f"{percent(report['majority_at_k'][str(runs)])}; pass@{runs} (an oracle) "
             f"{percent(report['pass_at_k'][str(runs)])}; mean of the runs {percent(report['mean'])}.",
             f"Selected attempts resolve {report['selected_resolved']:g} of the {report['oracle_resolved']} "
             f"instances some run resolved (best@{runs} x instances: tied scores broken every way).", "",
             "Runs read, in this order: " + "; ".join(f"{f['folder']} ({f['model']}, {f['runs']} run(s))"
                                                     for f in report["folders"]), "",
             f"Verifier on the {quality['scored']} graded attempts with a patch ({quality['resolved']} resolved): accuracy "
             f"{percent(quality['accuracy'])} (yes when the score is at least 0.5), AUC {auc}.",
             "", "| k | mean (pass@1) | best@k (verifier) | majority patch@k | pass@k |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {percent(report['mean'])} | {percent(report['best_at_k'][k])} | "
              f"{percent(report['majority_at_k'][k])} | {percent(report['pass_at_k'][k])} |" for k in report["best_at_k"]]
    lines += ["", "## Rules", "",
              f"- Score: {v['score']}, one forward pass per attempt ({v['format']}: the training data's judging "
              f"message, attempts longer than {v['seq_length']} tokens truncated from the middle).",
              "- Selection: attempts with a patch first, then the highest score; of tied attempts the table of "
              "`select.json` names the lowest run.",
              "- best@k, majority@k and pass@k average over every draw of k of the runs' attempts and over the ways "
              "of breaking ties (not by run: a verifier scoring all alike would select run 0's rate); best@1 is the "
              "mean, best@k never exceeds pass@k.",
              "- Majority patch: the most common patch among the drawn attempts, whitespace normalised, and one of "
              "its drawn attempts.",
              "- Nothing is graded again: the attempts' grades come from their runs; an attempt whose grader failed "
              "counts as unresolved, as in the runs' reports."]
    if report["unscored"]:
        lines += ["", f"{len(report['unscored'])} attempt(s) with a patch could not be scored (ranked after the "
                      "scored ones):", ""]
        lines += [f"- run {u['run']}, {u['instance_id']}: {u['why']}" for u in report["unscored"][:20]]
    if report["grader_failures"]:
        lines += ["", f"{len(report['grader_failures'])} attempt(s) whose grader failed (`infra_failure`) count as "
                      "unresolved:", ""]
        lines += [f"- run {g['run']}, {g['instance_id']}" for g in report["grader_failures"][:20]]
    return "\n".join(lines) + "\n"


def chart(report: dict, path: Path) -> None:
    from swehero.plots import figure

    ks = [int(k) for k in report["best_at_k"]]
    with figure(path, figsize=(7, 4)) as ax:
        for key, label, color, marker in (("pass_at_k", "pass@k (oracle)", "#2a9d8f", "o"),
                                          ("best_at_k", "best@k (verifier)", "#e76f51", "s"),
                                          ("majority_at_k", "majority patch@k", "#8d99ae", "^")):
            ax.plot(ks, [100 * v for v in report[key].values()], marker=marker, color=color, label=label)
        ax.axhline(100 * report["mean"], color="#264653", linestyle="--", label="mean pass@1")
        ax.set_xlabel("k (attempts per instance)")
        ax.set_ylabel("% resolved")
        ax.set_xticks(ks)
        ax.set_title(f"Best of {report['runs']}: {report['instances']} instances")
        ax.legend()
