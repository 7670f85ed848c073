"""Decontamination: drop training tasks that overlap the evaluation sets (SWE-bench Verified, Multilingual).

Three ways a training task can leak an evaluation task, checked in this order:
- `instance_id`: the same id (SWE-Gym and SWE-rebench reuse SWE-bench's `owner__name-PR` ids);
- `upstream_pr`: the same repository and pull request (from `owner__name-NUMBER` ids, or a `pull_number` /
  `pr_url` column), so a task rebuilt from the same fix under another id is caught;
- `near_duplicate_statement`: problem statements whose character n-gram Jaccard similarity, estimated with
  MinHash (datasketch's LSH index), reaches the threshold: a copied or reworded issue. Character shingles over the
  normalised words survive rewording far better than word shingles (a reworded issue in the tests: 0.66 with
  5-character shingles, 0.43 with word 3-grams; a different issue about the same API: 0.26 and 0.06).
- `contained_statement`: an evaluation statement copied into a longer training statement, which Jaccard misses
  (the extra text is in its denominator: an issue of 300 words inside one of 1,000 scores ~0.3): the share of the
  evaluation statement's word 13-grams that occur in the training statement. Exact (a dictionary of the evaluation
  sets' n-grams, so a training statement costs one pass over its words), and long n-grams, as GPT-3's and Llama's
  benchmark-contamination checks use: two issues about one API share words and short phrases, not 13 words in a row.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from swehero.errors import InputError
from swehero.recipe.stage import Range

_WORD = re.compile(r"\w+")
_PR_ID = re.compile(r"^(?P<owner>.+?)__(?P<name>.+)-(?P<number>\d+)$")
_PR_URL = re.compile(r"github\.com/([^/]+/[^/]+)/pull/(\d+)")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
"""What GitHub does not show of an issue: an issue form's instructions, left out of both statement checks."""


@dataclass(frozen=True)
class DecontamConfig:
    threshold: Annotated[float, Range(gt=0, lt=1)] = 0.5
    """Estimated Jaccard similarity of problem statements at which a training task is dropped."""
    ngram: Annotated[int, Range(min=1)] = 5
    """Characters per shingle (of the lower-cased words joined by single spaces)."""
    num_perm: Annotated[int, Range(min=2)] = 256
    """MinHash permutations (more: a finer estimate)."""
    contained: Annotated[float, Range(gt=0, max=1)] = 0.5
    """Share of an evaluation statement's word n-grams found in one training statement at which that training task
    is dropped (an issue copied into a longer one)."""
    contained_ngram: Annotated[int, Range(min=1)] = 13
    """Words per n-gram of the containment check (a statement with fewer words is left to the Jaccard check)."""

    def cross_field_problems(self) -> list[tuple[str, str]]:
        # datasketch's LSH index splits the permutations into bands and needs at least 2: how many a threshold
        # gets depends on num_perm (0.99 needs more than 256), so only building one tells
        from datasketch import MinHashLSH

        try:
            MinHashLSH(threshold=self.threshold, num_perm=self.num_perm)
        except ValueError as e:
            return [("threshold", f"datasketch's LSH index cannot be built for it with num_perm {self.num_perm} "
                                  f"({e}): lower the threshold or raise num_perm")]
        return []


def upstream_pr(task: dict) -> tuple[str, int] | None:
    """(owner/name lower-cased, PR number) the task was made from, when its row says."""
    match = _PR_URL.search(str(task.get("pr_url") or task.get("pull_url") or ""))
    if match:
        return _repo_key(match.group(1)), int(match.group(2))
    number = task.get("pull_number")
    if number not in (None, "") and task.get("repo"):
        if isinstance(number, float) and number.is_integer():  # a column with gaps, through pandas: 11099.0
            number = int(number)
        if not str(number).isdigit():
            raise InputError(f"task {task['instance_id']!r}: pull_number {number!r} is not a PR number")
        return _repo_key(task["repo"]), int(number)
    match = _PR_ID.match(task["instance_id"])
    if match:
        return f"{match['owner']}/{match['name']}".lower(), int(match["number"])
    return None


def _repo_key(repo: str) -> str:
    """`owner/name` lower-cased, however the row spells it: `Django/django.git`, `https://github.com/django/django`
    and `git@github.com:django/django.git` are one repository."""
    repo = repo.strip().lower().removesuffix("/").removesuffix(".git")
    for prefix in ("https://github.com/", "http://github.com/", "git@github.com:", "github.com/"):
        repo = repo.removeprefix(prefix)
    return repo


def _minhash(text: str, cfg: DecontamConfig):
    from datasketch import MinHash

    text = " ".join(_shown_words(text))
    shingles = {text[i:i + cfg.ngram] for i in range(max(len(text) - cfg.ngram + 1, 1))}
    mh = MinHash(num_perm=cfg.num_perm, seed=1)
    mh.update_batch([s.encode() for s in shingles])
    return mh


def _shown_words(text: str) -> list[str]:
    """The lower-cased words of a statement as GitHub shows it: not an issue form's hidden instructions."""
    return _WORD.findall(_HTML_COMMENT.sub(" ", text).lower())


