"""Selection among repeated runs with a real verifier: the tiny model kit, served by vLLM on CPU, scores real oracle
attempts (gold and decoy fixes of the held-out toy tasks, graded by the local grader). Its scores and the choice
they imply are checked against an independent forward pass with transformers."""

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from swehero.agent.settings import AgentSettings
from swehero.data.trajectory import template_messages
from swehero.data.verifier import VerifierFormat
from swehero.eval.pipeline import Settings, evaluate
from swehero.eval.select import SCORES, VerifierSettings, select_best
from swehero.rollout.toy import HELDOUT, HELDOUT_DECOYS, build_decoy_tasks, build_toy_tasks
from swehero.serve.server import ServeConfig, VLLMServer

pytestmark = pytest.mark.slow  # a real vLLM server

SEQ = 7680  # the held-out attempts render to ~9k tokens with the tiny 2k-word tokenizer: the middle is cut
AGREE = 1e-5
"""How closely vLLM's scores must equal the transformers forward pass's. Where two attempts' scores differ by more
than twice this, both implementations order them alike, whatever their rounding."""


def _oracle(tasks: Path, repos: Path, **kw) -> Settings:
    settings = Settings(tasks=str(tasks), agent=AgentSettings(policy="oracle"), repos=str(repos), workers=3, **kw)
    settings.grading.grader = "local"
    return settings


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("select")
    build_toy_tasks(root / "toy")
    build_decoy_tasks(root / "toy", root / "decoys")
    return root


@pytest.fixture(scope="module")
def attempts(toy) -> tuple[Path, Path]:
    """Two one-run evals of the held-out tasks: the oracle replaying decoy fixes, then gold ones."""
    folders = []
    for name, tasks in (("decoy", toy / "decoys" / HELDOUT_DECOYS), ("gold", toy / "toy" / HELDOUT)):
        evaluate(_oracle(tasks, toy / "toy" / "repos"), toy / name, progress=lambda _: None)
        folders.append(toy / name)
    return tuple(folders)


@pytest.fixture(scope="module")
def verifier(tiny_model_dir, tmp_path_factory):
    serve = ServeConfig(model=str(tiny_model_dir), max_model_len=SEQ, dtype="float32", compile=False)
    with VLLMServer(serve, tmp_path_factory.mktemp("vllm") / "vllm.log") as server:
        yield VerifierSettings(serve=serve, endpoint=server.url, seq_length=SEQ, workers=2)


