"""The data stage as the paper's scale runs it: killed imports, a corpus with a few undecodable bytes, canonical
trajectories in Parquet, hours of work that must say how far it got, CPU allocations smaller than the node."""

import copy
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from data_samples import samples
from tests_paths import qwen

import swehero.progress
from swehero.data import prepare as prepare_module
from swehero.data.importers import import_files
from swehero.data.prepare import PrepareConfig, prepare
from swehero.data.render import ChatRenderer, render_files
from swehero.data.select import Selection, select_lines
from swehero.data.sources import UnparsedLine, expand, iter_trajectories
from swehero.data.trajectory import make_tool_call
from swehero.errors import InputError, MissingInput
from swehero.jsonio import partial_path

REPO = Path(__file__).parents[1]


def _corpus(path: Path, instances: int, per_instance: int, padding: int = 0) -> list[dict]:
    """`instances` x `per_instance` small trajectories; `padding` characters of metadata each make the file big
    (slow to write) without making it slow to render."""
    records = []
    for i in range(instances):
        for j in range(per_instance):
            r = copy.deepcopy(samples()[(i + j) % 3])
            r["id"], r["instance_id"] = f"t{i}-{j}", f"org__repo-{i}"
            r["messages"][-1]["content"] = f"turn {i}.{j}"  # each trajectory once: `prepare` trains copies once
            r["metadata"] = {"log": "x" * padding}
            records.append(r)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def _written(folder: Path) -> bool:
    return any(f.stat().st_size for f in folder.iterdir()) if folder.is_dir() else False


@pytest.mark.slow
def test_a_killed_import_leaves_nothing_that_preparing_its_folder_trains(tmp_path, qwen_tokenizer):
    """`kill -9` mid-write, rerun: the folder holds the output and nothing a `prepare` of the folder reads besides
    it (the killed run's rows are ones `--per-instance` left out)."""
    _corpus(tmp_path / "multi.jsonl", instances=150, per_instance=2, padding=100_000)
    folder = tmp_path / "imp"
    out = folder / "zero.jsonl"
    command = [sys.executable, "-m", "swehero", "data", "import", "--format", "canonical",
               str(tmp_path / "multi.jsonl"), "--per-instance", "1", "--out", str(out)]
    killed = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not _written(folder) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not out.exists(), "the import finished before it could be killed: make the input bigger"

    counts = import_files([str(tmp_path / "multi.jsonl")], "canonical", out, selection=Selection(per_instance=1))
    assert counts["selected"]["trajectories"] == 150
    assert expand([str(folder)]) == [out]
    stats = prepare([str(folder)], str(qwen()), tmp_path / "d", PrepareConfig(seq_length=4096, valid_fraction=0))
    assert stats["trajectories"]["read"] == stats["trajectories"]["kept"] == 150
    assert stats["trajectories"]["rejected"] == {}



def test_an_import_into_an_output_another_run_is_writing_is_refused_and_leaves_that_run_whole(tmp_path):
    _corpus(tmp_path / "in.jsonl", instances=3, per_instance=1)
    out = tmp_path / "zero.jsonl"
    with partial_path(out) as first_runs:  # a first run, still writing
        first_runs.write_text("the first run's rows\n")
        with pytest.raises(InputError, match=f"{out}: another run is writing it"):
            import_files([str(tmp_path / "in.jsonl")], "canonical", out)
        assert first_runs.read_text() == "the first run's rows\n"
    assert out.read_text() == "the first run's rows\n"
    import_files([str(tmp_path / "in.jsonl")], "canonical", out)  # once it has ended
    assert len(out.read_text().splitlines()) == 3



def test_an_empty_input_is_an_error_not_an_empty_output(tmp_path, qwen_tokenizer):
    """A truncated copy or a download that wrote nothing: a stage of the recipe would complete with no data."""
    (tmp_path / "in.jsonl").write_text("")
    with pytest.raises(InputError, match=f"{tmp_path / 'in.jsonl'}: no rows to read"):
        import_files([str(tmp_path / "in.jsonl")], "canonical", tmp_path / "o.jsonl")
    with pytest.raises(InputError, match=f"{tmp_path / 'in.jsonl'}: no rows to read"):
        render_files([str(tmp_path / "in.jsonl")], qwen_tokenizer, tmp_path / "r.jsonl")
    assert [p.name for p in tmp_path.iterdir()] == ["in.jsonl"]

def test_a_selection_that_fails_midway_leaves_only_the_file_it_was_selecting_from(tmp_path):
    """What it writes is a `.partial` file (skipped as input, replaced by a rerun), removed when it fails."""
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(b'{"n": 1}\n{"n": 2}\n\xff\n')  # the third line cannot be read: the rewrite fails there
    with pytest.raises(UnicodeDecodeError):
        select_lines(rows, [("a", "1"), ("a", "2"), ("b", "3")], Selection(per_instance=1))
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]

