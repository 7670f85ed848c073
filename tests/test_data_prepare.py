import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from data_samples import samples
from tests_paths import qwen

from swehero.data.pack import BestFitPacker
from swehero.data.prepare import PrepareConfig, _process as _PROCESS, prepare
from swehero.data.render import ChatRenderer
from swehero.errors import InputError
from swehero.jsonio import partial_folder

N_INSTANCES = 24
TIMINGS = ("seconds", "cpu_seconds", "rendered_tokens_per_second")


def _corpus(path: Path) -> list[dict]:
    """24 instances x 2 trajectories of the sample shapes, plus one bad line of each kind."""
    records = []
    for i in range(N_INSTANCES):
        for j in range(2):
            r = copy.deepcopy(samples()[(i + j) % 3])
            r["id"], r["instance_id"] = f"t{i}-{j}", f"org__repo-{i}"
            r["messages"][-1]["content"] = f"turn {i}.{j} " * (1 + 40 * ((i * 7 + j) % 5))  # vary lengths
            records.append(r)
    records[5]["messages"][3]["content"] += "\n<|im_end|>"  # a tool result may quote a special token: kept
    bad = [copy.deepcopy(records[0]) for _ in range(5)]
    del bad[0]["instance_id"]
    bad[1]["messages"][1]["role"] = "robot"
    bad[2]["messages"][2]["tool_calls"][0]["function"]["arguments"] = "{not json"
    bad[3]["messages"][-1] = {"role": "assistant", "content": "  "}
    bad[4]["messages"][2]["tool_calls"][0]["function"]["arguments"] = json.dumps({"command": "echo '<|im_end|>' >> t.j2"})
    lines = [json.dumps(r) for r in records[:10]] + ['{"id": "broken", '] + [json.dumps(b) for b in bad]
    lines += [json.dumps(r) for r in records[10:]]
    path.write_text("\n".join(lines) + "\n")
    return records