def _transformers_scores(model_dir: Path, folders: tuple[Path, ...]) -> dict[tuple[int, str], tuple[float, int]]:
    """(run, instance) -> (p(yes) / (p(yes) + p(no)), prompt tokens), from `apply_chat_template` and a transformers
    forward pass: no vLLM, no swehero rendering."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    yes, no = (tok.encode(w, add_special_tokens=False)[0] for w in ("yes", "no"))
    fmt = VerifierFormat(tok, SEQ)  # only for the truncated messages (the rule is tested in test_verifier_data)
    out = {}
    for run, folder in enumerate(folders):
        for path in sorted((folder / "trajectories").glob("*.json")):
            record = json.loads(path.read_text())
            judged = fmt.judge(record["messages"], record["tools"], record["patch"])
            ids = tok.apply_chat_template(template_messages(judged.messages), tools=record["tools"],
                                          add_generation_prompt=True, tokenize=True)["input_ids"]
            with torch.inference_mode():
                logprobs = model(torch.tensor([ids])).logits[0, -1].log_softmax(-1)
            out[run, record["instance_id"]] = (1 / (1 + math.exp(logprobs[no] - logprobs[yes])), len(ids))
    return out


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_selection_follows_the_verifiers_scores_checked_with_transformers(attempts, verifier, tiny_model_dir,
                                                                           tmp_path):
    outputs = select_best(list(attempts), verifier, tmp_path, progress=lambda _: None)
    report = json.loads(Path(outputs["select"]).read_text())
    logged = _logged(tmp_path, attempts)
    expected = _transformers_scores(tiny_model_dir, attempts)
    assert set(logged) == set(expected) and len(expected) == 6
    errors = {key: abs(logged[key]["score"] - score) for key, (score, _) in expected.items()}
    assert max(errors.values()) <= AGREE, errors
    for key, (score, prompt_tokens) in expected.items():
        assert logged[key]["prompt_tokens"] == prompt_tokens <= SEQ and logged[key]["omitted_messages"] > 0
    decided = []
    for inst in report["per_instance"]:
        iid = inst["instance_id"]
        (s0, _), (s1, _) = expected[0, iid], expected[1, iid]
        assert inst["resolved"] == [False, True]  # the decoy run, then the gold run
        if abs(s0 - s1) > 2 * AGREE:
            decided.append(iid)
            assert inst["selected_run"] == (0 if s0 > s1 else 1)
    # the untrained kit scores a task's two attempts ~1e-4 apart: far beyond the implementations' difference
    assert len(decided) == 3, {key: score for key, (score, _) in expected.items()}
    chosen = [inst["resolved"][inst["selected_run"]] if inst["scores"][0] != inst["scores"][1] else 0.5
              for inst in report["per_instance"]]  # tied scores select either attempt, half each
    assert report["best_at_k"]["2"] == pytest.approx(sum(chosen) / 3, abs=1e-4)
    assert report["best_at_k"]["1"] == report["mean"] == 0.5 and report["pass_at_k"] == {"1": 0.5, "2": 1.0}
    assert report["majority_at_k"]["2"] == 0.5  # two different patches tie: the decoy or the fix, half each
    assert all(report["best_at_k"][k] <= report["pass_at_k"][k] for k in report["pass_at_k"])
    assert (tmp_path / "select.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "best@2" in (tmp_path / "select.md").read_text()

    # a rerun scores nothing again (it would need the dead endpoint), and a different verifier is refused
    dead = VerifierSettings(serve=verifier.serve, endpoint="http://127.0.0.1:9/v1", seq_length=SEQ)
    again = select_best(list(attempts), dead, tmp_path, progress=lambda _: None)
    assert json.loads(Path(again["select"]).read_text()) == report
    other = VerifierSettings(serve=verifier.serve, endpoint="http://127.0.0.1:9/v1", seq_length=SEQ - 8)
    with pytest.raises(ValueError, match="another verifier"):
        select_best(list(attempts), other, tmp_path, progress=lambda _: None)


def _select(folders: list[Path], settings: VerifierSettings, out: Path) -> dict:
    return json.loads(Path(select_best(folders, settings, out, progress=lambda _: None)["select"]).read_text())


def _logged(out: Path, folders: tuple[Path, ...]) -> dict[tuple[int, str], dict]:
    """The scores logged in `out`, by (run, instance) of the attempt each line names."""
    runs = {str(folder): run for run, folder in enumerate(folders)}
    lines = [r for r in map(json.loads, (out / SCORES).open()) if str(Path(r["trajectory"]).parents[1]) in runs]
    return {(runs[str(Path(r["trajectory"]).parents[1])], r["instance_id"]): r for r in lines}


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_scores_follow_their_attempts_whatever_the_order_or_folder(attempts, verifier, tmp_path):
    """A score belongs to the attempt it judged: folders given in another order, or another set of folders, into
    the same --out reuse the scores of the attempts they share and score the others."""
    decoy, gold = attempts
    report = _select([decoy, gold], verifier, tmp_path)
    dead = VerifierSettings(serve=verifier.serve, endpoint="http://127.0.0.1:9/v1", seq_length=SEQ)
    swapped = _select([gold, decoy], dead, tmp_path)  # scores nothing: the dead endpoint is never asked
    swapped_instances = {inst["instance_id"]: inst for inst in swapped["per_instance"]}
    for before in report["per_instance"]:
        after = swapped_instances[before["instance_id"]]
        assert after["resolved"] == before["resolved"][::-1] == [True, False]
        assert after["scores"] == before["scores"][::-1]
    assert swapped["best_at_k"] == report["best_at_k"]

    redone = tmp_path / "gold-redone"  # the gold run again, one attempt of it made anew (another patch)
    shutil.copytree(gold, redone)
    iid = report["per_instance"][0]["instance_id"]
    trajectory = redone / "trajectories" / f"{iid}.json"
    record = json.loads(trajectory.read_text())
    record["patch"] += "+# made again\n"
    trajectory.write_text(json.dumps(record))
    predictions = [json.loads(line) for line in (redone / "predictions.jsonl").open()]
    (redone / "predictions.jsonl").write_text("".join(
        json.dumps({**p, "model_patch": record["patch"]} if p["instance_id"] == iid else p) + "\n" for p in predictions))
    _select([decoy, redone], verifier, tmp_path)
    again = _logged(tmp_path, (decoy, redone))
    # only the attempt made anew was scored: the copy's other attempts are the same attempts, their scores reused
    assert [key for key in again if key[0] == 1] == [(1, iid)]
    assert again[1, iid]["score"] is not None


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_eval_with_a_verifier_setting_reports_best_of_its_runs(toy, verifier, tmp_path):
    settings = _oracle(toy / "toy" / HELDOUT, toy / "toy" / "repos", runs=2, verifier=verifier)
    outputs = evaluate(settings, tmp_path / "eval", progress=lambda _: None)
    report = json.loads(Path(outputs["select"]).read_text())
    assert report["runs"] == 2 and report["verifier_quality"]["scored"] == 6
    assert report["best_at_k"] == report["pass_at_k"] == {"1": 1.0, "2": 1.0}  # the oracle resolves every task
    assert outputs["select_md"] == str(tmp_path / "eval" / "select.md")


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_verifier_written_again_into_its_folder_does_not_reuse_the_old_scores(attempts, verifier, tmp_path):
    """The folder of the verifier is the same, its weights are not: the scores of the one before are refused."""
    from swehero.tiny.kit import TinyModelConfig, make_tiny

    folder = Path(shutil.copytree(verifier.serve.model, tmp_path / "verifier"))
    scored = VerifierSettings(serve=replace(verifier.serve, model=str(folder)), endpoint=verifier.endpoint,
                              seq_length=SEQ, workers=2)
    _select(list(attempts), scored, tmp_path / "out")
    shutil.rmtree(folder)
    make_tiny(folder, TinyModelConfig(), seed=1)  # retrained into the same folder
    dead = replace(scored, endpoint="http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match=r"holds scores of another verifier \(weights_sampled: '\w+' -> '\w+'\)"):
        _select(list(attempts), dead, tmp_path / "out")

