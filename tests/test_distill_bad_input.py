"""Settings and inputs of the distill commands (decontaminate, filter, merge) and the task loader that no run can
use: each is refused in one line naming the setting, or the file (and line), before any work where it can be told
then; never a traceback, nor an empty result that looks like success."""

import codecs
import json
import re

import pytest
from click.testing import CliRunner
from test_data_bad_input import damaged_parquet
from test_distill_filters import good

from swehero.cli import main
from swehero.errors import InputError
from swehero.recipe.config import load_recipe
from swehero.recipe.loader import RecipeError
from swehero.rollout.tasks import load_tasks

TASK = {"repo": "django/django", "base_commit": "0" * 40, "FAIL_TO_PASS": "[]", "PASS_TO_PASS": "[]"}


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def task_files(tmp_path):
    """(training tasks, evaluation tasks): two unrelated issues, one evaluation task."""
    train, evals = tmp_path / "train.jsonl", tmp_path / "evals.jsonl"
    train.write_text("".join(json.dumps({**TASK, "instance_id": f"gym__t-{i}", "problem_statement": text}) + "\n"
                             for i, text in enumerate(["Admin totals are wrong when filtering by date.",
                                                       "The migration autodetector loops on renamed fields."])))
    evals.write_text(json.dumps({**TASK, "instance_id": "django__django-1",
                                 "problem_statement": "QuerySet.bulk_update() fails with F expressions."}) + "\n")
    return train, evals


@pytest.mark.parametrize("options, message", [
    (["--ngram", "0"], "--ngram: ngram: must be >= 1, got 0"),  # every shingle empty: every task dropped
    (["--threshold", "5"], "--threshold: threshold: must be > 0 and < 1, got 5.0"),
    (["--threshold", "0"], "--threshold: threshold: must be > 0 and < 1, got 0.0"),
    (["--num-perm", "0"], "--num-perm: num_perm: must be >= 2, got 0"),
    # in range each, not together: datasketch's index needs 2 bands, which 0.99 does not get of 256 permutations
    (["--threshold", "0.99"], "--threshold: threshold: datasketch's LSH index cannot be built for it with num_perm "
                              "256 (The number of bands are too small (b < 2)): lower the threshold or raise num_perm"),
])
def test_decontamination_settings_no_index_can_use_are_refused(options, message, tmp_path):
    train, evals = task_files(tmp_path)
    result = invoke("distill", "decontaminate", train, "--against", evals, *options, "--out", tmp_path / "c.jsonl")
    assert result.exit_code == 2 and message in result.output.splitlines(), result.output
    assert not (tmp_path / "c.jsonl").exists()
    # the same threshold with more permutations gets its bands
    if options[1] == "0.99":
        result = invoke("distill", "decontaminate", train, "--against", evals, *options, "--num-perm", "1024",
                        "--out", tmp_path / "c.jsonl")
        assert result.exit_code == 0 and "kept 2 of 2 tasks" in result.output, result.output


def test_decontaminated_tasks_are_written_only_under_a_jsonl_name(tmp_path):
    """The task loader reads a file by its suffix: JSON Lines named .parquet would be read as Parquet."""
    train, evals = task_files(tmp_path)
    result = invoke("distill", "decontaminate", train, "--against", evals, "--out", tmp_path / "c.parquet")
    assert result.exit_code == 1, result.output
    assert result.output == f"Error: {tmp_path / 'c.parquet'}: the kept tasks are written as JSON Lines: name the " \
                            "file .jsonl\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evals.jsonl", "train.jsonl"]


def test_filter_limits_that_drop_every_trajectory_are_refused_by_the_schema(tmp_path):
    """A step limit or editor-error limit below 1 dropped every trajectory, and the run passed."""
    overrides = (f"run_dir={tmp_path}", "stages.filter_hero.rules.max_steps=-5",
                 "stages.filter_hero.rules.max_editor_errors=0")
    with pytest.raises(RecipeError) as info:
        load_recipe("hero-7b", overrides)
    assert [re.sub(r"stages\[\d+\]", "stages[i]", p) for p in info.value.problems] == [
        "--set: stages[i].rules.max_steps: must be >= 1, got -5",
        "--set: stages[i].rules.max_editor_errors: must be >= 1, got 0"]
    (tmp_path / "t.jsonl").write_text("")
    result = invoke("filter", "--stage", "zero", tmp_path / "t.jsonl", "--max-editor-errors", "-1",
                    "--out", tmp_path / "f")
    assert result.exit_code == 2 and "--max-editor-errors: rules.max_editor_errors: must be >= 1, got -1" \
        in result.output.splitlines(), result.output