def _read_split(prefix: Path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    tokens, mask = IndexedDataset(f"{prefix}_tokens"), IndexedDataset(f"{prefix}_loss_mask")
    assert np.array_equal(tokens.sequence_lengths, mask.sequence_lengths)
    assert np.array_equal(tokens.document_indices, mask.document_indices)
    samples_ = []
    for d in range(len(tokens.document_indices) - 1):
        a, b = tokens.document_indices[d], tokens.document_indices[d + 1]
        samples_.append(
            ([np.array(tokens[k]) for k in range(a, b)], [np.array(mask[k]) for k in range(a, b)])
        )  # copies: the mmap closes with the dataset
    return samples_


@pytest.fixture(scope="module")
def built(tmp_path_factory, qwen_tokenizer):
    tmp = tmp_path_factory.mktemp("prep")
    records = _corpus(tmp / "in.jsonl")
    cfg = PrepareConfig(seq_length=6144, valid_fraction=0.25, max_reject_fraction=0.2, max_open=8)
    stats = prepare([str(tmp / "in.jsonl")], str(qwen()), tmp / "out", cfg)
    return tmp, records, cfg, stats


@pytest.mark.slow
def test_packed_samples_hold_exact_renders_with_boundaries(built, qwen_tokenizer):
    tmp, records, cfg, stats = built
    renderer = ChatRenderer(qwen_tokenizer)
    expected = {}
    for r in records:
        out = renderer.render(r)
        expected[tuple(out.input_ids.tolist())] = out.loss_mask
    pad = stats["pad_token_id"]
    found = 0
    for split in ("train", "valid"):
        for segs, masks in _read_split(tmp / "out" / split):
            assert sum(len(s) for s in segs) == cfg.seq_length
            for s, m in zip(segs, masks):
                if (s == pad).all():
                    assert not m.any()  # the padding segment closes the sample and is never trained
                    continue
                assert np.array_equal(expected[tuple(s.tolist())], m)
                found += 1
    assert found == len(records) == stats["trajectories"]["kept"]
    assert stats["trained_tokens"] == sum(int(m.sum()) for m in expected.values())


@pytest.mark.slow
def test_split_by_instance_stats_and_rejects(built, qwen_tokenizer):
    tmp, records, _, stats = built
    assert stats["trajectories"]["read"] == len(records) + 6
    assert stats["trajectories"]["rejected"] == {
        "malformed_json": 1,
        "missing_field": 1,
        "unknown_role": 1,
        "invalid_tool_arguments": 1,
        "empty_assistant_turn": 1,
        "special_token_in_turn": 1,
    }
    rejects = [json.loads(x) for x in (tmp / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [r["where"].rsplit(":", 1)[1] for r in rejects] == ["11", "12", "13", "14", "15", "16"]
    assert rejects[-1]["detail"] == "message 2 writes <|im_end|>"
    assert stats["samples"]["valid"] > 0 and stats["samples"]["train"] > 0
    assert 0.5 < stats["packing_efficiency"] <= 1.0
    assert (tmp / "out" / "lengths.png").stat().st_size > 1000
    renderer = ChatRenderer(qwen_tokenizer)
    instance_of = {tuple(renderer.render(r).input_ids.tolist()): r["instance_id"] for r in records}
    instances = {
        split: {
            instance_of[tuple(s.tolist())]
            for segs, _ in _read_split(tmp / "out" / split)
            for s in segs
            if tuple(s.tolist()) in instance_of
        }
        for split in ("train", "valid")
    }
    assert instances["train"] and instances["valid"] and not instances["train"] & instances["valid"]
    assert len(instances["train"] | instances["valid"]) == N_INSTANCES


@pytest.mark.slow
def test_rerun_is_deterministic_and_complete_output_is_kept(built):
    tmp, _, cfg, stats = built
    again = prepare([str(tmp / "in.jsonl")], str(qwen()), tmp / "again", cfg)
    for name in ("train_tokens.bin", "train_loss_mask.bin", "valid_tokens.idx", "train_tokens.idx"):
        assert (tmp / "out" / name).read_bytes() == (tmp / "again" / name).read_bytes()
    assert {k: v for k, v in again.items() if k not in TIMINGS} == {k: v for k, v in stats.items() if k not in TIMINGS}
    mtime = (tmp / "again" / "train_tokens.bin").stat().st_mtime_ns
    assert prepare([str(tmp / "in.jsonl")], str(qwen()), tmp / "again", cfg) == again
    assert (tmp / "again" / "train_tokens.bin").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_killed_run_leftovers_restart_cleanly_and_failure_leaves_nothing_complete(built):
    tmp, _, cfg, _ = built
    partial = tmp / "resume.partial"
    partial.mkdir()
    (partial / "train_tokens.bin").write_bytes(b"half written")
    prepare([str(tmp / "in.jsonl")], str(qwen()), tmp / "resume", cfg)
    assert not partial.exists()
    assert (tmp / "resume" / "train_tokens.bin").read_bytes() == (tmp / "out" / "train_tokens.bin").read_bytes()
    strict = PrepareConfig(seq_length=cfg.seq_length, max_reject_fraction=0.01)
    with pytest.raises(InputError, match="max-reject-fraction"):
        prepare([str(tmp / "in.jsonl")], str(qwen()), tmp / "strict", strict)
    assert not (tmp / "strict").exists()


@pytest.mark.slow
def test_too_long_policies(built, qwen_tokenizer):
    tmp, records, _, _ = built
    short = {"seq_length": 2600, "valid_fraction": 0.0, "max_reject_fraction": 0.2}
    trunc = prepare([str(tmp / "in.jsonl")], str(qwen()), tmp / "trunc", PrepareConfig(**short, too_long="truncate"))
    drop = prepare([str(tmp / "in.jsonl")], str(qwen()), tmp / "drop", PrepareConfig(**short, too_long="drop"))
    assert trunc["trajectories"]["truncated"] > 0
    assert drop["trajectories"]["dropped"]["too_long"] >= trunc["trajectories"]["truncated"]
    assert drop["trajectories"]["kept"] + drop["trajectories"]["dropped"]["too_long"] == len(records)
    lengths = sorted(len(ChatRenderer(qwen_tokenizer).render(r).input_ids) for r in records)
    median = (lengths[len(lengths) // 2 - 1] // 256 + 1) * 256  # upper edge of its 256-token bucket, not capped
    with pytest.raises(InputError, match=rf"none of the \d+ trajectories was kept \(dropped: \{{'too_long': "
                                         rf"{len(records)}\}}, rejected: \{{.+\}}\); their median length is "
                                         rf"{median} tokens, seq_length 256"):
        prepare([str(tmp / "in.jsonl")], str(qwen()), tmp / "none", PrepareConfig(**{**short, "seq_length": 256},
                                                                               too_long="drop"))
    assert not (tmp / "none").exists()


@pytest.mark.slow
def test_multiprocess_output_equals_in_process(built):
    tmp, _, cfg, _ = built
    cfg2 = PrepareConfig(**{**cfg.__dict__, "workers": 2, "batch_size": 5})
    prepare([str(tmp / "in.jsonl")], str(qwen()), tmp / "mp", cfg2)
    for name in ("train_tokens.bin", "train_loss_mask.bin", "valid_tokens.bin", "train_tokens.idx"):
        assert (tmp / "out" / name).read_bytes() == (tmp / "mp" / name).read_bytes()


def _killed_on_its_third_batch(batch):
    """Stands in for `prepare._process` in the forked workers: the worker given the third batch is killed, as the
    OOM killer kills one on a batch of long rows."""
    import os
    import signal

    if batch[0][0].endswith(":11"):  # batches of 5 rows: the third starts at line 11
        os.kill(os.getpid(), signal.SIGKILL)
    return _PROCESS(batch)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_worker_killed_mid_run_ends_the_run_with_its_reason(built, monkeypatch):
    """multiprocessing.Pool replaced the killed worker and never answered its batch: the run waited forever."""
    from swehero.data import prepare as module
    from swehero.errors import ProcessFailed

    tmp, _, cfg, _ = built
    monkeypatch.setattr(module, "_process", _killed_on_its_third_batch)
    with pytest.raises(ProcessFailed, match="^a worker process died while preparing \\(killed: out of memory"):
        prepare([str(tmp / "in.jsonl")], str(qwen()), tmp / "killed", PrepareConfig(**{**cfg.__dict__, "workers": 2,
                                                                                       "batch_size": 5}))
    assert not (tmp / "killed").exists()


def _slow_after_the_first(batch):
    """Stands in for `prepare._process` in the workers: the first batch at once, the others after 30 s of sleep."""
    import time

    if not batch[0][0].endswith(":1"):
        time.sleep(30)
    return batch


def _half_a_second_of_cpu(batch):
    import time

    end = time.process_time() + 0.5
    while time.process_time() < end:
        pass
    return batch


@pytest.mark.slow
def test_workers_stop_with_the_run_and_their_cpu_time_is_counted(monkeypatch):
    """On a ProcessPoolExecutor the batches already queued to its workers ran to their end after the run stopped
    (36 s of a test's 20-s batches after SIGTERM; Pool.terminate() stopped them at once); and its workers, not
    joined when the run ended, were missing from the stats' `cpu_seconds`. Stopped twenty times: a worker reaped by
    the pool's thread while the stop joined it too was still listed as running in about one stop of seven."""
    import multiprocessing as mp
    import time

    from swehero.data import prepare as module

    batches = [[(f"in.jsonl:{n}", None)] for n in range(1, 9)]
    monkeypatch.setattr(module, "_process", _slow_after_the_first)
    for _ in range(20):
        results = module._results(PrepareConfig(seq_length=64, workers=2), iter(batches))
        assert next(results) == batches[0]
        start = time.monotonic()
        results.close()  # as the run's loop leaves it on an error, Ctrl-C or SIGTERM
        assert time.monotonic() - start < 10 and mp.active_children() == []
    monkeypatch.setattr(module, "_process", _half_a_second_of_cpu)
    before = module._cpu_seconds()
    assert list(module._results(PrepareConfig(seq_length=64, workers=2), iter(batches))) == batches
    assert module._cpu_seconds() - before >= 3.5  # 8 batches of half a second


def test_best_fit_packer():
    p = BestFitPacker(10, max_open=2)
    assert p.add("a", 6) == [] and p.add("b", 5) == []
    assert [b.items for b in p.add("c", 4)] == [["a", "c"]]  # best fit: the 4 goes where room is exactly 4
    assert p.add("d", 7) == []
    assert [b.items for b in p.add("e", 8)] == [["d"]]  # a third open bin is needed: the fullest is closed
    assert [b.items for b in p.flush()] == [["b"], ["e"]]
    with pytest.raises(ValueError):
        p.add("e", 11)


@pytest.mark.slow
def test_a_complete_dataset_made_otherwise_is_refused_naming_what_differs(built):
    """A rerun into a finished folder reuses it only when it was made from the same inputs and settings (any
    number of workers); otherwise it says what differs instead of returning the old dataset."""
    tmp, records, cfg, stats = built
    again = prepare([str(tmp / "in.jsonl")], str(qwen()), tmp / "out", PrepareConfig(**{**cfg.__dict__, "workers": 2}))
    assert again == stats
    with pytest.raises(InputError, match=r"out holds a dataset made from other inputs or settings \(settings."
                                         r"seq_length: 6144 -> 4096\): choose another --out, or delete it"):
        prepare([str(tmp / "in.jsonl")], str(qwen()), tmp / "out", PrepareConfig(**{**cfg.__dict__, "seq_length": 4096}))
    other = tmp / "other" / "in.jsonl"
    other.parent.mkdir()
    other.write_text("".join(json.dumps(r) + "\n" for r in records[:6]))
    with pytest.raises(InputError, match=rf"\(inputs.{tmp / 'in.jsonl'}: '\d+:\d+' -> None; inputs.{other}: None -> "):
        prepare([str(other)], str(qwen()), tmp / "out", cfg)


@pytest.mark.parametrize("existing", ["folder", "file"])
def test_an_out_that_is_not_a_dataset_is_refused_before_any_work(existing, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in samples()))
    out = tmp_path / "out"
    if existing == "folder":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    else:
        out.write_text("mine")
    with pytest.raises(InputError, match=rf"^{out}: already exists and is not a dataset `swehero data prepare` "
                                         r"finished \(no stats.json\): choose another --out, or delete it$"):
        prepare([str(src)], str(qwen()), out, PrepareConfig(seq_length=4096))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out"]  # no out.partial: no work was done


def test_a_run_into_an_output_another_run_is_writing_is_refused_and_leaves_that_run_whole(tmp_path):
    """A second run removed the first one's `out.partial` and made its own; the first wrote the rest of its output
    into that one and renamed it to `out`: a complete-looking dataset of two runs' files."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in samples()))
    out = tmp_path / "out"
    with partial_folder(out) as first_runs:  # a first run, still writing
        first_runs.mkdir()
        (first_runs / "train_tokens.bin").write_text("the first run's tokens")
        with pytest.raises(InputError, match=rf"^{out}: another run is writing it \(into {out}.partial\)"):
            prepare([str(src)], str(qwen()), out, PrepareConfig(seq_length=4096))
        assert [p.name for p in first_runs.iterdir()] == ["train_tokens.bin"]
        assert (first_runs / "train_tokens.bin").read_text() == "the first run's tokens"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.partial"]  # and no lock file left


@pytest.mark.slow
def test_a_dataset_written_into_its_input_folder_is_no_input_of_a_rerun(tmp_path):
    """Its stats.json and rejects.jsonl were read as trajectories: a rerun saw other inputs and refused the dataset,
    and another dataset written beside it counted them as rejects."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples()) + "{bad\n")
    cfg = PrepareConfig(seq_length=4096, valid_fraction=0.0, max_reject_fraction=0.5)
    first = prepare([str(folder)], str(qwen()), folder / "sft", cfg)
    assert (folder / "sft" / "rejects.jsonl").exists()
    assert prepare([str(folder)], str(qwen()), folder / "sft", cfg) == first
    beside = prepare([str(folder)], str(qwen()), folder / "sft-again", cfg)
    assert beside["trajectories"] == first["trajectories"] == {
        "read": 4, "kept": 3, "truncated": 0, "rejected": {"malformed_json": 1}, "dropped": {}}


@pytest.mark.slow
def test_length_percentiles_are_true_lengths_however_long(tmp_path, qwen_tokenizer):
    """Percentiles count every rendered length, not lengths capped at a multiple of seq_length."""
    records = samples()
    long = copy.deepcopy(records[0])
    long["id"] = "long"
    long["messages"][-1]["content"] = "word " * 12000
    records.append(long)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = PrepareConfig(seq_length=2600, valid_fraction=0.0)
    stats = prepare([str(tmp_path / "in.jsonl")], str(qwen()), tmp_path / "out", cfg)
    length = len(ChatRenderer(qwen_tokenizer).render(long).input_ids)
    assert length > 4 * cfg.seq_length and stats["trajectories"]["truncated"] == 1
    assert stats["length_percentiles"]["p99"] == (length // 256 + 1) * 256


@pytest.mark.slow
def test_each_input_file_and_each_trajectory_is_trained_once(built):
    """A folder and a file in it name the file once; a later copy of a conversation already read is dropped as a
    `duplicate`, found by its content: another trajectory that happens to share its id is kept. A folder holding a
    whole copy of a file trains it once, within the default reject limit (duplicates counted as rejects failed it)."""
    tmp, records, cfg, _ = built
    sub = tmp / "dup"
    sub.mkdir()
    (sub / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:6]))
    once = prepare([str(sub), str(sub / "a.jsonl"), f"{sub}/../dup/a.jsonl"], str(qwen()), tmp / "dup-once", cfg)
    assert once["trajectories"]["read"] == once["trajectories"]["kept"] == 6
    copy, same_id = {**records[2], "id": "copied"}, {**records[7], "id": records[0]["id"]}
    (sub / "b.jsonl").write_text(json.dumps(copy) + "\n" + json.dumps(same_id) + "\n")
    shutil.copy(sub / "a.jsonl", sub / "c.jsonl")
    twice = prepare([str(sub)], str(qwen()), tmp / "dup-ids", cfg)
    assert twice["trajectories"]["read"] == 14 and twice["trajectories"]["kept"] == 7
    assert twice["trajectories"]["dropped"] == {"duplicate": 7} and twice["trajectories"]["rejected"] == {}


@pytest.mark.slow
def test_a_dataset_is_not_reused_once_another_tokenizer_is_saved_into_its_tokenizer_folder(tmp_path):
    """The folder's path alone was recorded: a probe saved another tokenizer to it and got the old dataset back
    (other tokens, another pad id) instead of one tokenized with the tokenizer now there."""
    tok = tmp_path / "tok"
    tok.mkdir()
    for f in qwen().iterdir():
        shutil.copyfile(f, tok / f.name)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples()))
    cfg = PrepareConfig(seq_length=4096, valid_fraction=0.0)
    first = prepare([str(tmp_path / "in.jsonl")], str(tok), tmp_path / "out", cfg)
    assert prepare([str(tmp_path / "in.jsonl")], str(tok), tmp_path / "out", cfg) == first

    config = json.loads((tok / "tokenizer_config.json").read_text())
    (tok / "tokenizer_config.json").write_text(json.dumps({**config, "pad_token": "<|im_end|>"}))
    fresh = prepare([str(tmp_path / "in.jsonl")], str(tok), tmp_path / "fresh", cfg)
    assert fresh["pad_token_id"] != first["pad_token_id"]
    with pytest.raises(InputError, match=r"out holds a dataset made from other inputs or settings \(tokenizer_files"
                                         r"\.tokenizer_config\.json: '[0-9a-f]{16}' -> '[0-9a-f]{16}'\)"):
        prepare([str(tmp_path / "in.jsonl")], str(tok), tmp_path / "out", cfg)

    # what an older swehero recorded (no `tokenizer_files`) is not recorded, not a change: reused as before
    stats = json.loads((tmp_path / "fresh" / "stats.json").read_text())
    del stats["made_from"]["tokenizer_files"]
    (tmp_path / "fresh" / "stats.json").write_text(json.dumps(stats))
    assert prepare([str(tmp_path / "in.jsonl")], str(tok), tmp_path / "fresh", cfg) == stats
