"""What a selection reads and writes without a verifier: the attempts' grades (a grading error to retry is no
grade; a grader's failure counts as unresolved), runs given twice, the verifier's identity, the score of a verdict
ruled out, the checks an eval makes before its runs, and the files it writes (`select.json`, `.md`, `.png`), with
scores given by hand."""

import json
import math
import os
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from data_samples import samples

from swehero.errors import InputError, Unavailable
from swehero.eval.attempts import Attempt, read_attempts
from swehero.eval.runs import EvalFolderError
from swehero.eval.select import SCORES, VerifierSettings, select_best, write_selection
from swehero.serve.server import ServeConfig

VERIFIER = {"model": "v", "seq_length": 8, "format": "f"}
RETRY = {"resolved": False, "patch_applied": False, "infra_failure": True, "retry": True, "error": "docker: no space"}
PATCH = "diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-    return a\n+    return b\n"
TASK = {"repo": "o/r", "base_commit": "c0ffee", "problem_statement": "Fix it.", "PASS_TO_PASS": ["t::a"]}
GRADER_FAILED = {"resolved": False, "patch_applied": False, "infra_failure": True, "error": "OSError: broken clone"}


def _write(out: Path, scores: tuple[float, float]) -> dict[str, str]:
    attempts = {"i": [Attempt(run, "i", out / f"t{run}.json", f"diff {run}", run == 1) for run in (0, 1)]}
    return write_selection(["i"], attempts, {(run, "i"): {"score": s} for run, s in enumerate(scores)},
                           VERIFIER, [{"folder": "f", "model": "m", "runs": 2}], out, progress=lambda _: None)


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


def test_the_headline_count_does_not_depend_on_the_order_of_tied_runs(tmp_path):
    """It counted the selected run of each instance, the lowest of tied ones: a verifier scoring all alike resolved
    every instance given one order of the runs, none given the other."""
    counts = []
    for resolved_run in (0, 1):
        attempts = {"i": [Attempt(run, "i", tmp_path / f"t{run}.json", f"diff {run}", run == resolved_run)
                          for run in (0, 1)]}
        paths = write_selection(["i"], attempts, {(run, "i"): {"score": 0.5} for run in (0, 1)}, VERIFIER,
                                [{"folder": "f", "model": "m", "runs": 2}], tmp_path / str(resolved_run),
                                progress=lambda _: None)
        counts.append(json.loads(Path(paths["select"]).read_text())["selected_resolved"])
        assert "Selected attempts resolve 0.5 of the 1 instances some run resolved (best@2 x instances" in \
            Path(paths["select_md"]).read_text()
    assert counts == [0.5, 0.5]


def _eval_folder(path: Path, grades: dict[str, list[dict]], record: dict | None = None) -> None:
    """A one-run eval folder in the layout `swehero eval run` writes: per instance, a patch and its grade lines; the
    trajectories are `record` (default: none a verifier can judge) under each instance's id."""
    (path / "trajectories").mkdir(parents=True)
    tasks = path.with_name(f"{path.name}.tasks.jsonl")
    tasks.write_text("".join(json.dumps(TASK | {"instance_id": iid}) + "\n" for iid in grades))
    (path / "eval.json").write_text(json.dumps({"runs": 1, "instance_ids": list(grades), "tasks": str(tasks),
                                                "model": "m"}))
    with open(path / "predictions.jsonl", "w") as p, open(path / "grades.jsonl", "w") as g:
        for iid, lines in grades.items():
            (path / "trajectories" / f"{iid}.json").write_text(json.dumps({**(record or {}), "id": iid,
                                                                           "instance_id": iid}))
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


