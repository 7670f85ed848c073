"""Prompts taken from the training data: extracted from trajectories whose opening messages are worded unlike
swehero's own (tests/data_fixtures/openhands_*.jsonl, in NVIDIA's release format), then used by the agent, which
must open its episodes with exactly those messages, filled with its own task's values."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from agent_repos import CALC, CALC_FIX, make_task
from click.testing import CliRunner

from swehero.agent.cli import agent
from swehero.agent.prompts import PromptsError, extract
from swehero.data.cli import data
from swehero.jsonio import read_jsonl

FIXTURES = Path(__file__).parent / "data_fixtures"
pytestmark = pytest.mark.bwrap


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, Path]:
    """The fixtures through the importer, as a user would: `swehero data import --format nvidia`."""
    out = tmp_path_factory.mktemp("imported")
    for stage in ("zero", "hero"):
        result = CliRunner().invoke(data, ["import", "--format", "nvidia", "--stage", stage,
                                           str(FIXTURES / f"openhands_{stage}.jsonl"), "--out", str(out / f"{stage}.jsonl")])
        assert result.exit_code == 0, result.output
    return {stage: out / f"{stage}.jsonl" for stage in ("zero", "hero")}


@pytest.fixture(scope="module")
def prompts_file(imported, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prompts") / "prompts.json"
    result = CliRunner().invoke(agent, ["prompts", "extract", str(imported["zero"]), str(imported["hero"]),
                                        "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "hero: the template covers 3 of 3 trajectories (100.0%)" in result.output
    assert "zero: the template covers 3 of 3 trajectories (100.0%)" in result.output
    return out


def _expected_opening(fixture_row: dict, task, workspace: str, language: str = "python") -> tuple[str, str]:
    """The fixture trajectory's own opening messages with its per-task values replaced by the task's, by plain
    string replacement: an oracle independent of the extraction."""
    system, user = fixture_row["trajectory"][0]["content"], fixture_row["trajectory"][1]["content"]
    name = f"{fixture_row['repo'].replace('/', '__')}__{'2.3'}"
    problem = user.split("<issue_description>\n", 1)[1].split("\n</issue_description>", 1)[0]
    commit = next(w for w in user.replace(".", " ").split() if len(w) == 40)
    user = (user.replace(problem, task.problem_statement).replace(f"/workspace/{name}", workspace)
            .replace(name, workspace.rsplit("/", 1)[1]).replace(commit, task.base_commit)
            .replace("a python code repository", f"a {language} code repository"))
    return system, user


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
@pytest.mark.parametrize("mode, stage", [("exec", "hero"), ("zero", "zero")])
def test_agent_opens_with_the_extracted_prompts_filled_for_its_task(prompts_file, tmp_path, mode, stage):
    task = make_task(tmp_path / "repo", "calc", CALC, CALC_FIX)
    (tmp_path / "task.json").write_text(json.dumps(asdict(task)))
    out = tmp_path / "traj.json"
    result = CliRunner().invoke(agent, ["run", "--task", str(tmp_path / "task.json"), "--repo-dir",
                                        str(tmp_path / "repo"), "--policy", "oracle", "--mode", mode,
                                        "--prompts", str(prompts_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    fixture_row = read_jsonl(FIXTURES / f"openhands_{stage}.jsonl")[0]
    workspace = f"/workspace/{task.repo.replace('/', '__')}__{task.version or '0.0'}"
    system, user = _expected_opening(fixture_row, task, workspace)
    assert record["messages"][0]["content"] == system
    assert record["messages"][1]["content"] == user
    assert record["metadata"]["prompts"].startswith("sha256:")
    assert record["metadata"]["finish_reason"] == "submitted"


def test_the_task_message_names_the_tasks_language_and_nothing_else_changes(prompts_file, tmp_path):
    from swehero.agent.prompts import Opening, opening_messages

    fixture_row = read_jsonl(FIXTURES / "openhands_hero.jsonl")[0]
    task = replace(make_task(tmp_path / "repo", "calc", CALC, CALC_FIX), language="Java")
    workspace = "/workspace/google__gson__2.10"
    messages, _ = opening_messages(str(prompts_file), "exec", Opening(
        workspace, task.repo, task.instance_id, task.base_commit, task.problem_statement, "Java"))
    system, user = (m["content"] for m in messages)
    assert (system, user) == _expected_opening(fixture_row, task, workspace, language="java")
    assert "I've uploaded a java code repository" in user and user.count("java") == 1


def test_no_template_covering_95_percent_names_two_disagreeing_trajectories(imported):
    records = read_jsonl(imported["hero"])
    changed = json.loads(json.dumps(records[1]))
    changed["messages"][1]["content"] = changed["messages"][1]["content"].replace("Work through these phases",
                                                                                  "Follow this plan")
    with pytest.raises(PromptsError, match=f"{records[0]['id']} and {changed['id']} disagree"):
        extract(records[:1] + [changed] + records[2:])


def test_one_template_per_stage_and_the_missing_stage_is_a_clear_error(imported, tmp_path):
    from swehero.agent.prompts import Opening, extract_files, opening_messages, read_template

    only_zero = tmp_path / "zero-only.json"
    extract_files([str(imported["zero"])], only_zero)
    assert list(json.loads(only_zero.read_text())["templates"]) == ["zero"]
    with pytest.raises(PromptsError, match="no template for exec mode"):
        opening_messages(str(only_zero), "exec", Opening("/testbed", "a/b", "a__b-1", "c" * 40, "bug"))
    # A file an attempt cannot fill is refused whole, naming the part: runs check it before their first attempt.
    data = json.loads(only_zero.read_text())
    data["templates"]["zero"]["task"].append({"field": "secret"})
    only_zero.write_text(json.dumps(data))
    with pytest.raises(PromptsError, match=r"zero-only.json: templates.zero.task: not a list of text and \{\"field\""):
        read_template(str(only_zero), "zero")
    for broken in ("{", "[]", json.dumps({"templates": {}})):
        only_zero.write_text(broken)
        with pytest.raises(PromptsError, match="zero-only.json: not (JSON|a prompts file)"):
            read_template(str(only_zero), "zero")


def test_built_in_exec_prompts_are_openhands_054_own():
    """Without a prompts file, exec mode opens as OpenHands 0.54.0 opened a SWE-bench instance: its system prompt
    and `swe_default.j2`, compared with jinja2's rendering of those files (a problem statement with `$` and braces
    stays as written)."""
    from swehero.agent.prompts import Opening, opening_messages
    from swehero.agent.task import OPENHANDS_ROOT, Task, agent_root

    fixture = json.loads((FIXTURES / "openhands-0.54.0-swebench-opening.json").read_text())
    task = Task.from_row(fixture["instance"])
    messages, label = opening_messages("", "exec", Opening(agent_root(OPENHANDS_ROOT, task), task.repo,
                                                           task.instance_id, task.base_commit, task.problem_statement))
    assert [m["content"] for m in messages] == [fixture["system"], fixture["task"]] and label == "builtin-v3"


def test_zero_modes_builtin_task_message_keeps_the_sentences_it_shares_with_openhands_as_they_are():
    """Zero mode's built-in prompts are ours, but the sentences its task message takes from OpenHands' (exec mode's,
    word for word) read as there: one line each, the directory named by its name."""
    from swehero.agent.prompts import Opening, opening_messages

    opening = Opening("/workspace/a__b__1.0", "a/b", "a__b-1", "c" * 40, "bug")
    zero, exec_ = (opening_messages("", mode, opening)[0][1]["content"].split("\n") for mode in ("zero", "exec"))
    taken = [line for line in exec_ if line.startswith(("I've uploaded", "Can you help", "I've already", "Your task"))]
    assert len(taken) == 4 and all(line in zero for line in taken)
    assert "in the directory a__b__1.0. Consider" in taken[0]


# Problem statements as SWE-bench writes them (`f"{title}\n{body}\n"`, so nearly all end in a line break), and the
# rarer shapes: a body that ends in a line break of its own, a Windows line end, none at all, leading whitespace.
SWE_BENCH_STATEMENTS = ["Blueprint name may be empty\nIt should raise ValueError.\n",
                        "separability_matrix wrong for nested models\n", "Crash on None input\n\nTraceback ...\n\n",
                        "Add option --foo\r\nSee #12.\r\n", "Docs: typo in README\n"]
ODD_STATEMENTS = ["Slow import of baz module", "\nStarts with a blank line\n", "  indented first line\n"]


def _swe_default_trajectories(statements: list[str]) -> list[dict]:
    """Canonical trajectories whose opening messages are OpenHands' own (`swe_default.j2`), one per statement."""
    from swehero.agent.prompts import Opening, opening_messages

    records = []
    for i, statement in enumerate(statements):
        opening = Opening(f"/workspace/org__proj{i}__1.{i}", f"org/proj{i}", f"org__proj{i}-{i}", f"{i:02d}" * 20,
                          statement)
        messages, _ = opening_messages("", "exec", opening)
        records.append({"id": f"t{i}", "instance_id": opening.instance_id, "repo": opening.repo, "stage": "hero",
                        "messages": messages, "opening": opening})
    return records


