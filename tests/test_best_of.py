"""Selection among repeated runs: the ranking rule, best@k (closed form against enumerating every draw, never above
pass@k, equal to it for a verifier that ranks resolved attempts first), the majority-patch baseline on hand-made
attempts, and the verifier's AUC."""

import itertools
import math
import random
from collections import Counter
from fractions import Fraction

import pytest

from swehero.eval.best_of import (
    auc,
    best_at_k,
    majority_at_k,
    majority_choice,
    normalise_patch,
    patch_groups,
    ranking,
    summarise,
)
from swehero.eval.runs import pass_at_k


def test_ranking_puts_patches_first_then_score_then_lowest_run():
    scores = [0.2, 0.9, None, 0.9, 0.95, 0.7]
    patches = ["p", "p", "p", "p", "", "p"]
    # run 4 scores highest but has no patch; runs 1 and 3 tie (lowest run first); run 2 could not be scored
    assert ranking(scores, patches) == [1, 3, 5, 0, 2, 4]


def _over_run_orders(value, n):
    """The mean of `value(order)` over every order of the n runs (each a list of the attempts, first to last): a
    rule that breaks ties by run, averaged so, breaks them at random."""
    orders = list(itertools.permutations(range(n)))
    return sum(Fraction(value(list(order))) for order in orders) / len(orders)


def _enumerated_best_at_k(scores, patches, resolved, k):
    """Over every draw of k and every order of the runs, the resolved of the first drawn attempt in the ranking."""
    def value(order):
        draws = list(itertools.combinations(range(len(order)), k))
        first = [min(d, key=lambda a: (not patches[a].strip(), scores[a] is None, -(scores[a] or 0.0),
                                       order.index(a))) for d in draws]
        return Fraction(sum(resolved[a] for a in first), len(draws))
    return _over_run_orders(value, len(scores))


def test_best_at_k_averages_over_all_draws_and_ties_and_is_bounded_by_pass_at_k():
    rng = random.Random(0)
    for _ in range(150):
        n = rng.randint(1, 5)
        resolved = [rng.random() < 0.4 for _ in range(n)]
        scores = [rng.choice([None, rng.random(), 0.5, 1.0]) for _ in range(n)]
        patches = [rng.choice(["p", "p", ""]) for _ in range(n)]
        resolved = [r and bool(p) for r, p in zip(resolved, patches)]  # an empty patch resolves nothing
        oracle = [float(r) for r in resolved]  # every resolved attempt first
        for k in range(1, n + 1):
            best = best_at_k(scores, patches, resolved, k)
            assert best == pytest.approx(float(_enumerated_best_at_k(scores, patches, resolved, k)), abs=1e-12)
            assert best <= pass_at_k(n, sum(resolved), k) + 1e-12
            assert best_at_k(oracle, patches, resolved, k) == pytest.approx(pass_at_k(n, sum(resolved), k), abs=1e-12)
        assert best_at_k(scores, patches, resolved, 1) == pytest.approx(sum(resolved) / n)  # best@1 is the mean


def test_a_verifier_that_scores_every_attempt_alike_selects_the_mean_whatever_the_order_of_the_runs():
    """Breaking ties by run made best@3 of these runs 75% or 25% depending on which run came first."""
    resolved = [[True, False, True], [False, True, False], [False, False, False], [True, True, True]]
    for order in itertools.permutations(range(3)):
        for k in (1, 2, 3):
            best = [best_at_k([0.5] * 3, ["p"] * 3, [r[i] for i in order], k) for r in resolved]
            assert sum(best) / 4 == pytest.approx(6 / 12)
            majority = [_majority_at_k(["+a\n", "+b\n", "+c\n"], [r[i] for i in order], k) for r in resolved]
            assert sum(majority) / 4 == pytest.approx(6 / 12)


def _majority(drawn, patches):
    return majority_choice(drawn, patch_groups(patches))


def _majority_at_k(patches, resolved, k):
    return majority_at_k(patch_groups(patches), resolved, k)