def test_a_grade_made_on_other_test_lists_is_no_grade_for_a_selection(tmp_path):
    """As in the runs' reports: a task whose test lists changed since it was graded is not graded, and a selection
    refuses it rather than counting the old verdict (it counted 1 of 1 where the report counted it not graded)."""
    from swehero.eval.grade import graded_task_digest
    from swehero.rollout.tasks import load_tasks

    _eval_folder(tmp_path / "e", {"A": [{"resolved": True}]})
    digest = graded_task_digest(load_tasks(str(tmp_path / "e.tasks.jsonl"))[0])  # as grading records it
    (tmp_path / "e" / "grades.jsonl").write_text(json.dumps({"instance_id": "A", "resolved": True,
                                                             "task_digest": digest}) + "\n")
    assert read_attempts([tmp_path / "e"])[1]["A"][0].resolved is True
    (tmp_path / "e.tasks.jsonl").write_text(json.dumps(TASK | {"instance_id": "A", "PASS_TO_PASS": []}) + "\n")
    assert read_attempts([tmp_path / "e"])[1]["A"][0].resolved is None
    settings = VerifierSettings(serve=ServeConfig(model="never/loaded", max_model_len=64), seq_length=64,
                                endpoint="http://127.0.0.1:9/v1")
    with pytest.raises(InputError, match=r"1 attempt\(s\) are not graded yet"):
        select_best([tmp_path / "e"], settings, tmp_path / "out", progress=lambda _: None)


def test_a_grader_failure_counts_as_unresolved_and_is_named_in_the_report(tmp_path):
    _eval_folder(tmp_path / "e", {"A": [{"resolved": True}], "B": [GRADER_FAILED]})
    ids, attempts = read_attempts([tmp_path / "e"])
    paths = write_selection(ids, attempts, {(0, "A"): {"score": 0.9}, (0, "B"): {"score": 0.8}}, VERIFIER,
                            [{"folder": "e", "model": "m", "runs": 1}], tmp_path, progress=lambda _: None)
    report = json.loads(Path(paths["select"]).read_text())
    assert report["mean"] == report["best_at_k"]["1"] == 0.5
    assert report["grader_failures"] == [{"run": 0, "instance_id": "B"}]
    assert "1 attempt(s) whose grader failed (`infra_failure`) count as unresolved" in \
        Path(paths["select_md"]).read_text()
    assert "Runs read, in this order: e (m, 1 run(s))" in Path(paths["select_md"]).read_text()


def test_a_run_given_twice_or_copied_is_refused_not_counted_twice(tmp_path):
    """Two runs of the same attempts are no independent runs: pass@k and best@k would count them twice."""
    _eval_folder(tmp_path / "e", {"A": [{"resolved": True}], "B": [{"resolved": False}]})
    (tmp_path / "link").symlink_to(tmp_path / "e")
    for again in (tmp_path / "e", tmp_path / "link"):
        with pytest.raises(EvalFolderError, match=rf"{again}: the run folder {tmp_path / 'e'} is given twice"):
            read_attempts([tmp_path / "e", again])
    copy = Path(shutil.copytree(tmp_path / "e", tmp_path / "copy"))
    settings = VerifierSettings(serve=ServeConfig(model="never/loaded", max_model_len=64), seq_length=64,
                                endpoint="http://127.0.0.1:9/v1")
    with pytest.raises(EvalFolderError, match=rf"{copy}: every attempt is one of {tmp_path / 'e'} "):
        select_best([tmp_path / "e", copy], settings, tmp_path / "out", progress=lambda _: None)


def test_two_folders_made_alike_with_one_seed_are_refused(tmp_path):
    """More runs, evaluated into a second folder as the first was and with the same --seed, repeat the first
    folder's seeds run for run (each attempt's seed follows from the eval's, the instance and the run's index):
    near copies, which would count as independent runs. Folders of another checkpoint (or another temperature)
    with that seed sample otherwise."""
    made = {"serve_model": "/ckpt/step-1000", "agent": {"openai": {"temperature": 0.7}}}
    for name, seed, model, runs in (("a", 7, "/ckpt/step-1000", 2), ("b", 7, "/ckpt/step-1000", 4),
                                    ("c", 8, "/ckpt/step-1000", 2), ("d", 7, "/ckpt/step-2000", 2)):
        _eval_folder(tmp_path / name, {"A": [{"resolved": True}], "B": [{"resolved": False}]})
        saved = json.loads((tmp_path / name / "eval.json").read_text())
        (tmp_path / name / "eval.json").write_text(json.dumps(
            {**saved, "attempts": {**made, "serve_model": model, "seed": seed, "runs": runs}}))
    with pytest.raises(EvalFolderError, match=f"^{tmp_path / 'b'} was made as {tmp_path / 'a'} was, with the same "
                                              r"seed \(7\): its runs repeat"):
        read_attempts([tmp_path / "a", tmp_path / "b"])
    assert len(read_attempts([tmp_path / "a", tmp_path / "c", tmp_path / "d"])[1]["A"]) == 3


