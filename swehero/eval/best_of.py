"""Choosing one attempt per instance among N runs, and what the choice is worth: best@k beside pass@k.

Rules (stated in every report):

- **Verifier ranking.** Per instance the attempts are ranked: attempts with a patch before those without (an empty
  patch resolves nothing), then by the verifier's score, highest first (attempts it could not score last), then by
  run, lowest first. The selected attempt is the first of the ranking.
- **best@k.** The expected resolved rate of the selected attempt when the selector sees k of the N attempts, drawn
  at random without replacement, averaged over every such draw: the attempt at position j of the ranking (0-based)
  is the best of the drawn ones in C(N-1-j, k-1) of the C(N, k) draws. This is the counterpart of pass@k's unbiased
  estimator (which averages "at least one drawn attempt resolves" over the same draws): best@1 is the mean resolved
  rate of the runs, best@N selects among all attempts, best@k never exceeds pass@k, and equals it when the verifier
  ranks every resolved attempt first. (Selecting among "the first k runs" instead would make best@1 the rate of
  run 0 alone, above pass@1 whenever run 0 was lucky.)
- **Majority patch** (no training): among the drawn attempts with a patch, the patch that occurs most often once
  normalised (`normalise_patch`: whitespace that does not change what the patch does); a tie goes to the patch
  whose earliest attempt has the lowest run, and the earliest attempt with that patch is selected; with no patch
  drawn, nothing resolves. Averaged over all draws of k (C(N, k) <= `MAX_DRAWS`), else over `MAX_DRAWS` draws
  sampled with a fixed seed. Each patch is normalised once (`patch_groups`); the draws vote over its group.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np

MAX_DRAWS = 2000
"""Draws of k attempts the majority baseline enumerates (beyond that it samples this many)."""


def normalise_patch(patch: str) -> str:
    """A patch with the whitespace that does not change what it does normalised: what makes two patches "the same".

    Inside a hunk (after an `@@` line) a line is its marker and content: the leading whitespace of the content is
    kept (indentation is Python's syntax) and trailing whitespace is dropped. Other lines (`diff --git`, `---`/`+++`
    file headers, `@@` hunk headers) have each run of whitespace made one space and their ends stripped, and
    `index` lines, whose blob hashes restate the content compared line by line, are dropped. Blank lines are
    dropped everywhere."""
    lines, in_hunk = [], False
    for line in patch.splitlines():
        if in_hunk and line[:1] in (" ", "+", "-"):
            line = line.rstrip()
        else:
            line = " ".join(line.split())
            # a hunk's lines run from its `@@` header to the next file's `diff` line (`\ No newline` stays in it)
            in_hunk = line.startswith("@@") or (in_hunk and not line.startswith("diff "))
            if line.startswith("index "):
                continue
        if line:
            lines.append(line)
    return "\n".join(lines)


def patch_groups(patches: list[str]) -> list[int | None]:
    """Per attempt, the number of its patch once normalised (equal patches share one), None without a patch."""
    numbers: dict[str, int] = {}
    return [numbers.setdefault(normalise_patch(p), len(numbers)) if p.strip() else None for p in patches]


def ranking(scores: list[float | None], patches: list[str]) -> list[int]:
    """Attempt indices (runs), best first, by the module's rule."""
    return sorted(range(len(scores)), key=lambda k: (not patches[k].strip(), scores[k] is None, -(scores[k] or 0.0), k))


def best_at_k(order: list[int], resolved: list[bool], k: int) -> float:
    """Expected resolved of the selected attempt over all draws of k attempts (closed form, exact)."""
    n = len(order)
    return sum(math.comb(n - 1 - j, k - 1) for j, a in enumerate(order) if resolved[a]) / math.comb(n, k)


def majority_choice(drawn: list[int], groups: list[int | None]) -> int | None:
    """The attempt the majority-patch rule selects among `drawn` (sorted by run), None when none has a patch;
    `groups` are the attempts' `patch_groups`."""
    chosen = _majority(np.array([drawn], dtype=np.int64), groups)[0]
    return None if chosen < 0 else int(chosen)


