"""What a selection reads and writes without a verifier: the attempts' grades (a grading error to retry is no
grade; a grader's failure counts as unresolved), and the files it writes (`select.json`, `.md`, `.png`), with
scores given by hand."""

import json
from pathlib import Path

import pytest

from swehero.errors import InputError
from swehero.eval.attempts import Attempt, read_attempts
from swehero.eval.select import VerifierSettings, select_best, write_selection
from swehero.serve.server import ServeConfig

VERIFIER = {"model": "v", "seq_length": 8, "format": "f"}
RETRY = {"resolved": False, "patch_applied": False, "infra_failure": True, "retry": True, "error": "docker: no space"}
GRADER_FAILED = {"resolved": False, "patch_applied": False, "infra_failure": True, "error": "OSError: broken clone"}


def _write(out: Path, scores: tuple[float, float]) -> dict[str, str]:
    attempts = {"i": [Attempt(run, "i", out / f"t{run}.json", f"diff {run}", run == 1) for run in (0, 1)]}
    return write_selection(["i"], attempts, {(run, "i"): {"score": s} for run, s in enumerate(scores)},
                           VERIFIER, ["f"], out, progress=lambda _: None)


def test_selection_files_are_replaced_whole_under_a_reader(tmp_path):
    """A reader that opened them before a selection rewrote them reads the old ones whole, not the new ones half
    written."""
    paths = _write(tmp_path, (0.9, 0.1))
    readers = {name: open(path, "rb") for name, path in paths.items()}
    old = {name: Path(path).read_bytes() for name, path in paths.items()}
    _write(tmp_path, (0.1, 0.9))  # now the other attempt is selected
    for name, reader in readers.items():
        with reader:
            assert reader.read() == old[name], name
        assert Path(paths[name]).read_bytes() != old[name], name
    assert not list(tmp_path.glob(".*.tmp*"))


def _eval_folder(path: Path, grades: dict[str, list[dict]]) -> None:
    """A one-run eval folder in the layout `swehero eval run` writes: per instance, a patch and its grade lines."""
    (path / "trajectories").mkdir(parents=True)
    (path / "eval.json").write_text(json.dumps({"runs": 1, "instance_ids": list(grades)}))
    with open(path / "predictions.jsonl", "w") as p, open(path / "grades.jsonl", "w") as g:
        for iid, lines in grades.items():
            (path / "trajectories" / f"{iid}.json").write_text(json.dumps({"id": iid, "instance_id": iid}))
            p.write(json.dumps({"instance_id": iid, "model_name_or_path": "m", "model_patch": f"+fix {iid}\n"}) + "\n")
            g.writelines(json.dumps({"instance_id": iid, **line}) + "\n" for line in lines)


def test_a_grading_error_to_retry_is_no_grade_and_selection_refuses_it(tmp_path):
    _eval_folder(tmp_path / "e", {"A": [RETRY], "B": [GRADER_FAILED], "C": [{"resolved": True}]})
    attempts = read_attempts([tmp_path / "e"])[1]
    assert [(a.resolved, a.infra_failure) for a in (attempts["A"][0], attempts["B"][0], attempts["C"][0])] == \
        [(None, False), (False, True), (True, False)]
    settings = VerifierSettings(serve=ServeConfig(model="never/loaded", max_model_len=64), seq_length=64,
                                endpoint="http://127.0.0.1:9/v1")
    with pytest.raises(InputError, match=r"1 attempt\(s\) are not graded yet, or their grading errored .*A\.json"):
        select_best([tmp_path / "e"], settings, tmp_path / "out", progress=lambda _: None)
    # graded again, the later line is the grade
    with open(tmp_path / "e" / "grades.jsonl", "a") as g:
        g.write(json.dumps({"instance_id": "A", "resolved": True}) + "\n")
    assert read_attempts([tmp_path / "e"])[1]["A"][0].resolved is True


def test_a_grader_failure_counts_as_unresolved_and_is_named_in_the_report(tmp_path):
    _eval_folder(tmp_path / "e", {"A": [{"resolved": True}], "B": [GRADER_FAILED]})
    ids, attempts = read_attempts([tmp_path / "e"])
    paths = write_selection(ids, attempts, {(0, "A"): {"score": 0.9}, (0, "B"): {"score": 0.8}}, VERIFIER, ["e"],
                            tmp_path, progress=lambda _: None)
    report = json.loads(Path(paths["select"]).read_text())
    assert report["mean"] == report["best_at_k"]["1"] == 0.5
    assert report["grader_failures"] == [{"run": 0, "instance_id": "B"}]
    assert "1 attempt(s) whose grader failed (`infra_failure`) count as unresolved" in \
        Path(paths["select_md"]).read_text()
