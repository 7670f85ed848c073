"""A rerun into an eval folder keeps only what was made from what it runs on now: attempts of the same weights (a
model written again into the served folder is another model; distillation shares the rollout identity), grades of
the same task rows, a teacher-forced score of the same checkpoint and held-out files. Folders written before these
were recorded resume as they did."""

import json
import os
import random
import re
import shutil
from pathlib import Path

import pytest

from swehero.agent.settings import AgentSettings
from swehero.errors import InputError
from swehero.eval.grade import GRADES, GradingSettings, grade
from swehero.eval.pipeline import Settings, evaluate, open_eval, score_heldout
from swehero.eval.report import TEACHER_FORCED, build_report, markdown
from swehero.rollout.runner import TOKENIZER, attempt_identity, check_resumable
from swehero.rollout.tasks import load_tasks
from swehero.rollout.toy import build_toy_tasks
from swehero.serve.server import ServeConfig

OLD_IDENTITY = ("agent", "serve_model", "max_model_len")
"""The keys `attempt_identity` recorded before the served folder's weights were part of it."""


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return build_toy_tasks(tmp_path_factory.mktemp("toy"))


def _folder(path: Path, weights: bytes) -> Path:
    """A Hugging Face folder as far as the identity reads one: its config and weight files."""
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(weights)
    return path


def _identity(model: Path) -> dict:
    return attempt_identity(AgentSettings(policy="gold"), ServeConfig(model=str(model)))


def test_settings_of_where_and_how_hard_attempts_are_made_do_not_stop_a_resume(tmp_path):
    """Image pruning turned on once the disk filled, environments moved to a bigger disk, more retries: the attempts
    go as before, so the run resumes (also from a record that holds these settings); the sampling does not."""
    from dataclasses import asdict, replace

    agent = AgentSettings(runtime="docker")
    made = attempt_identity(agent, ServeConfig())
    changed = replace(agent, docker=replace(agent.docker, prune_image=True, min_free_gb=20.0),
                      env=replace(agent.env, cache=str(tmp_path / "envs"), retry_failed=True),
                      openai=replace(agent.openai, request_timeout=3600.0, request_retries=8, backoff=5.0))
    check_resumable(tmp_path, made, attempt_identity(changed, ServeConfig()))
    older = {**made, "agent": {**made["agent"], "docker": asdict(agent.docker), "env": asdict(agent.env),
                               "openai": {**made["agent"]["openai"], "request_retries": 5}}}
    check_resumable(tmp_path, older, attempt_identity(changed, ServeConfig()))
    with pytest.raises(InputError, match=re.escape("agent.openai.temperature: 0.7 -> 0.0")):
        check_resumable(tmp_path, made, attempt_identity(replace(changed, openai=replace(changed.openai,
                                                                                          temperature=0.0)),
                                                         ServeConfig()))


def test_a_model_written_again_into_the_served_folder_is_refused_by_its_weights(tmp_path):
    ckpt = _folder(tmp_path / "ckpt", b"a" * 8)
    made = _identity(ckpt)
    check_resumable(tmp_path, made, _identity(ckpt))  # the same weights resume
    os.utime(ckpt / "model.safetensors", ns=(1, 1))  # ... also copied back, or downloaded again, with other times
    check_resumable(tmp_path, made, _identity(ckpt))
    _folder(ckpt, b"b" * 8)  # retrained, exported to the same path
    with pytest.raises(InputError, match=re.escape(f"(the weights in {ckpt} changed since these attempts were made)")):
        check_resumable(tmp_path, made, _identity(ckpt))
    with pytest.raises(InputError) as other:  # another path is said by the path alone
        check_resumable(tmp_path, made, _identity(shutil.copytree(ckpt, tmp_path / "mB")))
    assert f"(serve_model: '{ckpt}' -> '{tmp_path / 'mB'}')" in str(other.value)
    # attempts recorded before the weights were: not recorded, so no difference
    check_resumable(tmp_path, {key: made[key] for key in OLD_IDENTITY}, _identity(ckpt))


