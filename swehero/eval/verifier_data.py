"""Verifier training data: labelled attempts -> verifier examples (`swehero.data.verifier`) -> a packed dataset.

Inputs are canonical trajectory files whose records carry `resolved` true/false (a graded distillation run, an
imported set with labels such as nebius's SWE-rebench trajectories) and eval folders (every attempt of every run,
labelled by its grade). Which attempts become examples, in this order:

1. usable: labelled, with a non-empty patch and a task message (an unlabelled record, an ungraded attempt or one
   whose grader failed says nothing about its patch), and renderable as training data (an assistant turn writing a
   special token's text, `<|im_end|>`, is a reject, counted under `max_reject_fraction`, as `prepare` counts it);
2. decontaminated: instances overlapping the evaluation sets in `exclude` are dropped (same instance id, same
   upstream pull request, or a near-duplicate problem statement: the task message's `<issue_description>` or
   `<pr_description>` block, else the whole task message; `swehero.rollout.decontam`);
3. deduplicated by instance: attempts whose patches are equal once normalised as the majority patch's are
   (`swehero.eval.best_of.normalise_patch`: indentation counts) are one attempt; a patch graded both ways (a flaky
   test) is dropped (`conflicting_label`: the same patch under both answers teaches noise); at most
   `per_instance` attempts per instance and label are kept; "first" always means in the seeded order (sha256 of the
   seed and the trajectory id), never file order;
4. balanced: the larger label is cut to the size of the smaller, keeping first the attempts of instances that have
   both labels (a resolved and an unresolved attempt at the same task teach the verifier to judge the patch, not
   the task's difficulty), then in the seeded order.

Each kept attempt becomes an example fitted to `seq_length` by the middle-truncation rule (the one selection uses);
the examples are written in the seeded order to `examples.jsonl` and packed by `prepare` with the `answer` mask,
so each example trains exactly one token. `verifier_data.json` counts what every step kept and dropped.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from swehero.data.sources import MAX_REJECT_FRACTION
from swehero.errors import InputError
from swehero.eval.best_of import normalise_patch
from swehero.recipe.stage import InputPath, ModelRef, Range
from swehero.rollout.tasks import TaskSource

EXAMPLES = "examples.jsonl"
DATASET = "dataset"
STATS = "verifier_data.json"
DECONTAMINATION = "decontamination.json"
_ISSUE = re.compile(r"<(issue_description|pr_description)>\n?(.*?)\n?</\1>", re.DOTALL)


@dataclass(kw_only=True)
class Settings:
    """Stage kind `verifier_data` (and `swehero data verifier`): labelled attempts -> packed verifier examples."""

    inputs: list[InputPath]
    """Canonical trajectory files or folders of them (records with `resolved` true/false), and eval folders
    (labels from their grades)."""
    tokenizer: ModelRef | None = None
    """Tokenizer (with chat template) of the model the verifier is trained from; default: the recipe's model's."""
    seq_length: Annotated[int, Range(min=1)] = 32768
    """Tokens per example and per packed sample; longer attempts are truncated from the middle. Selection must use
    the same value."""
    exclude: list[TaskSource] = field(default_factory=list)
    """Evaluation sets (task files, or `verified`/`multilingual`) whose instances are dropped (decontamination)."""
    per_instance: int = 1
    """Attempts kept per instance and label (after merging equal patches)."""
    balance: bool = True
    """Cut the larger label to the size of the smaller."""
    valid_fraction: Annotated[float, Range(min=0, lt=1)] = 0.05
    """Share of instances held out for the validation loss."""
    seed: int | None = None
    """Seeds the order of attempts and the train/valid split; default: the recipe's seed (0 from the CLI)."""
    workers: int = -1
    """Processes packing the examples (`prepare`); -1: every core, 0: none."""
    max_reject_fraction: Annotated[float, Range(min=0, max=1)] = MAX_REJECT_FRACTION
    """Fail when more than this share of the records read is malformed."""


@dataclass
class Candidate:
    """A usable labelled attempt, as much of it as choosing needs (the conversation is read again later)."""

    where: str
    """`file:line` of the record, or the trajectory file of an eval attempt."""
    id: str
    instance_id: str
    resolved: bool
    patch_key: str
    """Hash of the patch normalised (`normalise_patch`)."""
    order: str
    """Seeded sort key."""


def issue_text(task_message: str) -> str:
    """The problem statement inside a task message (OpenHands' `<issue_description>` or `<pr_description>`
    block), else the whole message."""
    found = _ISSUE.search(task_message)
    return found.group(2) if found else task_message


