"""Verifier examples: exactly the answer token is trained, the tokens before it are the prompt selection scores
(both held to `apply_chat_template`), the middle-truncation rule, and the choice of attempts (labels, duplicates,
per-instance cap, balance, decontamination) down to the packed dataset."""

import json
from collections import Counter

import numpy as np
import pytest
from data_samples import samples

from swehero.data.trajectory import template_messages, validate
from swehero.errors import InputError
from swehero.data.verifier import (
    VerifierFormat,
    answer_message,
    answer_token_ids,
    judging_message,
    shorten_patch,
    split_turns,
)

PATCH = "diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-    return a\n+    return b\n"


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def example(record: dict, fmt: VerifierFormat, resolved: bool, patch: str = PATCH) -> tuple[dict, object]:
    judged = fmt.judge(record["messages"], record["tools"], patch)
    return {**record, "messages": judged.messages + [answer_message(resolved)], "resolved": resolved}, judged


@pytest.mark.parametrize("which", ["qwen_tokenizer", "tiny_tokenizer"])
@pytest.mark.parametrize("resolved", [True, False])
@pytest.mark.parametrize("sample", samples(), ids=lambda s: s["id"])
def test_example_trains_only_the_answer_token_and_its_prefix_is_the_selection_prompt(request, which, resolved,
                                                                                      sample):
    tok = request.getfixturevalue(which)
    fmt = VerifierFormat(tok, 1 << 20)
    record = validate(sample)
    ex, judged = example(record, fmt, resolved)
    rendered = fmt.render_example(ex)
    ids = rendered.input_ids.tolist()
    assert ids == tok.apply_chat_template(template_messages(ex["messages"]), tools=ex["tools"],
                                          tokenize=True)["input_ids"]
    trained = np.flatnonzero(rendered.loss_mask)
    assert len(trained) == 1
    at = int(trained[0])
    word = "yes" if resolved else "no"
    assert ids[at] == tok.encode(word, add_special_tokens=False)[0] == fmt.answer_ids[resolved]
    assert tok.decode(ids[at:]) == f"{word}<|im_end|>\n"  # after the answer only the template's closing marker
    prompt = tok.apply_chat_template(template_messages(judged.messages), tools=ex["tools"],
                                     add_generation_prompt=True, tokenize=True)["input_ids"]
    assert ids[:at] == prompt == fmt.prompt_ids(judged, ex["tools"])
    assert ex["messages"][:len(record["messages"])] == record["messages"]  # nothing of the attempt is changed


def test_answer_tokens_of_qwen_and_a_tokenizer_that_splits_them(qwen_tokenizer):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    assert answer_token_ids(qwen_tokenizer) == {True: 9693, False: 2152}  # "yes", "no" in Qwen2.5's vocabulary
    chars = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}
    split = Tokenizer(models.BPE(vocab=chars, merges=[]))
    split.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ValueError, match="'yes'.*must be one token"):
        answer_token_ids(PreTrainedTokenizerFast(tokenizer_object=split))


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_long_attempts_lose_turns_from_the_middle_then_patch_lines(qwen_tokenizer):
    record = validate(samples()[0])
    messages, tools = record["messages"], record["tools"]
    head, turns = split_turns(messages)
    assert head == messages[:2] and [t[0]["role"] for t in turns] == ["assistant"] * len(turns) and len(turns) == 3
    whole = VerifierFormat(qwen_tokenizer, 1 << 20)
    full = whole.length(whole.judge(messages, tools, PATCH).messages + [answer_message(True)], tools)
    assert whole.judge(messages, tools, PATCH).omitted_messages == 0
    for budget in range(full - 1, full - 400, -19):  # every budget: the fewest whole turns dropped, all fitting
        fmt = VerifierFormat(qwen_tokenizer, budget)
        judged = fmt.judge(messages, tools, PATCH)
        if judged is None or judged.omitted_patch_lines:
            break
        kept = judged.messages[len(head):-1]
        dropped = judged.omitted_messages
        assert judged.messages[:len(head)] == head and kept == messages[len(head) + dropped:]
        assert judged.messages[-1] == judging_message(PATCH, dropped)
        assert fmt.length(judged.messages + [answer_message(False)], tools) <= budget
        # one turn fewer dropped would not fit
        whole_turns = [sum(map(len, turns[:d])) for d in range(len(turns) + 1)]
        d = whole_turns.index(dropped)
        if d:
            fewer = [m for t in turns[d - 1:] for m in t]
            longer = head + fewer + [judging_message(PATCH, whole_turns[d - 1]), answer_message(True)]
            assert fmt.length(longer, tools) > budget
    else:
        pytest.fail("the budgets never reached the head")
    # the head alone does not fit with this patch: the patch loses lines from its middle, as many as needed
    long_patch = PATCH + "".join(f"+    line {i}\n" for i in range(200))
    alone = whole.length(head + [judging_message(long_patch, len(messages) - 2), answer_message(True)], tools)
    fmt = VerifierFormat(qwen_tokenizer, alone - 300)
    judged = fmt.judge(messages, tools, long_patch)
    assert judged.omitted_messages == len(messages) - 2 and 0 < judged.omitted_patch_lines < 206
    shown = judged.messages[-1]["content"]
    assert "+    line 199\n" in shown and "lines of the patch left out" in shown and "+    line 100\n" not in shown
    assert fmt.length(judged.messages + [answer_message(True)], tools) <= alone - 300
    one_more, _ = shorten_patch(long_patch, 206 - judged.omitted_patch_lines + 1)
    assert fmt.length(head + [judging_message(one_more, len(messages) - 2), answer_message(True)], tools) > alone - 300
    assert VerifierFormat(qwen_tokenizer, 500).judge(messages, tools, long_patch) is None  # the tools alone: ~2k