def test_a_tokenizer_or_chat_template_exported_again_beside_the_same_weights_is_refused(tmp_path):
    """An export with another `like` replaces the tokenizer and chat template beside the same weights: vLLM then
    renders every prompt otherwise, and the resumed run mixed attempts made under both."""
    ckpt = _folder(tmp_path / "ckpt", b"a" * 8)
    (ckpt / "chat_template.jinja").write_text("{{ messages }}")
    made = _identity(ckpt)
    check_resumable(tmp_path, made, _identity(shutil.copytree(ckpt, tmp_path / "copy")) | {"serve_model": str(ckpt)})
    (ckpt / "chat_template.jinja").write_text("{{ messages | tojson }}")
    with pytest.raises(InputError, match=re.escape(f"(the tokenizer or chat template in {ckpt} changed since")):
        check_resumable(tmp_path, made, _identity(ckpt))
    (ckpt / "chat_template.jinja").unlink()
    with pytest.raises(InputError, match="the tokenizer or chat template"):
        check_resumable(tmp_path, made, _identity(ckpt))
    # attempts recorded before the tokenizer was: not recorded, so no difference
    check_resumable(tmp_path, {key: value for key, value in made.items() if key != TOKENIZER}, _identity(ckpt))


def test_teacher_forced_and_verifier_scores_are_of_the_tokenizer_and_template_too(tmp_path):
    """Both are computed with the folder's own tokenizer and chat template: an export with another `like` kept the
    old teacher-forced score and the old verifier scores."""
    from swehero.eval.pipeline import Settings, heldout_identity
    from swehero.eval.select import VerifierSettings, verifier_identity
    from swehero.rollout.runner import recorded_differences

    ckpt = _folder(tmp_path / "ckpt", b"a" * 8)
    (ckpt / "chat_template.jinja").write_text("{{ messages }}")
    (tmp_path / "heldout.jsonl").write_text("")
    scoring = Settings(heldout_trajectories=[str(tmp_path / "heldout.jsonl")], serve=ServeConfig(model=str(ckpt)))
    judging = VerifierSettings(serve=ServeConfig(model=str(ckpt)))
    before = heldout_identity(scoring), verifier_identity(judging)
    (ckpt / "chat_template.jinja").write_text("{{ messages | tojson }}")
    for made, now in zip(before, (heldout_identity(scoring), verifier_identity(judging))):
        assert [d.split(":")[0] for d in recorded_differences(made, now)] == ["tokenizer_and_template"]


def _gold_prediction(task: dict, run: Path) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "predictions.jsonl").write_text(json.dumps(
        {"instance_id": task["instance_id"], "model_name_or_path": "gold", "model_patch": task["patch"]}) + "\n")


def _local() -> GradingSettings:
    return GradingSettings(grader="local")


@pytest.mark.slow  # two local gradings
def test_a_grade_made_against_an_edited_task_row_is_graded_again(toy, tmp_path):
    """A grade kept by instance id alone would report the old verdict for an edited FAIL_TO_PASS; a grade from
    before rows were recorded is kept."""
    task, repos, said = load_tasks(str(toy), tests=True)[0], toy.parent / "repos", []
    _gold_prediction(task, tmp_path)
    assert grade([task], tmp_path, _local(), repos, str(toy), progress=lambda _: None)["graded"] == 1
    edited = {**task, "FAIL_TO_PASS": ["tests/test_ops.py::test_nothing_named_so"]}
    assert grade([edited], tmp_path, _local(), repos, str(toy), progress=said.append)["graded"] == 1
    assert said[0] == ("grading (local): 1 prediction(s) to grade (1 graded again: their task row changed), 0 graded "
                       "before") and said[1] == f"  {task['instance_id']}: not resolved"
    lines = [json.loads(line) for line in (tmp_path / GRADES).read_text().splitlines()]
    (tmp_path / GRADES).write_text(json.dumps({k: v for k, v in lines[0].items() if k != "task_digest"}) + "\n")
    assert grade([task], tmp_path, _local(), repos, str(toy), progress=lambda _: None)["graded"] == 0