def test_majority_patch_on_hand_made_attempts():
    assert patch_groups(["+a\n", "", "+b\n", "+a  \n", " \n"]) == [0, None, 1, 0, None]
    # whitespace-equal patches count together: runs 0 and 2 outvote runs 1 and 3
    assert _majority([0, 1, 2, 3], ["+a\n", "+b\n", "+a  \n", "+c\n"]) == 0
    # a tie goes to the patch seen first, and the earliest attempt with it is selected
    assert _majority([0, 1, 2, 3], ["+b\n", "+a\n", "+a\n", "+b\n"]) == 0
    assert _majority([1, 2, 3], ["+b\n", "+a\n", "+a\n", "+b\n"]) == 1
    assert _majority([0, 1, 2], ["", " \n", "+x\n"]) == 2  # empty patches never vote
    assert _majority([0, 1], ["", ""]) is None
    # k = 2 over ["A", "A", "B"]: {0,1} -> A; {0,2} and {1,2} tie: A or the resolved B, half each
    assert [_majority_at_k(["+A\n", "+A\n", "+B\n"], [False, False, True], k) for k in (1, 2, 3)] == \
        pytest.approx([1 / 3, 1 / 3, 0.0])
    # over ["A", "B", "B"]: {1,2} picks B at k = 2, the two others tie; all three pick B
    assert [_majority_at_k(["+A\n", "+B\n", "+B\n"], [False, True, True], k) for k in (1, 2, 3)] == \
        pytest.approx([2 / 3, 2 / 3, 1.0])
    # equal patches graded differently (a flaky test): the chosen patch's drawn attempts count by their share
    assert _majority_at_k(["+A\n", "+A\n", "+B\n"], [True, False, False], 3) == pytest.approx(0.5)


def test_majority_at_k_is_the_run_order_rule_averaged_over_every_order_of_the_runs():
    rng = random.Random(1)
    for _ in range(60):
        n = rng.randint(1, 5)
        patches = [rng.choice(["+a\n", "+b\n", "+c\n", "", "+a \n"]) for _ in range(n)]
        resolved = [bool(p.strip()) and rng.random() < 0.5 for p in patches]
        groups = patch_groups(patches)
        for k in range(1, n + 1):
            def value(order):
                """The rule with ties broken by `order`: the first drawn attempt of a most common patch."""
                total = 0
                for drawn in itertools.combinations(range(n), k):
                    votes = Counter(groups[a] for a in drawn if groups[a] is not None)
                    first = [a for a in sorted(drawn, key=order.index)
                             if groups[a] is not None and votes[groups[a]] == max(votes.values())]
                    total += bool(first) and resolved[first[0]]
                return Fraction(total, math.comb(n, k))
            assert majority_at_k(groups, resolved, k) == pytest.approx(float(_over_run_orders(value, n)), abs=1e-12)


HEAD = "diff --git a/m.py b/m.py\nindex 3f2a1b0..9c4d2e7 100644\n--- a/m.py\n+++ b/m.py\n@@ -1,3 +1,5 @@ def f(x):\n"
EARLY_RETURN = HEAD + "+    if x is None:\n+        x = 0\n+        return x\n     return x + 1\n"
ALWAYS_RETURN = HEAD + "+    if x is None:\n+        x = 0\n+    return x\n     return x + 1\n"  # breaks f