def test_shorten_patch_keeps_the_ends():
    patch = "".join(f"{i}\n" for i in range(10))
    assert shorten_patch(patch, 10) == (patch, 0)
    text, cut = shorten_patch(patch, 3)
    assert cut == 7 and text == "0\n1\n[... 7 lines of the patch left out ...]\n9\n"
    assert shorten_patch(patch, 0) == ("[... 10 lines of the patch left out ...]\n", 10)


# ---------------------------------------------------------------------------------------- choosing attempts


def _record(tid: str, instance: str, resolved, patch: str, issue: str = "Fix the bug in parse().") -> dict:
    rec = samples()[0]
    rec["messages"][1] = {"role": "user", "content": f"<issue_description>\n{issue}\n</issue_description>\n"}
    return {**rec, "id": tid, "instance_id": instance, "resolved": resolved, "patch": patch}


def _eval_folder(path, attempts: list[tuple[str, str, bool | None]]) -> None:
    """A one-run eval folder in the layout `swehero eval run` writes: (instance, patch, grade) per attempt."""
    (path / "trajectories").mkdir(parents=True)
    tasks = path.with_name(f"{path.name}.tasks.jsonl")
    tasks.write_text("".join(json.dumps({"instance_id": a[0], "repo": "o/r", "base_commit": "c0ffee",
                                         "problem_statement": "Fix it."}) + "\n" for a in attempts))
    (path / "eval.json").write_text(json.dumps({"runs": 1, "instance_ids": [a[0] for a in attempts],
                                                "tasks": str(tasks), "model": "m"}))
    with open(path / "predictions.jsonl", "w") as p, open(path / "grades.jsonl", "w") as g:
        for iid, patch, resolved in attempts:
            rec = _record(f"{iid}.openai.{len(patch)}", iid, None, patch)
            (path / "trajectories" / f"{iid}.json").write_text(json.dumps(rec))
            p.write(json.dumps({"instance_id": iid, "model_name_or_path": "m", "model_patch": patch}) + "\n")
            if resolved is not None:
                g.write(json.dumps({"instance_id": iid, "resolved": resolved}) + "\n")


def test_choose_merges_equal_patches_caps_per_instance_and_balances_pairs_first():
    from swehero.eval.best_of import normalise_patch
    from swehero.eval.verifier_data import Candidate, choose

    assert normalise_patch("a  b\n\n\tc \n") == normalise_patch("a b\nc")
    assert normalise_patch(PATCH) != normalise_patch(PATCH.replace("+    return b", "+        return b"))
    cands = [Candidate(f"w{i}", f"t{i}", iid, res, key, f"{i:02d}") for i, (iid, res, key) in enumerate([
        ("B", True, "p4"), ("C", True, "p5"), ("A", True, "p1"), ("A", True, "p1"), ("A", True, "p2"),
        ("A", False, "p3"), ("D", False, "p6"), ("D", False, "p7"),
    ])]
    chosen, dropped = choose(cands, per_instance=1, balance=True)
    assert dropped == Counter(duplicate_patch=1, per_instance=2, balance=1)
    # 3 resolved (B, C, A) vs 2 unresolved (A, D): A has both labels so it stays, then B (first in order); C goes
    assert [c.where for c in chosen] == ["w0", "w2", "w5", "w6"]
    chosen, dropped = choose(cands, per_instance=2, balance=False)
    assert [c.where for c in chosen] == ["w0", "w1", "w2", "w4", "w5", "w6", "w7"]
    assert dropped == Counter(duplicate_patch=1)


