"""Settings and input files of the data commands that no run can use: each is refused in one line naming the setting,
or the file (and line, and what is wrong), where the rows are read as everywhere else (a reject under the reject
budget, or an `Error:`), never a traceback, a result that looks like success, or a file of an earlier run."""

import codecs
import itertools
import json
import re
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests_paths import qwen

from swehero.cli import main
from swehero.data.sources import Rejects, read_rows
from swehero.errors import InputError
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
    result = invoke("data", "render", "--tokenizer", qwen(), NVIDIA, "--max-reject-fraction", "-1",
                    "--out", tmp_path / "r.jsonl")
    assert result.exit_code == 2 and "'--max-reject-fraction': -1.0 is not in the range 0<=x<=1" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_bytes_that_are_not_utf8_are_a_reject_at_their_line(tmp_path):
    """As a line that is not JSON: counted under the reject budget, listed with its file:line (a traceback before).
    In a .json document they spoil the whole file: an error naming it and the line."""
    jsonl, doc = tmp_path / "in.jsonl", tmp_path / "in.json"
    jsonl.write_bytes(NVIDIA.read_bytes().splitlines(keepends=True)[0] + b'{"trajectory_id": "t\xff"}\n')
    doc.write_bytes(b'[{"id": "a"},\n {"id": "b\xff"}]')
    result = invoke("data", "import", "--format", "nvidia", jsonl, "--out", tmp_path / "o.jsonl")
    assert result.exit_code == 1 and result.output.startswith("Error: 1 of 2 rows rejected") \
        and "reasons: not_utf8: 1;" in result.output, result.output
    result = invoke("data", "import", "--format", "nvidia", jsonl, "--max-reject-fraction", "0.5",
                    "--out", tmp_path / "o.jsonl")
    assert result.exit_code == 0 and '"written": 1, "rejected": {"not_utf8": 1}' in result.output, result.output
    [reject] = [json.loads(line) for line in (tmp_path / "o.rejects.jsonl").read_text().splitlines()]
    assert reject["where"] == f"{jsonl}:2" and reject["reason"] == "not_utf8"
    assert reject["detail"] == "not UTF-8: 'utf-8' codec can't decode byte 0xff in position 20: invalid start byte"
    with pytest.raises(InputError, match=rf"^{re.escape(str(doc))}:2: not UTF-8: 'utf-8' codec can't decode byte"):
        list(read_rows(doc))
    doc.write_bytes(b'{"id": "a"}\n{"id": "b\xff"}\n')  # JSON Lines named .json: the line alone
    [_, (where, row)] = read_rows(doc)
    assert where == f"{doc}:2" and row.reason == "not_utf8", (where, row)
    # commands that need every row a trajectory stop at it, naming it
    result = invoke("filter", "--stage", "zero", jsonl, "--out", tmp_path / "f")
    assert result.exit_code == 1 and result.output.startswith(f"Error: {jsonl}:1: not a canonical trajectory")
    (tmp_path / "t.jsonl").write_bytes(b'{"id": "\xff"}\n')
    result = invoke("filter", "--stage", "zero", tmp_path / "t.jsonl", "--out", tmp_path / "f")
    assert result.output == f"Error: {tmp_path / 't.jsonl'}:1: not a canonical trajectory: not_utf8: not UTF-8: " \
                            "'utf-8' codec can't decode byte 0xff in position 8: invalid start byte\n", result.output


def test_a_byte_order_mark_before_the_first_row_is_no_part_of_it(tmp_path):
    """As the task loader reads it: line 1 was rejected as malformed JSON."""
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(codecs.BOM_UTF8 + NVIDIA.read_bytes())
    result = invoke("data", "import", "--format", "nvidia", bom, "--out", tmp_path / "o.jsonl")
    assert result.exit_code == 0 and '"written": 2, "rejected": {}' in result.output, result.output
    assert next(read_rows(bom, parse=False))[1] == NVIDIA.read_text().splitlines(keepends=True)[0]  # prepare's way
    doc = tmp_path / "bom.json"
    doc.write_bytes(codecs.BOM_UTF8 + b'[{"id": "a"}]')
    assert list(read_rows(doc)) == [(f"{doc}#1", {"id": "a"})]