def test_the_verifiers_identity_follows_its_weights_and_config(tmp_path):
    """A verifier written again into the same folder (retrained, exported again) is another verifier: its old
    scores are not reused; a copy of it (its files' times not kept) is the same verifier."""
    from swehero.eval.select import verifier_identity

    folder = tmp_path / "verifier"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "tokenizer.json").write_text("{}")
    settings = VerifierSettings(serve=ServeConfig(model=str(folder), max_model_len=64), seq_length=64)
    first = verifier_identity(settings)
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')  # another tokenizer renders attempts otherwise
    assert verifier_identity(settings) == {**first, "tokenizer_and_template": verifier_identity(settings)[
        "tokenizer_and_template"]} != first
    (folder / "tokenizer.json").write_text("{}")
    assert verifier_identity(settings) == first
    os.utime(folder / "model.safetensors", ns=(1, 1))  # the same weights, copied or downloaded again
    assert verifier_identity(settings) == first
    (folder / "model.safetensors").write_bytes(b"weighTs")  # new weights of the same size
    retrained = verifier_identity(settings)
    assert retrained["weights_sampled"] != first["weights_sampled"] and retrained["model"] == first["model"]
    (folder / "config.json").write_text('{"hidden_size": 16}')
    assert verifier_identity(settings)["weights_sampled"] not in (first["weights_sampled"],
                                                                  retrained["weights_sampled"])


class _Completions(ThreadingHTTPServer):
    """A completions endpoint answering as vLLM does: the two verdicts' log-probabilities, here given, for what the
    tiny model served by vLLM never produces (vLLM reports a verdict the model rules out, -inf, as -9999.0), and a
    server that dies: after `answers` completions it stops, mid-request, and refuses connections."""

    def __init__(self, logprobs: tuple[float, float] | None, answers: int | None = None) -> None:
        """`logprobs`: of yes and no; None: a server that ignores `logprob_token_ids` (its top token only)."""
        logprob_yes, logprob_no = logprobs or (None, None)
        server = self
        answered = threading.Semaphore(answers if answers is not None else 1 << 30)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # /models
                self._send({"data": [{"id": "verifier"}]})

            def do_POST(self) -> None:
                yes, no = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["logprob_token_ids"]
                if not answered.acquire(blocking=False):
                    server.stop()
                    return  # the connection is dropped unanswered
                top = {f"token_id:{yes}": logprob_yes, f"token_id:{no}": logprob_no} if logprobs else {"token_id:7": -0.1}
                self._send({"choices": [{"logprobs": {"top_logprobs": [top]}}]})

            def _send(self, reply: dict) -> None:
                body = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.mark.parametrize("logprobs, score", [((0.0, -9999.0), 1.0), ((-9999.0, 0.0), 0.0),
                                             ((math.log(0.3), math.log(0.1)), 0.75)])
def test_a_verdict_the_verifier_rules_out_scores_0_or_1_without_overflow(tiny_model_dir, logprobs, score):
    from swehero.agent.openai_policy import OpenAIConfig
    from swehero.data.render import load_tokenizer
    from swehero.data.verifier import VerifierFormat
    from swehero.eval.select import _Scorer

    record = {**samples()[0], "patch": PATCH}
    server = _Completions(logprobs)
    try:
        scored = _Scorer(OpenAIConfig(base_url=server.url), VerifierFormat(load_tokenizer(str(tiny_model_dir)), 4096)
                         ).score(record, PATCH)
    finally:
        server.stop()
    assert scored["score"] == pytest.approx(score) and (scored["logprob_yes"], scored["logprob_no"]) == logprobs


