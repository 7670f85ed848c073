"""Choosing one attempt per instance among N runs, and what the choice is worth: best@k beside pass@k.

Rules (stated in every report):

- **Verifier ranking.** Per instance the attempts are ranked: attempts with a patch before those without (an empty
  patch resolves nothing), then by the verifier's score, highest first (attempts it could not score last). The
  selected attempt is the first of the ranking; among attempts the ranking ties (equal scores: a confident
  verifier's scores meet at 1.0) `select.json` names the lowest run.
- **best@k.** The expected resolved rate of the selected attempt when the selector sees k of the N attempts, drawn
  at random without replacement, averaged over every such draw and over the orders of tied attempts (a tie is
  broken at random, not by run: breaking it by run would make a verifier that scores every attempt alike select
  run 0's attempts, and best@N run 0's rate). Per tier of tied attempts: the draws with none ranked above it and
  at least one of it, C(N - above, k) - C(N - above - size, k) of the C(N, k), each selecting one of its drawn
  attempts, a resolved one with the tier's resolved share. This is the counterpart of pass@k's unbiased
  estimator (which averages "at least one drawn attempt resolves" over the same draws): best@1 is the mean
  resolved rate of the runs, best@k never exceeds pass@k, and equals it when the verifier ranks every resolved
  attempt first. (Selecting among "the first k runs" instead would make best@1 the rate of run 0 alone.)
- **Majority patch** (no training): among the drawn attempts with a patch, the patch that occurs most often once
  normalised (`normalise_patch`: whitespace that does not change what the patch does), and one of its drawn
  attempts; with no patch drawn, nothing resolves. majority@k averages over all draws of k (C(N, k) <=
  `MAX_DRAWS`, else `MAX_DRAWS` draws sampled with a fixed seed) and, as best@k, over the ways of breaking ties:
  between patches drawn equally often, and between the drawn attempts of the chosen patch (which may be graded
  differently). `select.json` names one attempt: of the patches tied, the one whose earliest attempt has the
  lowest run, and that earliest attempt. Each patch is normalised once (`patch_groups`); the draws vote over its
  group.
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


def _rank(scores: list[float | None], patches: list[str], k: int) -> tuple:
    """Attempt k's place in the ranking, equal for tied attempts."""
    return not patches[k].strip(), scores[k] is None, -(scores[k] or 0.0)


def ranking(scores: list[float | None], patches: list[str]) -> list[int]:
    """Attempt indices (runs), best first, by the module's rule; tied attempts by run."""
    return sorted(range(len(scores)), key=lambda k: (_rank(scores, patches, k), k))


def best_at_k(scores: list[float | None], patches: list[str], resolved: list[bool], k: int) -> float:
    """Expected resolved of the selected attempt over all draws of k attempts and all orders of tied attempts
    (closed form, exact)."""
    n, above, total = len(scores), 0, 0.0
    for _, tier in itertools.groupby(ranking(scores, patches), key=lambda a: _rank(scores, patches, a)):
        tier = list(tier)
        draws = math.comb(n - above, k) - math.comb(n - above - len(tier), k)  # none above it drawn, some of it
        total += draws * sum(resolved[a] for a in tier) / len(tier)
        above += len(tier)
    return total / math.comb(n, k)


def majority_choice(drawn: list[int], groups: list[int | None]) -> int | None:
    """The attempt `select.json` names by the majority-patch rule among `drawn` (sorted by run), None when none
    has a patch: the earliest attempt of the most common patch, ties going to the patch seen first. `groups` are
    the attempts' `patch_groups`."""
    with_patch = [a for a in drawn if groups[a] is not None]
    votes = Counter(groups[a] for a in with_patch)
    return max(with_patch, key=lambda a: votes[groups[a]], default=None)  # max keeps the first of equals


def majority_at_k(groups: list[int | None], resolved: list[bool], k: int, seed: int = 0) -> float:
    """Expected resolved of the majority patch's attempt over the draws of k attempts (see MAX_DRAWS) and the ways
    of breaking ties; `groups` are the attempts' `patch_groups`. All draws at once: at 32 runs, 32 x 2000 draws
    per instance."""
    n = len(groups)
    if math.comb(n, k) <= MAX_DRAWS:
        draws = np.array(list(itertools.combinations(range(n), k)), dtype=np.int64).reshape(-1, k)
    else:  # each row a uniform draw of k of the n attempts
        draws = np.argsort(np.random.default_rng(seed).random((MAX_DRAWS, n)), axis=1)[:, :k]
    group = np.array([-1 if g is None else g for g in groups], dtype=np.int64)[draws]
    has = group >= 0
    rows = np.broadcast_to(np.arange(len(draws))[:, None], draws.shape)[has]
    size = max(int(group.max(initial=-1)) + 1, 1)
    members, wins = np.zeros((len(draws), size)), np.zeros((len(draws), size))
    np.add.at(members, (rows, group[has]), 1)
    np.add.at(wins, (rows, group[has]), np.asarray(resolved, dtype=float)[draws][has])
    top = (members == members.max(axis=1, keepdims=True)) & (members > 0)  # the patches drawn most often
    share = np.divide(wins, members, out=np.zeros_like(wins), where=members > 0)
    return float(np.mean((top * share).sum(axis=1) / np.maximum(top.sum(axis=1), 1)))


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
        groups = patch_groups(inst["patches"])
        for k in ks:
            best[k] += best_at_k(inst["scores"], inst["patches"], inst["resolved"], k)
            majority[k] += majority_at_k(groups, inst["resolved"], k)
            passed[k] += pass_at_k(runs, sum(inst["resolved"]), k)
    n = len(instances)
    scored = [(s, y) for inst in instances
              for s, y, p, graded in zip(inst["scores"], inst["resolved"], inst["patches"],
                                         inst["graded"])
              if s is not None and p.strip() and graded]
    return {
        "mean": best[1] / n,
        "best_at_k": {str(k): best[k] / n for k in ks},
        "majority_at_k": {str(k): majority[k] / n for k in ks},
        "pass_at_k": {str(k): passed[k] / n for k in ks},
        "verifier_quality": {
            "scored": len(scored), "resolved": sum(y for _, y in scored),
            "accuracy": float(np.mean([(s >= 0.5) == y for s, y in scored])) if scored else None,
            "auc": auc([s for s, _ in scored], [y for _, y in scored]),
        },
    }