def test_a_json_file_of_json_lines_is_read_line_by_line_and_a_cut_off_one_is_an_error(tmp_path):
    """`datasets.Dataset.to_json` writes JSON Lines whatever the file is called, as many files on the Hugging Face hub
    are: such a file, or a cut-off list, was one `malformed_json` reject, every trajectory in it lost under the
    reject limit."""
    lines = tmp_path / "hub.json"
    lines.write_bytes(codecs.BOM_UTF8 + NVIDIA.read_bytes() + b"{bad\n")
    rows = list(read_rows(lines))
    assert [where for where, _ in rows] == [f"{lines}:{i}" for i in (1, 2, 3)]
    assert [row["trajectory_id"] for _, row in rows[:2]] == ["astropy__astropy-12907_0", "django__django-11099_2"]
    assert rows[2][1].reason == "malformed_json"
    result = invoke("data", "import", "--format", "nvidia", lines, "--max-reject-fraction", "0.5",
                    "--out", tmp_path / "o.jsonl")
    assert result.exit_code == 0 and '"written": 2, "rejected": {"malformed_json": 1}' in result.output, result.output
    cut = tmp_path / "cut.json"
    cut.write_text("[" + ",\n".join(NVIDIA.read_text().splitlines())[:-100])
    result = invoke("data", "import", "--format", "nvidia", cut, "--out", tmp_path / "o.jsonl")
    assert result.exit_code == 1 and result.output.startswith(f"Error: {cut}:2: not JSON: "), result.output
    same_line = tmp_path / "same_line.json"  # one value after another on a line is no JSON Lines
    same_line.write_text('{"id": "a"} {"id": "b"}\n')
    with pytest.raises(InputError, match=rf"^{re.escape(str(same_line))}:1: not JSON: Extra data"):
        list(read_rows(same_line))


def test_a_json_file_of_json_lines_is_not_read_whole_to_tell_its_format(tmp_path):
    """It was read whole, decoded and parsed up to its second row first: 348 MB of JSON Lines named .json took 680 MB
    of memory before the first row. Here the rows are followed by 64 MB of zero bytes (a sparse file, written at
    once), no JSON at all: a reader that reads the file whole holds them."""
    lines = tmp_path / "hub.json"
    lines.write_bytes(NVIDIA.read_bytes())
    with open(lines, "r+b") as f:
        f.truncate(lines.stat().st_size + (64 << 20))
    tracemalloc.start()
    try:
        rows = list(itertools.islice(read_rows(lines), 2))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [where for where, _ in rows] == [f"{lines}:1", f"{lines}:2"]
    assert [row["trajectory_id"] for _, row in rows] == ["astropy__astropy-12907_0", "django__django-11099_2"]
    assert peak < 4 << 20, peak


def _with_deep_rows(path: Path) -> dict:
    """The sample trajectories, then a row `[[[...` 100000 deep (no parser takes it) and one that parses but is too
    deep for the checks to walk; returns the rejects they make."""
    from data_samples import samples

    too_deep_to_check = {**samples()[0], "id": "deep", "metadata": {"x": json.loads("[" * 600 + "]" * 600)}}
    path.write_text("".join(json.dumps(r) + "\n" for r in samples()) + "[" * 100_000 + "\n"
                    + json.dumps(too_deep_to_check) + "\n")
    return {"malformed_json": 1, "nested_too_deeply": 1}


def test_a_row_nested_too_deeply_is_a_reject_at_its_line(tmp_path, qwen_tokenizer):
    """It ended import and render in a RecursionError traceback. A `.json` document that deep is an error naming
    it."""
    from swehero.data.render import render_files

    src = tmp_path / "in.jsonl"
    rejected = _with_deep_rows(src)
    result = invoke("data", "import", "--format", "canonical", src, "--max-reject-fraction", "0.5",
                    "--out", tmp_path / "o.jsonl")
    assert result.exit_code == 0 and f'"written": 3, "rejected": {json.dumps(rejected)}' in result.output, \
        result.output
    rejects = [json.loads(line) for line in (tmp_path / "o.rejects.jsonl").read_text().splitlines()]
    assert [(r["where"], r["reason"], r["id"]) for r in rejects] == [
        (f"{src}:4", "malformed_json", None), (f"{src}:5", "nested_too_deeply", "deep")]
    assert rejects[0]["detail"].startswith("maximum recursion depth exceeded while decoding a JSON array")
    assert render_files([str(src)], qwen_tokenizer, tmp_path / "r.jsonl", max_reject_fraction=0.5) == \
        {"written": 3, "rejected": rejected}
    doc = tmp_path / "deep.json"
    doc.write_text("[" * 100_000)
    with pytest.raises(InputError, match=rf"^{re.escape(str(doc))}: not JSON that can be read: maximum recursion"):
        list(read_rows(doc))