def test_a_report_gives_no_grade_made_against_another_version_of_the_task(toy, tmp_path):
    task, said = load_tasks(str(toy), tests=True)[0], []
    _gold_prediction(task, tmp_path)
    grade([task], tmp_path, _local(), toy.parent / "repos", str(toy), progress=said.append)
    trajectory = tmp_path / "trajectories" / f"{task['instance_id']}.json"
    trajectory.parent.mkdir()
    trajectory.write_text(json.dumps({"messages": [], "metadata": {"finish_reason": "submitted", "steps": 0}}))
    assert build_report([task], tmp_path, "gold", "custom")["resolved"] == 1
    edited = build_report([{**task, "PASS_TO_PASS": []}], tmp_path, "gold", "custom")
    assert edited["resolved"] == 0 and edited["ungraded"] == 1
    # a column grading does not read (a hint, an annotation, a new column) keeps the grade
    annotated = build_report([{**task, "hints_text": "see the docs", "difficulty": "easy"}], tmp_path, "gold", "custom")
    assert annotated["resolved"] == 1


def test_the_weights_fingerprint_reads_the_weights_not_their_files_times(tmp_path):
    """Shards of a few MiB, as a checkpoint's are of GB: a copy with other times is the same model, weights trained
    further (about half the bytes moved by one) are another, and so is one byte changed in its header or at its end."""
    from swehero.model.folder import folder_fingerprint

    rng = random.Random(0)
    values = bytearray(rng.randbytes(3 << 20))
    for name in ("a", "b"):
        _folder(tmp_path / name, bytes(values))
    (tmp_path / "b" / "model.safetensors").touch()  # the same bytes, other times
    assert folder_fingerprint(tmp_path / "a") == folder_fingerprint(tmp_path / "b")
    nudged = bytes(byte ^ (rng.random() < 0.5) for byte in values)  # the lowest bit of about half the bytes
    for changed in (nudged, values[:100] + b"x" + values[101:], values[:-1] + b"\0", b"{" + values[1:]):
        _folder(tmp_path / "b", bytes(changed))
        assert folder_fingerprint(tmp_path / "a") != folder_fingerprint(tmp_path / "b")


def test_a_key_only_one_record_holds_is_no_difference(tmp_path):
    """Not recorded by an older run (a shard or folder written before the key was), or not known now (the weights
    of a model that is no local folder on this host): either way nothing is known to differ."""
    from swehero.rollout.runner import recorded_differences

    now = {"agent": {"mode": "zero"}, "serve_model": "/m", "serve_weights_sampled": "abc", "max_model_len": 8}
    old = {key: now[key] for key in OLD_IDENTITY}
    check_resumable(tmp_path, old, now)
    check_resumable(tmp_path, now, old)
    assert recorded_differences(old, now) == recorded_differences(now, old) == []
    with pytest.raises(InputError, match="the weights in /m changed since these attempts were made"):
        check_resumable(tmp_path, now, {**now, "serve_weights_sampled": "def"})


def test_a_benchmark_named_like_a_folder_here_stays_a_benchmark(tmp_path, monkeypatch):
    """`eval run verified --tasks verified` creates the folder `verified` first: the task source saved for
    `eval report` and `eval grade` must stay the benchmark's name, the task file's path absolute."""
    from swehero.eval.pipeline import _absolute

    monkeypatch.chdir(tmp_path)
    (tmp_path / "verified").mkdir()
    (tmp_path / "tasks.jsonl").write_text("")
    assert [_absolute(source) for source in ("verified", "toy", "tasks.jsonl", "")] == [
        "verified", "toy", str(tmp_path / "tasks.jsonl"), ""]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _edit(toy: Path, out: Path, **columns) -> Path:
    """A copy of the toy task file with its first row's `columns` replaced."""
    rows = _rows(toy)
    rows[0].update(columns)
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return out