def _labelled(inputs: list[str], trainable, on_reject, counts: Counter):
    """Every record or eval attempt of `inputs`, streamed: yields (where, record, resolved, patch) of those usable
    for examples (valid and `trainable`, labelled, with a patch and a task message), counting why the others are
    not."""
    from swehero.data.sources import parse_row
    from swehero.data.trajectory import Reject, validate

    for where, row, attempt in _read(inputs):
        counts["read"] += 1
        if attempt is not None:
            if not attempt.patch.strip():
                counts["empty_patch"] += 1
                continue
            if attempt.resolved is None or attempt.infra_failure:
                counts["not_graded" if attempt.resolved is None else "grader_failure"] += 1
                continue
            row = attempt.record()
        try:
            record = trainable(validate(parse_row(row)))
        except Reject as r:
            on_reject(where, r, row.get("id") if isinstance(row, dict) else None)
            continue
        resolved = attempt.resolved if attempt is not None else record["resolved"]
        patch = attempt.patch if attempt is not None else record["patch"] or ""
        if resolved is None:
            counts["unlabelled"] += 1
        elif not patch.strip():
            counts["empty_patch"] += 1
        elif not any(m["role"] == "user" for m in record["messages"]):
            counts["no_task_message"] += 1
        else:
            yield where, record, resolved, patch


def _read(inputs: list[str]):
    """(where, row, None) for the rows of trajectory files, (trajectory file, None, attempt) for eval attempts."""
    from swehero.data.sources import expand, read_rows
    from swehero.eval.attempts import read_attempts
    from swehero.eval.runs import is_eval_folder

    for path in inputs:
        if is_eval_folder(Path(path)):
            for attempts in read_attempts([Path(path)])[1].values():
                for attempt in attempts:
                    yield str(attempt.trajectory), None, attempt
            continue
        for file in expand([path]):
            for where, row in read_rows(file):
                yield where, row, None


def choose(candidates: list[Candidate], per_instance: int, balance: bool) -> tuple[list[Candidate], Counter]:
    """Steps 3 and 4 of the module's rule: (chosen, in the seeded order; what each step dropped)."""
    dropped: Counter = Counter()
    labels = defaultdict(set)
    for c in candidates:
        labels[c.instance_id, c.patch_key].add(c.resolved)
    groups: dict[tuple[str, bool], list[Candidate]] = defaultdict(list)
    for c in sorted(candidates, key=lambda c: c.order):
        if len(labels[c.instance_id, c.patch_key]) > 1:
            dropped["conflicting_label"] += 1
            continue
        group = groups[c.instance_id, c.resolved]
        if any(c.patch_key == kept.patch_key for kept in group):
            dropped["duplicate_patch"] += 1
        elif len(group) >= per_instance:
            dropped["per_instance"] += 1
        else:
            group.append(c)
    by_label = {label: [c for (_, lab), group in groups.items() if lab == label for c in group]
                for label in (True, False)}
    if balance:
        both = {iid for iid, label in groups if (iid, not label) in groups}
        size = min(len(v) for v in by_label.values())
        for label, kept in by_label.items():
            kept.sort(key=lambda c: (c.instance_id not in both, c.order))
            dropped["balance"] += len(kept) - size
            by_label[label] = kept[:size]
    return sorted(by_label[True] + by_label[False], key=lambda c: c.order), dropped