@pytest.mark.parametrize("statements", [SWE_BENCH_STATEMENTS * 4, SWE_BENCH_STATEMENTS * 4 + ODD_STATEMENTS],
                         ids=["swe-bench", "with-odd-statements"])
def test_the_template_filled_with_each_raw_statement_gives_back_its_training_task_message(statements):
    """Without a task file the statements' own whitespace (SWE-bench's end in a line break) stays theirs, not the
    template's: the agent, filling in a raw statement, reads what the model was trained on, to the character."""
    from swehero.agent.prompts import fill

    records = _swe_default_trajectories(statements)
    template = extract(records)["templates"]["hero"]
    assert [fill(template["task"], r["opening"]) for r in records] == [r["messages"][1]["content"] for r in records]
    assert template["covered"] == len(records)


def test_a_trajectory_the_template_does_not_give_back_is_not_covered():
    records = _swe_default_trajectories(SWE_BENCH_STATEMENTS * 4)
    records[3]["messages"][1]["content"] = records[3]["messages"][1]["content"].replace("Be thorough", "Be brief")
    assert extract(records)["templates"]["hero"]["covered"] == len(records) - 1


def test_a_task_file_whose_statements_do_not_fill_in_to_the_training_text_is_refused():
    """The training data wrote its statements stripped; the task file's end in a blank line (a body that ends in a
    line break). Filling in the task's statement would add two line breaks to every task message, so no trajectory
    is covered and extraction fails."""
    stripped = [s.strip() for s in SWE_BENCH_STATEMENTS * 4]
    records = _swe_default_trajectories(stripped)
    tasks = {r["instance_id"]: {"instance_id": r["instance_id"], "problem_statement": s + "\n\n"}
             for r, s in zip(records, stripped)}
    with pytest.raises(PromptsError, match="gives back the opening messages of only 0 of 20 trajectories"):
        extract(records, tasks)