def _eval(tasks: Path, repos: Path, out: Path, **kw) -> list[str]:
    said = []
    settings = Settings(tasks=str(tasks), repos=str(repos), agent=AgentSettings(policy="gold"), **{"limit": 1, **kw})
    settings.grading.grader = "local"
    evaluate(settings, out, progress=said.append)
    return said


@pytest.mark.slow
def test_an_eval_rerun_on_an_edited_task_regrades_or_refuses(toy, tmp_path, monkeypatch):
    """Edited test lists: the attempt stands (the agent never saw them) and is graded again, as a fresh folder
    grades it. An edited problem statement or base commit: the attempt was made on another task, so the rerun is
    refused, naming it."""
    out = tmp_path / "E2"
    _eval(toy, toy.parent / "repos", out)
    tests = _edit(toy, tmp_path / "tests.jsonl", FAIL_TO_PASS=json.dumps(["tests/test_ops.py::test_nothing_so"]))
    said = _eval(tests, toy.parent / "repos", out)
    fresh = _eval(tests, toy.parent / "repos", tmp_path / "fresh")
    assert said[-1] == f"resolved 0/1; report: {out / 'report.md'}" and fresh[-1].startswith("resolved 0/1")
    iid = _rows(toy)[0]["instance_id"]
    for column, value in (("problem_statement", "Another bug."), ("base_commit", "0" * 40)):
        edited = _edit(toy, tmp_path / f"{column}.jsonl", **{column: value})
        with pytest.raises(InputError, match=re.escape(f"{out} holds attempts made on another version of 1 task(s) "
                                                       f"in {edited} ({iid}): what the agent saw of them")):
            _eval(edited, toy.parent / "repos", out)
    monkeypatch.chdir(tmp_path)  # a folder made from a relative path finds its tasks from anywhere
    _eval(Path(os.path.relpath(toy, tmp_path)), toy.parent / "repos", Path("E3"))
    monkeypatch.chdir(toy.parent)
    assert [t["instance_id"] for t in open_eval(tmp_path / "E3")[0]] == [iid]


@pytest.mark.slow
def test_grade_and_report_refuse_a_folder_whose_task_file_now_holds_another_task(toy, tmp_path):
    """The task file edited in place after the attempts: `eval grade` and `eval report` read it again, and refuse as
    `eval run` does when what the agent saw changed; an edited test list is graded again."""
    from swehero.eval.pipeline import regrade

    tasks = shutil.copy(toy, tmp_path / "tasks.jsonl")
    out = tmp_path / "E"
    _eval(tasks, toy.parent / "repos", out)
    _edit(toy, tasks, FAIL_TO_PASS=json.dumps(["tests/test_ops.py::test_nothing_so"]))
    said = []
    regrade(out, _local(), progress=said.append)
    assert said[-1] == f"resolved 0/1; report: {out / 'report.md'}", said
    _edit(toy, tasks, problem_statement="Another bug.")
    refusal = re.escape(f"{out} holds attempts made on another version of 1 task(s) in {tasks} "
                        f"({_rows(toy)[0]['instance_id']}): what the agent saw of them")
    with pytest.raises(InputError, match=refusal):
        regrade(out, _local(), progress=said.append)
    with pytest.raises(InputError, match=refusal):
        open_eval(out)