def test_a_folder_read_as_input_skips_hidden_and_half_written_files_and_prepared_datasets(tmp_path):
    """A dataset `prepare` wrote into the folder (`sft`: its stats.json, rejects.jsonl) was read as trajectories. A
    stats.json with no Megatron index beside it is no dataset's: data."""
    (tmp_path / "sub").mkdir()
    for name in ("a.jsonl", "sub/b.parquet", ".a.jsonl.123.456.tmp.jsonl", "a.jsonl.partial", ".hidden/c.jsonl",
                 "d.partial/rejects.jsonl", "a.rejects.jsonl", "sft/stats.json", "sft/rejects.jsonl",
                 "sft/train_tokens.idx", "sft/train_tokens.bin", "sft/nested/e.jsonl", "sft.partial.lock",
                 "notes/stats.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}\n")
    assert expand([str(tmp_path)]) == [tmp_path / "a.jsonl", tmp_path / "notes/stats.json", tmp_path / "sub/b.parquet"]
    with pytest.raises(MissingInput, match=rf"^{tmp_path / 'sft'}: a folder without data files"):
        expand([str(tmp_path / "sft")])


# --- strings that are not UTF-8 text -------------------------------------------------------------------------


def _with_surrogates(path: Path) -> None:
    """Three good trajectories and three with a lone surrogate (the escape `json.dumps` writes for a byte a
    `surrogateescape` reader kept): in a tool result, inside a call's JSON-string arguments, in a tool's schema."""
    good = samples()
    bad = copy.deepcopy(good)
    bad[0]["messages"][3]["content"] += "\nbinary output: \udc80\udcff end"
    bad[1]["messages"][2]["tool_calls"] = [make_tool_call("c4", "think", {"thought": "bytes \udc80"})]
    bad[2]["tools"][0]["function"]["description"] += "\udcff"
    for i, r in enumerate(bad):
        r["id"] += "-bad"
        r["instance_id"] += f"-bad{i}"
    path.write_text("".join(json.dumps(r) + "\n" for r in good + bad))  # ensure_ascii: valid JSON


NOT_UTF8 = [(4, "message 3 holds a lone surrogate U+DC80, which UTF-8 cannot encode"),
            (5, "message 2 think: arguments hold a lone surrogate U+DC80, which UTF-8 cannot encode"),
            (6, "tools holds a lone surrogate U+DCFF, which UTF-8 cannot encode")]


def _rejects(path: Path) -> list[tuple[str, str, str]]:
    return [(r["where"], r["reason"], r["detail"]) for r in map(json.loads, path.read_text().splitlines())]


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_a_string_utf8_cannot_encode_is_a_reject_naming_its_line_and_message(tmp_path, qwen_tokenizer):
    src = tmp_path / "surr.jsonl"
    _with_surrogates(src)
    expected = [(f"{src}:{line}", "not_utf8", detail) for line, detail in NOT_UTF8]

    counts = import_files([str(src)], "canonical", tmp_path / "x.jsonl", max_reject_fraction=1)
    assert (counts["written"], counts["rejected"]) == (3, {"not_utf8": 3})
    assert _rejects(tmp_path / "x.rejects.jsonl") == expected

    counts = render_files([str(src)], qwen_tokenizer, tmp_path / "r.jsonl", max_reject_fraction=1)
    assert counts == {"written": 3, "rejected": {"not_utf8": 3}}

    stats = prepare([str(src)], str(qwen()), tmp_path / "d",
                    PrepareConfig(seq_length=4096, max_reject_fraction=1, workers=0))
    assert stats["trajectories"]["kept"] == 3 and stats["trajectories"]["rejected"] == {"not_utf8": 3}
    assert _rejects(tmp_path / "d" / "rejects.jsonl") == expected


# --- canonical trajectories in Parquet -----------------------------------------------------------------------


def _tool(name: str, properties: dict) -> dict:
    return {"type": "function", "function": {"name": name, "description": f"Use {name}.", "parameters": {
        "type": "object", "properties": properties, "required": list(properties)}}}


TOOLS = [_tool("execute_bash", {"command": {"type": "string", "description": "The command."}}),
         _tool("think", {"thought": {"type": "string", "description": "A thought."}}),
         _tool("str_replace_editor", {"command": {"type": "string", "description": "What to do.", "enum": ["view"]},
                                      "path": {"type": "string", "description": "A file."}})]
"""Tools whose keys come in one order (a Parquet column keeps one order for all its rows) and differ from tool to
tool (which Arrow fills with nulls)."""