def _word_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = _shown_words(text)
    return set(zip(*(words[i:] for i in range(n))))


BOILERPLATE_STATEMENTS = 3
"""An n-gram in this many evaluation statements is a template's (the repository's issue form, its `Versions`
snippet), not one issue's text: left out of the containment check."""


class _NgramIndex:
    """The evaluation statements' own word n-grams, for the share of each found in a training statement. Issue
    templates are left out: their instructions, in HTML comments GitHub does not show, and what several evaluation
    statements share (astropy's template alone made an unrelated issue 77% contained in another)."""

    def __init__(self, statements: dict[str, str], n: int) -> None:
        self.n, self.sizes, self.holders = n, {}, defaultdict(list)
        grams_of = {iid: _word_ngrams(text, n) for iid, text in statements.items()}
        shared = Counter(gram for grams in grams_of.values() for gram in grams)
        for iid, grams in grams_of.items():
            own = [gram for gram in grams if shared[gram] < BOILERPLATE_STATEMENTS]
            if own:
                self.sizes[iid] = len(own)
                for gram in own:
                    self.holders[gram].append(iid)

    def most_contained(self, text: str) -> tuple[float, str] | None:
        """(share, evaluation id) of the evaluation statement most contained in `text`, if any shares an n-gram."""
        found = Counter(iid for gram in _word_ngrams(text, self.n) for iid in self.holders.get(gram, ()))
        return max(((count / self.sizes[iid], iid) for iid, count in found.items()), default=None)


def decontaminate(train: list[dict], evals: list[dict], cfg: DecontamConfig = DecontamConfig()
                  ) -> tuple[list[dict], list[dict]]:
    """(kept training tasks, dropped ones as {instance_id, reason, matches, similarity?})."""
    from datasketch import MinHashLSH

    ids = {t["instance_id"] for t in evals}
    prs = {pr: t["instance_id"] for t in evals if (pr := upstream_pr(t))}
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    statements = {}
    for t in evals:  # in several evaluation sets (Verified is a subset of SWE-bench): one entry
        statements.setdefault(t["instance_id"], t["problem_statement"])
    hashes = {iid: _minhash(text, cfg) for iid, text in statements.items()}
    for iid, mh in hashes.items():
        lsh.insert(iid, mh)
    ngrams = _NgramIndex(statements, cfg.contained_ngram)
    kept, dropped = [], []
    for task in train:
        iid = task["instance_id"]
        if iid in ids:
            dropped.append({"instance_id": iid, "reason": "instance_id", "matches": iid})
        elif (pr := upstream_pr(task)) in prs:
            dropped.append({"instance_id": iid, "reason": "upstream_pr", "matches": prs[pr]})
        else:
            mh = _minhash(task["problem_statement"], cfg)
            scored = sorted(((mh.jaccard(hashes[c]), c) for c in lsh.query(mh)), reverse=True)
            contained = ngrams.most_contained(task["problem_statement"])
            if scored and scored[0][0] >= cfg.threshold:
                dropped.append({"instance_id": iid, "reason": "near_duplicate_statement", "matches": scored[0][1],
                                "similarity": round(scored[0][0], 3)})
            elif contained and contained[0] >= cfg.contained:
                dropped.append({"instance_id": iid, "reason": "contained_statement", "matches": contained[1],
                                "contained": round(contained[0], 3)})
            else:
                kept.append(task)
    return kept, dropped


def decontaminate_against(train: list[dict], sources: list[str], cfg: DecontamConfig = DecontamConfig()
                          ) -> tuple[list[dict], dict]:
    """Decontaminate against evaluation task files or named benchmarks; returns (kept, report)."""
    from swehero.rollout.tasks import load_tasks

    evals = [t for source in sources for t in load_tasks(source)]
    kept, dropped = decontaminate(train, evals, cfg)
    return kept, {"against": list(sources), "eval_tasks": len({t["instance_id"] for t in evals}),
                  "train_tasks": len(train), "kept": len(kept), "dropped": len(dropped),
                  "by_reason": dict(Counter(d["reason"] for d in dropped)), "dropped_tasks": dropped,
                  "threshold": cfg.threshold, "ngram": cfg.ngram, "contained": cfg.contained,
                  "contained_ngram": cfg.contained_ngram}


def decontaminate_file(tasks_file: str, against: list[str], out: Path, cfg: DecontamConfig) -> dict:
    """`swehero distill decontaminate`: the kept tasks to `out` (JSONL), the report beside it, named after it
    (`clean.jsonl` -> `clean.decontamination.json`: runs into one folder keep theirs); returns the report."""
    import json

    from swehero.jsonio import write_json_atomic
    from swehero.rollout.tasks import load_tasks

    if out.suffix != ".jsonl":  # the file is written as JSON Lines, which the task loader reads by its suffix
        raise InputError(f"{out}: the kept tasks are written as JSON Lines: name the file .jsonl")
    kept, report = decontaminate_against(load_tasks(tasks_file), against, cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in kept))
    write_json_atomic(out.with_name(f"{out.stem}.decontamination.json"), report, indent=1)
    return report