@pytest.mark.slow
def test_grade_and_report_follow_the_last_selection_after_a_narrower_or_another_task_file(toy, tmp_path):
    """A rerun with a narrower --limit, or with another task file, keeps the other attempts in the folder, outside
    its reports: `eval report` and `eval grade` read the selected tasks (they refused the folder, taking the
    attempts outside the selection for tasks edited away)."""
    from swehero.eval.pipeline import regrade

    out, repos, ids = tmp_path / "E", toy.parent / "repos", [row["instance_id"] for row in _rows(toy)]
    _eval(toy, repos, out, limit=3)
    for tasks in (toy, toy.parent / "heldout.jsonl"):
        said = _eval(tasks, repos, out, limit=1)
        assert said[-1] == f"resolved 1/1; report: {out / 'report.md'}"
        assert [t["instance_id"] for t in open_eval(out)[0]] == [_rows(tasks)[0]["instance_id"]]
        regrade(out, _local(), progress=said.append)
        assert said[-1] == f"resolved 1/1; report: {out / 'report.md'}"
    assert _eval(toy, repos, out, limit=3)[-1] == f"resolved 3/3; report: {out / 'report.md'}"  # nothing redone
    assert len(_rows(out / "predictions.jsonl")) == 4 and ids[0] in open(out / "predictions.jsonl").read()


@pytest.mark.slow
def test_an_eval_folder_of_the_old_records_resumes_without_redoing_anything(toy, tmp_path):
    """eval.json without task digests or served weights, grades without task digests: the same command resumes,
    attempting and grading nothing again."""
    ckpt = _folder(tmp_path / "ckpt", b"a" * 8)
    out = tmp_path / "E"
    _eval(toy, toy.parent / "repos", out, serve=ServeConfig(model=str(ckpt)))
    saved = json.loads((out / "eval.json").read_text())
    saved.pop("task_digests", None)
    saved["attempts"]["serve_weights"] = "1f0a9c3e5b7d2468"  # what older versions recorded: the files' times
    del saved["attempts"]["serve_weights_sampled"]
    (out / "eval.json").write_text(json.dumps(saved))
    (out / GRADES).write_text("".join(json.dumps({k: v for k, v in line.items() if k != "task_digest"}) + "\n"
                                      for line in _rows(out / GRADES)))
    said = _eval(toy, toy.parent / "repos", out, serve=ServeConfig(model=str(ckpt)))
    assert "inference: 1 of 1 attempts already finished, 0 to run with 1 worker(s)" in said
    assert "grading (local): 0 prediction(s) to grade, 1 graded before" in said and "resolved 1/1" in said[-1]
    _folder(ckpt, b"b" * 16)  # now recorded: new weights in the same folder are refused
    with pytest.raises(InputError, match=re.escape(f"the weights in {ckpt} changed since these attempts were made")):
        _eval(toy, toy.parent / "repos", out, serve=ServeConfig(model=str(ckpt)))


def _heldout(path: Path) -> str:
    from data_samples import samples

    path.write_text(json.dumps(samples()[0]) + "\n")
    return str(path)


def _score(model: Path, files: list[str], out: Path) -> dict:
    score_heldout(Settings(serve=ServeConfig(model=str(model), max_model_len=4096), heldout_trajectories=files), out,
                  progress=lambda _: None)
    return json.loads((out / TEACHER_FORCED).read_text())


def _mark(out: Path, keep: tuple = ()) -> None:
    """Mark the recorded score, so that a score made again shows (`keep`: only these keys, as older files held)."""
    scored = json.loads((out / TEACHER_FORCED).read_text())
    scored = {key: scored[key] for key in keep} if keep else scored
    (out / TEACHER_FORCED).write_text(json.dumps({**scored, "accuracy": -1.0}))