@pytest.mark.slow
def test_a_row_nested_too_deeply_is_a_reject_of_prepare_from_its_workers(tmp_path):
    """As in `import`: the RecursionError came out of a worker, a traceback."""
    from swehero.data.prepare import PrepareConfig, prepare

    src = tmp_path / "in.jsonl"
    rejected = _with_deep_rows(src)
    cfg = PrepareConfig(seq_length=4096, max_reject_fraction=0.5, workers=1)
    assert prepare([str(src)], str(qwen()), tmp_path / "d", cfg)["trajectories"]["rejected"] == rejected


def damaged_parquet(tmp_path) -> Path:
    """A Parquet file whose footer is whole but whose middle half (page headers among it) is zeroed."""
    import pyarrow
    import pyarrow.parquet

    path = tmp_path / "damaged.parquet"
    rows = [{"id": f"t{i}", "text": f"row {i} " * 20} for i in range(2000)]
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), path, row_group_size=100)
    data = bytearray(path.read_bytes())
    data[len(data) // 4: len(data) * 3 // 4] = bytes(len(data) * 3 // 4 - len(data) // 4)
    path.write_bytes(bytes(data))
    return path


def test_a_file_that_is_not_parquet_is_one_error_naming_it(tmp_path):
    """Text named .parquet, or a damaged Parquet file: pyarrow's ArrowInvalid or OSError before."""
    text = tmp_path / "text.parquet"
    text.write_text("hello")
    result = invoke("data", "import", "--format", "nvidia", text, "--out", tmp_path / "o.jsonl")
    assert result.exit_code == 1 and result.output == f"Error: {text}: cannot be read as Parquet (Parquet file size " \
                                                      "is 5 bytes, smaller than the minimum file footer (8 bytes))\n"
    with pytest.raises(InputError, match=rf"^{re.escape(str(tmp_path))}/damaged.parquet: cannot be read as Parquet"):
        list(read_rows(damaged_parquet(tmp_path)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.parquet", "text.parquet"]


def test_a_parquet_file_is_read_by_its_name_not_as_a_pattern(tmp_path):
    """`datasets` took the path for a glob: `x[1].parquet` gave `x1.parquet`'s rows, and a name with brackets that
    matched no file (`shard[0].parquet` alone) ended in a traceback."""
    import pyarrow
    import pyarrow.parquet

    for name in ("x1.parquet", "x[1].parquet", "shard[0].parquet"):
        pyarrow.parquet.write_table(pyarrow.Table.from_pylist([{"id": name}]), tmp_path / name)
    for name in ("x[1].parquet", "shard[0].parquet"):
        assert list(read_rows(tmp_path / name)) == [(f"{tmp_path / name}:1", {"id": name})]


def test_a_finished_run_leaves_its_own_rejects_only(tmp_path):
    """The rejects file was opened (emptied) at the first reject only: a rerun with none left the earlier run's."""
    malformed = tmp_path / "in.jsonl"
    malformed.write_text(NVIDIA.read_text() + "{bad\n")
    out = tmp_path / "o.jsonl"
    result = invoke("data", "import", "--format", "nvidia", malformed, "--max-reject-fraction", "0.5", "--out", out)
    assert result.exit_code == 0 and (tmp_path / "o.rejects.jsonl").exists(), result.output
    result = invoke("data", "import", "--format", "nvidia", NVIDIA, "--out", out)
    assert result.exit_code == 0 and '"rejected": {}' in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "o.jsonl"]
    # `data verifier` (rejects.jsonl in its folder) and `prepare` keep theirs through the same class
    stale = tmp_path / "rejects.jsonl"
    stale.write_text('{"where": "old:1"}\n')
    rejects = Rejects(stale)
    rejects.close()
    assert not stale.exists()


@pytest.mark.parametrize("command", [["import", "--format", "nvidia"], ["render", "--tokenizer"]])
def test_an_output_that_is_a_folder_is_refused_before_any_work(command, tmp_path):
    """It ended, after all the work, in `IsADirectoryError: 'out.partial' -> 'out'`."""
    command = command + [qwen()] if command[0] == "render" else command
    out = tmp_path / "out"
    out.mkdir()
    result = invoke("data", *command, NVIDIA, "--out", out)
    assert result.exit_code == 1, result.output
    assert result.output == f"Error: {out}: a folder, where the command writes a file: name a file (OUT.jsonl)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and not any(out.iterdir())