def test_task_files_that_cannot_be_read_are_one_error_naming_them(tmp_path):
    """A .json task file with bytes that are not UTF-8, text named .parquet or a damaged Parquet file: tracebacks of
    UnicodeDecodeError, ArrowInvalid or DatasetGenerationError before. A .json file starting with a byte order mark
    loads, as a .jsonl one does (it was `not JSON` before)."""
    row = {**TASK, "instance_id": "gym__t-1", "problem_statement": "Totals are wrong."}
    doc = tmp_path / "tasks.json"
    doc.write_bytes(b"[\n" + json.dumps(row).encode() + b',\n{"instance_id": "\xff"}]')
    with pytest.raises(InputError, match=rf"^{re.escape(str(doc))}:3: not UTF-8: 'utf-8' codec can't decode byte "
                                         r"0xff in position \d+: invalid start byte$"):
        load_tasks(str(doc))
    doc.write_bytes(codecs.BOM_UTF8 + json.dumps([row]).encode())
    assert [t["instance_id"] for t in load_tasks(str(doc))] == ["gym__t-1"]
    text = tmp_path / "tasks.parquet"
    text.write_text("hello")
    result = invoke("distill", "decontaminate", text, "--against", doc, "--out", tmp_path / "c.jsonl")
    assert result.exit_code == 1 and result.output == f"Error: {text}: cannot be read as Parquet (Parquet file size " \
                                                      "is 5 bytes, smaller than the minimum file footer (8 bytes))\n"
    damaged = damaged_parquet(tmp_path)
    with pytest.raises(InputError, match=rf"^{re.escape(str(damaged))}: cannot be read as Parquet \(.+\)$"):
        load_tasks(str(damaged))


def test_filter_refuses_an_input_without_trajectories(tmp_path):
    """It reported `kept 0 of 0` and passed, where import and prepare refuse an empty input."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = invoke("filter", "--stage", "zero", empty, "--out", tmp_path / "f")
    assert result.exit_code == 1 and result.output == f"Error: {empty}: no trajectories to read (an empty file?)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl"]


def test_a_task_file_without_the_trajectorys_task_is_named(tmp_path):
    """`no test patch known (pass the task file: --tasks)` was the message with --tasks given."""
    record = good(0)
    del record["metadata"]["test_files"]
    trajectories, tasks = tmp_path / "t.jsonl", tmp_path / "tasks.jsonl"
    trajectories.write_text(json.dumps(record) + "\n")
    tasks.write_text(json.dumps({**TASK, "instance_id": "gym__t-1", "problem_statement": "Totals are wrong."}) + "\n")
    result = invoke("filter", "--stage", "zero", trajectories, "--tasks", tasks, "--out", tmp_path / "f")
    assert result.exit_code == 1, result.output
    assert result.output == f"Error: {tasks}: no task swehero-toy__calc-1, whose test patch touches_test_files reads " \
                            "(nor has the trajectory metadata.test_files): pass the task file it was made from, or " \
                            "skip the rule\n"
    result = invoke("filter", "--stage", "zero", trajectories, "--out", tmp_path / "f")
    assert result.output == "Error: swehero-toy__calc-1: no test patch known (pass the task file: --tasks)\n"


def test_merge_names_a_damaged_summary_or_trajectory_and_merges_nothing(tmp_path):
    """A summary.json that is no JSON ended in JSONDecodeError, a trajectory without messages in KeyError."""
    shard, out = tmp_path / "shard-0", tmp_path / "merged"
    shard.mkdir()
    trajectories = shard / "trajectories.jsonl"
    trajectories.write_text("".join(json.dumps(good(i)) + "\n" for i in range(2)))
    (shard / "summary.json").write_text("{")
    result = invoke("distill", "merge", shard, "--out", out)
    assert result.exit_code == 1 and result.output == (
        f"Error: {shard / 'summary.json'}: not a distill run's summary (not JSON: Expecting property name enclosed in "
        "double quotes: line 1 column 2 (char 1))\n"), result.output
    (shard / "summary.json").write_text(json.dumps({"wall_s": 1.5, "outstanding_failures": 0}))
    broken, unnumbered = good(2), good(3)
    del broken["messages"], unnumbered["metadata"]["rollout"]
    for record, problem in [(broken, "messages is missing"), (unnumbered, "metadata.rollout is no rollout number")]:
        trajectories.write_text("".join(json.dumps(r) + "\n" for r in [good(0), record, good(1)]))
        result = invoke("distill", "merge", shard, "--out", out)
        assert result.exit_code == 1, result.output
        assert result.output == f"Error: {trajectories}:2: not a distill run's trajectory: {problem}\n"
    assert not (out / "trajectories.jsonl").exists() or not (out / "trajectories.jsonl").read_text()
    trajectories.write_text("".join(json.dumps(good(i)) + "\n" for i in range(2)))
    result = invoke("distill", "merge", shard, "--out", out)
    assert result.exit_code == 0 and result.output.startswith("2 episodes from 1 shard(s)"), result.output