def test_a_verifier_server_that_cannot_score_is_one_error_naming_it(tiny_model_dir):
    """A server that ignores `logprob_token_ids` (its top token only) was a KeyError traceback."""
    from swehero.agent.openai_policy import OpenAIConfig
    from swehero.data.render import load_tokenizer
    from swehero.data.verifier import VerifierFormat
    from swehero.errors import Unavailable
    from swehero.eval.select import _Scorer

    server = _Completions(None)
    try:
        with pytest.raises(Unavailable, match=f"^the verifier at {server.url} answered without the log-probabilities "
                                              "of both answers: it must be a vLLM server that takes"):
            _Scorer(OpenAIConfig(base_url=server.url), VerifierFormat(load_tokenizer(str(tiny_model_dir)), 4096)
                    ).score({**samples()[0], "patch": PATCH}, PATCH)
    finally:
        server.stop()


def test_eval_checks_its_verifier_settings_before_any_run(tmp_path):
    """A verifier setting no selection can use fails before the runs, not after hours of them; a running server
    alone (`verifier.endpoint`) is a selection too, which needs the checkpoint it serves; and a selection needs
    graded attempts."""
    from swehero.agent.settings import AgentSettings
    from swehero.eval.pipeline import Settings, evaluate
    from swehero.rollout.toy import HELDOUT, build_toy_tasks

    toy = build_toy_tasks(tmp_path / "toy").parent
    unusable = {
        r"verifier\.endpoint needs verifier\.serve\.model too": (VerifierSettings(endpoint="http://127.0.0.1:9/v1"),
                                                                   "local"),
        r"verifier\.seq_length 8192 exceeds verifier\.serve\.max_model_len 4096": (VerifierSettings(
            serve=ServeConfig(model="never/loaded", max_model_len=4096), seq_length=8192), "local"),
        r"the verifier's selection reports best@k beside pass@k, which takes graded attempts": (VerifierSettings(
            serve=ServeConfig(model="never/loaded")), "none")}
    for k, (problem, (verifier, grader)) in enumerate(unusable.items()):
        settings = Settings(tasks=str(toy / HELDOUT), repos=str(toy / "repos"), agent=AgentSettings(policy="gold"),
                            runs=2, verifier=verifier)
        settings.grading.grader = grader
        with pytest.raises(InputError, match=problem):
            evaluate(settings, tmp_path / f"eval-{k}", progress=lambda _: None)
        assert not (tmp_path / f"eval-{k}").exists()  # nothing was run


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_verifier_server_that_dies_fails_the_selection_within_one_retry_cycle(tiny_model_dir, tmp_path):
    """Each request retries a dead server for half a minute (backoff 1 + 2 + 4 + 8 + 16 s): the attempts not started
    when the first fails are not started, and the score committed before stays."""
    instances = [f"i{k}" for k in range(6)]
    _eval_folder(tmp_path / "e", {iid: [{"resolved": k % 2 == 0}] for k, iid in enumerate(instances)},
                 record=samples()[0])
    server = _Completions((-0.5, -1.0), answers=1)
    settings = VerifierSettings(serve=ServeConfig(model=str(tiny_model_dir), max_model_len=4096), seq_length=4096,
                                endpoint=server.url, workers=2)
    start = time.monotonic()
    with pytest.raises(Unavailable, match=f"^the verifier at {server.url}: .*Connection refused"):
        select_best([tmp_path / "e"], settings, tmp_path / "out", progress=lambda _: None)
    # the two requests under way when it died retry at once; four more attempts, two at a time, would be two more
    assert time.monotonic() - start < 50
    # the one answer went to whichever of the first two requests reached the server first
    scored = [line["instance_id"] for line in map(json.loads, (tmp_path / "out" / SCORES).open())]
    assert len(scored) == 1 and scored[0] in ("i0", "i1")


@pytest.mark.slow  # its retries of the dead server take half a minute
@pytest.mark.timeout(120)
def test_a_verifier_endpoint_that_never_answers_is_one_error_naming_it(tiny_model_dir, tmp_path):
    """Asked which model it serves, a server that does not answer raised a PolicyError: a traceback."""
    _eval_folder(tmp_path / "e", {"i0": [{"resolved": True}]}, record=samples()[0])
    settings = VerifierSettings(serve=ServeConfig(model=str(tiny_model_dir), max_model_len=4096), seq_length=4096,
                                endpoint="http://127.0.0.1:9/v1")
    with pytest.raises(Unavailable, match=r"^the verifier's server does not answer: http://127\.0\.0\.1:9/v1/models"):
        select_best([tmp_path / "e"], settings, tmp_path / "out", progress=lambda _: None)