def test_a_patch_graded_both_ways_is_no_example_under_either_answer():
    """A flaky test graded the same patch resolved once and unresolved once: both were kept, and balancing kept them
    first (an instance with both labels), the one patch shown under both answers."""
    from swehero.eval.verifier_data import Candidate, choose

    cands = [Candidate(f"w{i}", f"t{i}", iid, res, key, f"{i:02d}") for i, (iid, res, key) in enumerate([
        ("A", True, "p1"), ("A", False, "p1"), ("A", False, "p2"), ("B", True, "p3"), ("C", False, "p4")])]
    chosen, dropped = choose(cands, per_instance=1, balance=True)
    assert dropped == Counter(conflicting_label=2, balance=1)
    assert [c.where for c in chosen] == ["w2", "w3"]  # A's other patch, paired with B (first in order) over C


def test_a_damaged_trajectory_of_an_eval_folder_is_an_error_naming_it(tmp_path):
    from swehero.eval.attempts import read_attempts

    _eval_folder(tmp_path / "eval", [("org__f-6", PATCH, False)])
    (tmp_path / "eval" / "trajectories" / "org__f-6.json").write_text('{"id": "cut sh')
    [attempt] = read_attempts([tmp_path / "eval"])[1]["org__f-6"]
    with pytest.raises(InputError, match=r"eval/trajectories/org__f-6.json: not a trajectory \(not JSON"):
        attempt.record()


@pytest.mark.slow
def test_verifier_data_from_files_and_eval_folders_to_a_packed_dataset(tiny_model_dir, tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from swehero.eval.verifier_data import Settings, build_verifier_data

    records = [_record("r1", "org__a-1", True, PATCH), _record("r2", "org__a-1", False, PATCH + "+x\n"),
               _record("r3", "org__b-2", True, PATCH), _record("r4", "org__b-2", True, "  " + PATCH),  # same patch
               _record("r5", "org__c-3", None, PATCH),  # unlabelled
               _record("r6", "org__d-4", True, ""),  # no patch
               _record("r7", "org__e-5", False, PATCH, issue="Leaked: `f(1)` is wrong."),  # an eval task
               _record("r8", "org__j-10", False, PATCH + "+z\n")]
    r8_turn = next(m for m in records[-1]["messages"] if m["role"] == "assistant")
    r8_turn["content"] += " Each turn ends with <|im_end|>."  # a reject (it renders as the token), not a stop
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + "{broken\n")
    _eval_folder(tmp_path / "eval", [("org__f-6", PATCH, False), ("org__g-7", "", None),
                                     ("org__h-8", PATCH, None), ("org__i-9", PATCH + "+y\n", False)])
    (tmp_path / "evalset.jsonl").write_text(json.dumps(
        {"instance_id": "other__z-1", "repo": "other/z", "base_commit": "0" * 40,
         "problem_statement": "Leaked: `f(1)` is wrong."}) + "\n")
    settings = Settings(inputs=[str(tmp_path / "train.jsonl"), str(tmp_path / "eval")], seq_length=4096,
                        exclude=[str(tmp_path / "evalset.jsonl")], valid_fraction=0.0, workers=0,
                        max_reject_fraction=0.2)
    stats = build_verifier_data(settings, str(tiny_model_dir), tmp_path / "out", seed=3)
    assert stats["rejected"] == {"malformed_json": 1, "special_token_in_turn": 1}
    assert stats["counts"] == {"read": 13, "unlabelled": 1, "empty_patch": 2, "not_graded": 1, "usable": 7,
                               "decontaminated": 1, "duplicate_patch": 1, "balance": 1, "truncated": 0}
    assert (stats["examples"], stats["resolved"], stats["unresolved"]) == (4, 2, 2)
    examples = [json.loads(line) for line in (tmp_path / "out" / "examples.jsonl").open()]
    assert {e["metadata"]["verifier"]["trajectory"] for e in examples} >= {"r1", "r2"}
    assert all(e["messages"][-1] == answer_message(e["resolved"]) for e in examples)
    assert not any(e["instance_id"] == "org__e-5" for e in examples)
    # the packed dataset trains one token per example, the answer matching its label
    tokens = IndexedDataset(str(tmp_path / "out" / "dataset" / "train_tokens"))
    mask = IndexedDataset(str(tmp_path / "out" / "dataset" / "train_loss_mask"))
    ids = np.concatenate([tokens[i] for i in range(len(tokens))])
    trained = ids[np.concatenate([mask[i] for i in range(len(mask))]) == 1]
    yes, no = answer_token_ids(VerifierFormat(_tok(tiny_model_dir), 4096).tokenizer).values()
    assert sorted(trained.tolist()) == sorted(yes if e["resolved"] else no for e in examples)


def _tok(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def test_recipe_plan_covers_the_verifier_training_of_hero_32b_verifier():
    from click.testing import CliRunner

    from swehero.cli import main

    result = CliRunner().invoke(main, ["recipe", "plan", "hero-32b-verifier"])
    assert result.exit_code == 0, result.output
    verifier = result.output[result.output.index("stage sft_verifier:"):]
    assert "TP 8, PP 4" in verifier and "memory / GPU" in verifier and "more than 80 GiB" not in verifier