@pytest.mark.slow
def test_a_teacher_forced_score_is_made_again_for_other_weights_or_held_out_files(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    ckpt = Path(shutil.copytree(tiny_model_dir, tmp_path / "ckpt"))
    one, two = _heldout(tmp_path / "one.jsonl"), _heldout(tmp_path / "two.jsonl")
    first = _score(ckpt, [one], tmp_path)
    assert first["files"] == [one] and first["accuracy"] >= 0
    _mark(tmp_path)
    assert _score(ckpt, [one], tmp_path)["accuracy"] == -1.0  # the same checkpoint and files: kept
    weights = load_file(ckpt / "model.safetensors")
    save_file({name: tensor.flip(0).contiguous() for name, tensor in weights.items()}, ckpt / "model.safetensors",
              metadata={"format": "pt"})  # another model written to the same path
    rescored = _score(ckpt, [one], tmp_path)
    assert rescored["accuracy"] >= 0 and rescored["model"] == str(ckpt)
    assert rescored["weights_sampled"] != first["weights_sampled"]
    _mark(tmp_path)
    assert _score(ckpt, [one, two], tmp_path)["accuracy"] >= 0  # another held-out set
    _mark(tmp_path, keep=("trajectories", "tokens", "correct", "files"))  # written before the rest was recorded
    assert _score(ckpt, [one, two], tmp_path)["accuracy"] == -1.0
    assert _score(ckpt, [two], tmp_path)["accuracy"] >= 0


def test_the_report_names_the_held_out_files_it_scored(tmp_path):
    report = {"model": "m", "benchmark": "custom", "task_file": "t.jsonl", "graders": [], "total": 0, "resolved": 0,
              "resolved_rate": 0.0, "ci95": [0, 0],
              "paper": None, "pending": 0, "ungraded": 0, "tool_calls": {"valid": 0, "turns": 0, "valid_rate": None},
              "teacher_forced": {"accuracy": 0.5, "tokens": 10, "trajectories": 2, "files": ["h/one.jsonl"]},
              "outcomes": {}, "per_repo": {}, "averages": {}, "prompts": [], "attempts": {"max": 1, "retried": 0},
              "leak_audit": []}
    assert "assistant tokens (2 trajectories in h/one.jsonl)" in markdown(report)


@pytest.mark.slow  # two runs of real attempts
def test_a_distill_rerun_after_new_weights_in_its_served_folder_is_refused(toy, tmp_path):
    """Distillation records its attempts through the same identity (`attempts.json`)."""
    from swehero.distill.run import Settings as DistillSettings, distill

    ckpt = _folder(tmp_path / "ckpt", b"a" * 8)
    settings = DistillSettings(tasks=str(toy), limit=1, progress=False, agent=AgentSettings(policy="gold"),
                               serve=ServeConfig(model=str(ckpt)))
    assert distill(settings, tmp_path / "D")["episodes"] == 1
    _folder(ckpt, b"b" * 16)
    with pytest.raises(InputError, match=re.escape(f"the weights in {ckpt} changed since these attempts were made")):
        distill(settings, tmp_path / "D")


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_teacher_forced_accuracy_equals_the_full_logits_argmax(tiny_model_dir, tmp_path, monkeypatch):
    """The output layer runs on a few positions at a time (all of 128k positions' logits would not fit beside a
    32B model): the predictions are those of the whole forward pass, counted over the trained tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    from data_samples import samples
    from swehero.data.render import ChatRenderer, load_tokenizer
    from swehero.data.trajectory import validate
    from swehero.eval import teacher_forced

    heldout = tmp_path / "h.jsonl"
    heldout.write_text("".join(json.dumps(s) + "\n" for s in samples()[:3]))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    renderer, tokens, correct = ChatRenderer(load_tokenizer(str(tiny_model_dir))), 0, 0
    for record in samples()[:3]:
        rendered = renderer.render(validate(record))
        ids = torch.tensor(rendered.input_ids[:4096])
        trained = torch.tensor(rendered.loss_mask[1:4096], dtype=torch.bool)
        with torch.inference_mode():
            predicted = model(ids[None]).logits[0, :-1].argmax(-1)
        tokens, correct = tokens + int(trained.sum()), correct + int((predicted == ids[1:])[trained].sum())
    chunked = teacher_forced._most_likely_next
    monkeypatch.setattr(teacher_forced, "_most_likely_next", lambda m, ids: chunked(m, ids, rows=37))
    score = teacher_forced.teacher_forced_accuracy(str(tiny_model_dir), [str(heldout)], max_tokens=4096)
    assert score["trajectories"] == 3 and (score["tokens"], score["correct"]) == (tokens, correct) and tokens > 100