def test_canonical_parquet_renders_as_its_jsonl_without_the_nulls_arrow_fills_in(tmp_path, qwen_tokenizer):
    """Written by plain pyarrow (one struct schema per column), the tools come back with every other tool's
    parameters as nulls and the messages with every other message's keys; read as canonical, they are rendered
    as the JSONL they were made from."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = samples()
    for r in records:
        r.pop("metadata")  # an empty struct: Parquet cannot store one
        r["tools"] = TOOLS
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "t.parquet")
    assert pq.read_table(tmp_path / "t.parquet").to_pylist()[0]["tools"][1]["function"]["parameters"][
        "properties"]["command"] is None  # `think` has no `command`: Arrow's null

    renderer = ChatRenderer(qwen_tokenizer)
    tokens = {suffix: [renderer.render(r).input_ids.tolist() for r in iter_trajectories(tmp_path / f"t{suffix}")]
              for suffix in (".jsonl", ".parquet")}
    assert tokens[".parquet"] == tokens[".jsonl"]


def test_object_arguments_lose_their_nulls_from_any_file_and_schema_nulls_in_jsonl_stay(tmp_path):
    """As docs/data.md says: arguments stored as an object lose their null-valued keys whatever the format (an
    object cannot tell Arrow's nulls from the model's); a JSONL tool schema is kept as written."""
    (record,) = [r for r in samples() if r["id"] == "plain"]
    call = record["messages"][3]["tool_calls"][0]
    call["function"]["arguments"] = {"command": "view", "path": "/w/x.py", "path_unused": None}
    record["tools"][0]["function"]["parameters"]["properties"]["timeout"] = {"type": "number", "default": None}
    (tmp_path / "o.jsonl").write_text(json.dumps(record) + "\n")
    import_files([str(tmp_path / "o.jsonl")], "canonical", tmp_path / "x.jsonl")
    (out,) = map(json.loads, (tmp_path / "x.jsonl").read_text().splitlines())
    assert out["messages"][3]["tool_calls"][0]["function"]["arguments"] == {"command": "view", "path": "/w/x.py"}
    assert out["tools"] == record["tools"]


# --- progress and workers ------------------------------------------------------------------------------------


@pytest.mark.slow  # a second or more: the fast tier stays under 2 minutes
def test_import_render_and_prepare_say_how_far_they_got_on_stderr(tmp_path, capfd, monkeypatch, qwen_tokenizer):
    """Not a terminal (a log file, Slurm's output): lines, not a bar redrawn with carriage returns."""
    # a line a minute, were it not for this (not raising: were it gone, no line would come and the test fail)
    monkeypatch.setattr(swehero.progress, "LOG_EVERY", 0, raising=False)
    _corpus(tmp_path / "in.jsonl", instances=6, per_instance=1)
    import_files([str(tmp_path / "in.jsonl")], "canonical", tmp_path / "c.jsonl")
    render_files([str(tmp_path / "c.jsonl")], qwen_tokenizer, tmp_path / "r.jsonl")
    prepare([str(tmp_path / "c.jsonl")], str(qwen()), tmp_path / "d", PrepareConfig(seq_length=4096, workers=0))
    err = capfd.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert any(line.startswith("import: 6 rows [") for line in lines), err
    assert any(line.startswith("render: 6 rows [") for line in lines), err
    last = next(line for line in reversed(lines) if line.startswith("prepare: "))
    assert last.startswith("prepare: 6 trajectories [") and "6 kept, " in last and " tokens/s]" in last, err


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to pin to fewer")
def test_workers_minus_one_is_one_per_core_the_process_may_run_on(tmp_path, qwen_tokenizer):
    """Pinned to one core (taskset, a Slurm allocation), `--workers -1` forks one worker, not one per host core."""
    _corpus(tmp_path / "in.jsonl", instances=4, per_instance=1)
    allowed = os.sched_getaffinity(0)
    pool_sizes = []

    def batches():
        with open(tmp_path / "in.jsonl") as f:
            for line in f:
                pool_sizes.append(len(mp.active_children()))
                yield [("in.jsonl:1", UnparsedLine(line))]  # as read_rows(parse=False) gives it

    prepare_module._setup(qwen_tokenizer, PrepareConfig(seq_length=4096, workers=-1))
    os.sched_setaffinity(0, {min(allowed)})
    try:
        results = list(prepare_module._results(PrepareConfig(seq_length=4096, workers=-1), batches()))
    finally:
        os.sched_setaffinity(0, allowed)
    assert [r[0][0] for r in results] == ["keep"] * 4
    assert max(pool_sizes) == 1  # (the pool starts its worker with the first batch)