def build_verifier_data(settings: Settings, tokenizer_path: str, out: Path, seed: int = 0) -> dict:
    """Write `examples.jsonl`, the packed `dataset/` and `verifier_data.json` under `out`; returns the stats."""
    from tqdm import tqdm

    from swehero.data.prepare import PrepareConfig, prepare
    from swehero.data.render import load_tokenizer
    from swehero.data.sources import Rejects
    from swehero.data.verifier import FORMAT, VerifierFormat
    from swehero.rollout.decontam import decontaminate_against
    from swehero.jsonio import write_json_atomic

    fmt = VerifierFormat(load_tokenizer(tokenizer_path), settings.seq_length)  # before `out`: a bad one makes none
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seed = seed if settings.seed is None else settings.seed
    rejects, counts = Rejects(out / "rejects.jsonl"), Counter()
    candidates, tasks = [], {}
    usable = tqdm(_labelled(list(settings.inputs), fmt.renderer.trainable, rejects.add, counts),
                  desc="labelled attempts", unit=" attempts")
    for where, record, resolved, patch in usable:
        order = hashlib.sha256(f"{seed}:{record['id']}".encode()).hexdigest()
        patch_key = hashlib.sha256(normalise_patch(patch).encode()).hexdigest()
        candidates.append(Candidate(where, record["id"], record["instance_id"], resolved, patch_key, order))
        if record["instance_id"] not in tasks:
            task_message = next(m["content"] for m in record["messages"] if m["role"] == "user")
            tasks[record["instance_id"]] = {"instance_id": record["instance_id"], "repo": record["repo"],
                                            "problem_statement": issue_text(task_message)}
    rejects.close()
    rejects.check(counts["read"], settings.max_reject_fraction)
    counts["usable"] = len(candidates)
    if settings.exclude:
        kept_tasks, report = decontaminate_against(list(tasks.values()), list(settings.exclude))
        write_json_atomic(out / DECONTAMINATION, report)
        kept_ids = {t["instance_id"] for t in kept_tasks}
        counts["decontaminated"] = sum(c.instance_id not in kept_ids for c in candidates)
        candidates = [c for c in candidates if c.instance_id in kept_ids]
    missing = [name for label, name in ((True, "resolved"), (False, "unresolved"))
               if not any(c.resolved is label for c in candidates)]
    if missing:
        raise InputError(f"no {missing[0]} attempts in {', '.join(settings.inputs)} (counts: {dict(counts)}): a "
                         "verifier learns from both labels")
    chosen, dropped = choose(candidates, settings.per_instance, settings.balance)
    counts.update(dropped)
    examples = _write_examples(settings, fmt, {c.where: c for c in chosen}, out, counts)
    if not examples:
        raise InputError(f"no attempt of {', '.join(settings.inputs)} fits {settings.seq_length} tokens")
    shutil.rmtree(out / DATASET, ignore_errors=True)  # prepare keeps a complete folder: these examples are new
    cfg = PrepareConfig(seq_length=settings.seq_length, mask="answer", too_long="drop",
                        valid_fraction=settings.valid_fraction, seed=seed, workers=settings.workers,
                        max_reject_fraction=0.0)
    packed = prepare([str(out / EXAMPLES)], tokenizer_path, out / DATASET, cfg)
    if packed["trained_tokens"] != len(examples) or packed["trajectories"]["kept"] != len(examples):
        raise RuntimeError(f"packing {len(examples)} verifier examples trained {packed['trained_tokens']} tokens: "
                           "expected exactly one per example")
    labels = Counter(c.resolved for c in examples)
    stats = {"format": FORMAT, "inputs": list(settings.inputs), "exclude": list(settings.exclude),
             "seq_length": settings.seq_length, "per_instance": settings.per_instance, "balance": settings.balance,
             "seed": seed, "counts": dict(counts), "rejected": dict(rejects.counts),
             "examples": len(examples), "resolved": labels[True], "unresolved": labels[False],
             "instances": len({c.instance_id for c in examples}), "samples": packed["samples"],
             "tokens": packed["tokens"]}
    write_json_atomic(out / STATS, stats, indent=1)
    return stats


def _write_examples(settings: Settings, fmt, wanted: dict[str, Candidate], out: Path, counts: Counter
                    ) -> list[Candidate]:
    """Read the chosen attempts again, fit each into an example and write them to `examples.jsonl` in the seeded
    order (through a scratch file and byte offsets: the examples are never all in memory); returns those written."""
    from tqdm import tqdm

    from swehero.data.verifier import FORMAT, answer_message

    scratch, offsets = out / f".{EXAMPLES}.unordered", {}
    with open(scratch, "wb") as f, tqdm(total=len(wanted), desc="verifier examples", unit=" examples") as bar:
        for where, record, resolved, patch in _labelled(list(settings.inputs), fmt.renderer.trainable,
                                                        lambda *_: None, Counter()):
            if where not in wanted:
                continue
            bar.update()
            judged = fmt.judge(record["messages"], record["tools"], patch)
            if judged is None:
                counts["too_long"] += 1
                continue
            counts["truncated"] += bool(judged.omitted_messages or judged.omitted_patch_lines)
            example = {
                "id": f"{record['id']}.verifier", "instance_id": record["instance_id"], "repo": record["repo"],
                "source": record["source"], "stage": record["stage"],
                "messages": judged.messages + [answer_message(resolved)], "tools": record["tools"], "patch": patch,
                "resolved": resolved,
                "metadata": {"verifier": {"format": FORMAT, "trajectory": record["id"], "from": where,
                                          "omitted_messages": judged.omitted_messages,
                                          "omitted_patch_lines": judged.omitted_patch_lines}}}
            if not offsets:  # the template trains the answer token alone (prepare's stats check every example)
                fmt.render_example(example)
            line = (json.dumps(example, ensure_ascii=False) + "\n").encode()
            offsets[where] = (f.tell(), len(line))
            f.write(line)
    written = [c for c in sorted(wanted.values(), key=lambda c: c.order) if c.where in offsets]
    with open(scratch, "rb") as src, open(out / EXAMPLES, "wb") as dst:
        for c in written:
            src.seek(offsets[c.where][0])
            dst.write(src.read(offsets[c.where][1]))
    scratch.unlink()
    return written
