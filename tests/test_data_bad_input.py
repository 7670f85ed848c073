"""Settings and input files of the data commands that no run can use: each is refused in one line naming the setting,
or the file (and line, and what is wrong), where the rows are read as everywhere else (a reject under the reject
budget, or an `Error:`), never a traceback, a result that looks like success, or a file of an earlier run."""

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests_paths import QWEN

from swehero.cli import main
from swehero.recipe.config import load_recipe
from swehero.recipe.loader import RecipeError

FIXTURES = Path(__file__).parent / "data_fixtures"
NVIDIA = FIXTURES / "nvidia.jsonl"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_selection_and_reject_budget_out_of_range_are_refused_by_the_schema(tmp_path):
    """`per_instance: 0` failed only once the import had read everything, `max_reject_fraction: -1` failed every
    run, and `limit: -3` neither."""
    overrides = (f"run_dir={tmp_path}", "stages.import_hero.per_instance=0", "stages.import_hero.limit=-3",
                 "stages.import_hero.max_reject_fraction=-1", "stages.prepare_hero.max_reject_fraction=1.5")
    with pytest.raises(RecipeError) as info:
        load_recipe("hero-7b", overrides)
    assert [re.sub(r"stages\[\d+\]", "stages[i]", p) for p in info.value.problems] == [
        "--set: stages[i].per_instance: must be >= 1, got 0",
        "--set: stages[i].limit: must be >= 1, got -3",
        "--set: stages[i].max_reject_fraction: must be >= 0 and <= 1, got -1.0",
        "--set: stages[i].max_reject_fraction: must be >= 0 and <= 1, got 1.5"]
    result = invoke("data", "import", "--format", "nvidia", NVIDIA, "--per-instance", "0", "--out", tmp_path / "o.jsonl")
    assert result.exit_code == 2 and "--per-instance: per_instance: must be >= 1, got 0" in result.output.splitlines()
    result = invoke("data", "render", "--tokenizer", QWEN, NVIDIA, "--max-reject-fraction", "-1",
                    "--out", tmp_path / "r.jsonl")
    assert result.exit_code == 2 and "'--max-reject-fraction': -1.0 is not in the range 0<=x<=1" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []
