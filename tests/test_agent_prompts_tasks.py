"""`swehero agent prompts extract --tasks FILE`: a task file that is not the trajectories' is refused, naming it;
one lacking some of their instances is said, in one line, rather than taken in silence."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from swehero.cli import main
from swehero.data.cli import data

FIXTURES = Path(__file__).parent / "data_fixtures"


@pytest.fixture(scope="module")
def hero(tmp_path_factory) -> Path:
    """The hero fixtures through the importer, as a user would: `swehero data import --format nvidia`."""
    out = tmp_path_factory.mktemp("imported") / "hero.jsonl"
    result = CliRunner().invoke(data, ["import", "--format", "nvidia", "--stage", "hero",
                                       str(FIXTURES / "openhands_hero.jsonl"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _tasks(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _fixture_tasks() -> list[dict]:
    """The task rows of the hero fixtures: their statements and base commits as their task messages hold them."""
    rows = []
    for line in (FIXTURES / "openhands_hero.jsonl").read_text().splitlines():
        record = json.loads(line)
        message = record["trajectory"][1]["content"]
        statement = message.split("<issue_description>\n", 1)[1].split("\n</issue_description>", 1)[0]
        [commit] = set(re.findall(r"\b[0-9a-f]{40}\b", message))
        rows.append({"instance_id": record["instance_id"], "repo": record["repo"], "base_commit": commit,
                     "problem_statement": statement})
    return rows


def _extract(hero: Path, tasks: Path, out: Path):
    return CliRunner().invoke(main, ["agent", "prompts", "extract", str(hero), "--tasks", str(tasks),
                                     "--out", str(out)])


@pytest.mark.slow  # a second or more: the fast tier stays under 2 minutes
def test_a_task_file_with_none_of_the_trajectories_instances_is_refused_naming_it(hero, tmp_path):
    other = _tasks(tmp_path / "other.jsonl", [{**row, "instance_id": f"other__{i}"}
                                              for i, row in enumerate(_fixture_tasks())])
    result = _extract(hero, other, tmp_path / "prompts.json")
    assert result.exit_code == 1, result.output
    assert result.output == (f"Error: {other}: has none of the 3 instance(s) of the trajectories (pallets__flask-5014, "
                             "psf__requests-6028, sympy__sympy-24562): not their task file\n")
    assert not (tmp_path / "prompts.json").exists()


def test_a_task_file_lacking_some_of_the_trajectories_instances_says_how_many(hero, tmp_path):
    rows = _fixture_tasks()
    full = _extract(hero, _tasks(tmp_path / "full.jsonl", rows), tmp_path / "full.json")
    assert full.exit_code == 0 and "lacks" not in full.output, full.output
    partial = tmp_path / "partial.jsonl"
    result = _extract(hero, _tasks(partial, rows[:2]), tmp_path / "partial.json")
    assert result.exit_code == 0, result.output  # the statements of some rows and of some messages: no template
    assert result.output.startswith(f"warning: {partial} lacks 1 of the 3 instances of the trajectories "
                                    "(sympy__sympy-24562): the problem statements are taken from the trajectories, "
                                    "as without --tasks\n")
    found, whole = (json.loads((tmp_path / name).read_text())["templates"] for name in ("partial.json", "full.json"))
    assert found == whole