def test_patches_that_differ_in_indentation_are_different_patches():
    assert normalise_patch(EARLY_RETURN) != normalise_patch(ALWAYS_RETURN)
    assert normalise_patch(HEAD + "+\tx = 1\n") != normalise_patch(HEAD + "+    x = 1\n")
    # what does not change the patch still does not count: trailing whitespace, blank lines, blob hashes, headers'
    # spacing, a blank context line whose space an editor stripped
    respaced = ("diff --git  a/m.py b/m.py\nindex 0000000..1111111 100644\n--- a/m.py \n+++ b/m.py\n"
                "@@  -1,3 +1,5 @@  def f(x):\n\n+    if x is None:  \n+        x = 0\t\n+        return x\n"
                "     return x + 1 \n\n")
    assert normalise_patch(respaced) == normalise_patch(EARLY_RETURN)
    assert normalise_patch(HEAD + " \n+    y = 2\n") == normalise_patch(HEAD + "\n+    y = 2\n")
    # two resolved attempts and one whose indentation breaks f: the broken one is not outvoted by a merged pair
    patches, resolved = [HEAD + "+    x = x or 0\n", ALWAYS_RETURN, EARLY_RETURN], [True, False, True]
    assert _majority([0, 1, 2], patches) == 0
    assert _majority_at_k(patches, resolved, 3) == pytest.approx(2 / 3)  # three patches tie (merged: 1/2)


def test_each_patch_is_normalised_once_however_many_draws_vote(monkeypatch):
    import swehero.eval.best_of as best_of

    calls = []
    real = best_of.normalise_patch
    monkeypatch.setattr(best_of, "normalise_patch", lambda patch: calls.append(patch) or real(patch))
    n = 12  # C(12, 6) = 924 draws at k = 6 alone
    inst = {"patches": [f"+fix {i % 3}\n" for i in range(n)], "resolved": [i % 3 == 0 for i in range(n)],
            "scores": [i / n for i in range(n)], "graded": [True] * n}
    summary = summarise([inst], n)
    assert len(calls) == n
    assert summary["majority_at_k"][str(n)] == pytest.approx(1 / 3)  # three patches of 4 attempts tie


def test_majority_samples_draws_beyond_the_enumeration_limit():
    patches = ["+A\n"] * 12 + ["+B\n"] * 12 + [""] * 8  # C(32, 16) draws: sampled, with a fixed seed
    resolved = [True] * 12 + [False] * 20
    first, again = _majority_at_k(patches, resolved, 16), _majority_at_k(patches, resolved, 16)
    assert first == again and 0.3 < first < 0.7


def test_auc_and_summary():
    assert auc([0.9, 0.8, 0.3, 0.1], [True, True, False, False]) == 1.0
    assert auc([0.5, 0.5], [True, False]) == 0.5
    assert auc([0.9, 0.1, 0.8], [False, True, True]) == 0.0  # every resolved attempt scores below the other
    assert auc([0.3], [True]) is None
    instances = [
        {"scores": [0.9, 0.2, None], "patches": ["+a\n", "+b\n", ""], "resolved": [True, False, False]},
        {"scores": [0.1, 0.6, 0.7], "patches": ["+a\n", "+a\n", "+c\n"], "resolved": [True, True, False]},
    ]
    s = summarise([{**inst, "graded": [True] * 3} for inst in instances], 3)
    assert s["mean"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert s["best_at_k"]["3"] == 0.5 and s["pass_at_k"]["3"] == 1.0  # the verifier picks run 2 of instance 2
    # instance 1: "+a" and "+b" tie (half resolved); instance 2: "+a" is the most common patch
    assert s["majority_at_k"]["3"] == pytest.approx(0.75)
    assert s["verifier_quality"] == {"scored": 5, "resolved": 3, "accuracy": 0.6, "auc": 0.5}

    # The grader failed on instance 2's run 2 for good: unresolved in the rates, as the runs' reports count it, but
    # its true label is unknown, so the verifier is not judged on it (it scored 0.7, which counted as a mistake).
    graded = [{**instances[0], "graded": [True] * 3}, {**instances[1], "graded": [True, True, False]}]
    g = summarise(graded, 3)
    assert {k: g[k] for k in ("mean", "best_at_k", "pass_at_k")} == {k: s[k] for k in ("mean", "best_at_k", "pass_at_k")}
    assert g["verifier_quality"] == {"scored": 4, "resolved": 3, "accuracy": 0.75, "auc": pytest.approx(2 / 3)}