def majority_at_k(groups: list[int | None], resolved: list[bool], k: int, seed: int = 0) -> float:
    """Expected resolved of the majority patch's attempt over the draws of k attempts (see MAX_DRAWS); `groups`
    are the attempts' `patch_groups`."""
    n = len(groups)
    if math.comb(n, k) <= MAX_DRAWS:
        draws = np.array(list(itertools.combinations(range(n), k)), dtype=np.int64).reshape(-1, k)
    else:  # each row a uniform draw of k of the n attempts, in run order
        draws = np.sort(np.argsort(np.random.default_rng(seed).random((MAX_DRAWS, n)), axis=1)[:, :k], axis=1)
    chosen = _majority(draws, groups)
    return float(np.mean(np.where(chosen >= 0, np.asarray(resolved, dtype=bool)[chosen], False)))


def _majority(draws: np.ndarray, groups: list[int | None]) -> np.ndarray:
    """Per draw (a row of attempts in run order), the attempt the rule selects, -1 when none has a patch: the
    first attempt (lowest run) of the patch most attempts share, ties going to the patch whose first attempt is
    earliest. All draws at once: at 32 runs, 32 x 2000 draws per instance."""
    n = len(groups)
    group = np.array([-1 if g is None else g for g in groups], dtype=np.int64)[draws]
    rows = np.broadcast_to(np.arange(len(draws))[:, None], draws.shape)
    has = group >= 0
    size = max(int(group.max(initial=-1)) + 1, 1)
    members, first = np.zeros((len(draws), size), np.int64), np.full((len(draws), size), n, np.int64)
    np.add.at(members, (rows[has], group[has]), 1)
    np.minimum.at(first, (rows[has], group[has]), draws[has])
    best = np.argmax(members * (n + 1) - first, axis=1)  # more members first, then the earlier first attempt
    return np.where(has.any(axis=1), first[np.arange(len(draws)), best], -1)


def auc(scores: list[float], labels: list[bool]) -> float | None:
    """Area under the ROC curve: the probability that a resolved attempt scores above an unresolved one (ties
    count half); the Mann-Whitney statistic, computed here rather than adding scikit-learn for one number."""
    pos = np.array([s for s, y in zip(scores, labels) if y])
    neg = np.array([s for s, y in zip(scores, labels) if not y])
    if not len(pos) or not len(neg):
        return None
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def summarise(instances: list[dict], runs: int) -> dict:
    """best@k, majority@k, pass@k and the mean over `instances` (each {"scores", "patches", "resolved", "graded"}
    per run), and the verifier's accuracy and AUC on the scored attempts whose grade is known: an
    attempt whose grader failed counts as unresolved in the rates, but its true label is unknown."""
    from swehero.eval.runs import pass_at_k

    ks = range(1, runs + 1)
    best, majority, passed = Counter(), Counter(), Counter()
    for inst in instances:
        order, groups = ranking(inst["scores"], inst["patches"]), patch_groups(inst["patches"])
        for k in ks:
            best[k] += best_at_k(order, inst["resolved"], k)
            majority[k] += majority_at_k(groups, inst["resolved"], k)
            passed[k] += pass_at_k(runs, sum(inst["resolved"]), k)
    n = len(instances)
    scored = [(s, y) for inst in instances
              for s, y, p, graded in zip(inst["scores"], inst["resolved"], inst["patches"],
                                         inst["graded"])
              if s is not None and p.strip() and graded]
    return {
        "mean": round(best[1] / n, 4),
        "best_at_k": {str(k): round(best[k] / n, 4) for k in ks},
        "majority_at_k": {str(k): round(majority[k] / n, 4) for k in ks},
        "pass_at_k": {str(k): round(passed[k] / n, 4) for k in ks},
        "verifier_quality": {
            "scored": len(scored), "resolved": sum(y for _, y in scored),
            "accuracy": round(float(np.mean([(s >= 0.5) == y for s, y in scored])), 4) if scored else None,
            "auc": None if (a := auc([s for s, _ in scored], [y for _, y in scored])) is None else round(a, 4),
        },
    }
