"""Best of N: a trained verifier scores every attempt of repeated runs and one attempt per instance is selected.

Each attempt with a patch is judged in one forward pass: the verifier (served by vLLM) reads the attempt as a
verifier example without its answer (`swehero.data.verifier`: the same judging message and truncation as in
training, sent as token ids so the prompt is token for token the training prefix), and vLLM returns the
log-probabilities of the two answer tokens for the next position (`logprob_token_ids`, whatever their rank). The
score is p(yes) / (p(yes) + p(no)): the verdict's probability with the mass on other tokens left out. Nothing is
graded again: the attempts' grades are in their runs' `grades.jsonl`.

Scores are committed one line per attempt to an append-only log (`verifier_scores.jsonl`), each under the
attempt's fingerprint (`Attempt.fingerprint`: its trajectory file and patch), so a rerun scores only the attempts
without one, whatever the order of the folders or the folder the log is in, and an attempt made again is scored
again; the log names the verifier that scored it (checkpoint, a fingerprint of its folder's config and weights,
`seq_length`, format), and scores of another are refused. The report (`select.json`, `select.md`, `select.png`)
follows the rules of `swehero.eval.best_of`.
"""

from __future__ import annotations

import contextlib
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from swehero.agent.policy import PolicyError
from swehero.errors import InputError, Unavailable
from swehero.recipe.stage import Range
from swehero.serve.server import ServeConfig

if TYPE_CHECKING:
    from swehero.agent.openai_policy import OpenAIConfig

SCORES = "verifier_scores.jsonl"
SCORE_RULE = "p(yes) / (p(yes) + p(no)) of the verifier's next token after the judging message"


@dataclass
class VerifierSettings:
    """Selecting one attempt per instance among the runs with a trained verifier (eval setting `verifier`, and
    `swehero eval select`)."""

    serve: ServeConfig = field(default_factory=ServeConfig)
    """The verifier checkpoint (a Hugging Face folder, e.g. a verifier `train` stage's `hf`) and how vLLM serves
    it; empty `model` and `endpoint`: no selection. `max_model_len` must hold `seq_length`."""
    endpoint: str = ""
    """A server already serving that checkpoint (`http://host:port/v1`); empty: one is started for the scoring.
    `serve.model` still names the checkpoint: its tokenizer renders the prompts and its folder names the scores."""
    seq_length: Annotated[int, Range(min=1)] = 32768
    """Tokens of a judged attempt: the verifier's training `seq_length` (the same truncation from the middle)."""
    workers: Annotated[int, Range(min=1)] = 8
    """Attempts scored concurrently."""

    @property
    def selects(self) -> bool:
        """A verifier is named, by its checkpoint or a server of it: an eval selects after its runs."""
        return bool(self.serve.model or self.endpoint)


def check_verifier(settings: VerifierSettings) -> None:
    """InputError for verifier settings no selection can use, which need no attempt to tell: an eval checks them
    before its runs, not after hours of them."""
    cfg = settings.serve
    if not cfg.model and settings.endpoint:
        raise InputError("verifier.endpoint needs verifier.serve.model too, the checkpoint it serves: its tokenizer "
                         "renders the prompts and its folder names the scores")
    if not cfg.model:
        raise InputError("selection needs the verifier checkpoint (verifier.serve.model / --verifier)")
    if settings.seq_length > cfg.max_model_len:
        raise InputError(f"verifier.seq_length {settings.seq_length} exceeds verifier.serve.max_model_len "
                         f"{cfg.max_model_len}: the server must hold a judged attempt")


def verifier_identity(settings: VerifierSettings) -> dict:
    """What the scores in a log depend on: the checkpoint (its resolved folder and a fingerprint of its config and
    weights, so another model written into the same folder is another verifier, and of the tokenizer and chat
    template an attempt is rendered with; a hub id as named), the truncation and the format."""
    from swehero.data.verifier import FORMAT
    from swehero.model.folder import folder_fingerprint, side_files_fingerprint

    model = Path(settings.serve.model)
    local = model.exists()
    return {"model": str(model.resolve()) if local else settings.serve.model,
            "weights_sampled": folder_fingerprint(model) if local else None,
            "tokenizer_and_template": side_files_fingerprint(model) if local else None,
            "seq_length": settings.seq_length, "format": FORMAT}


def select_best(folders: list[Path], settings: VerifierSettings, out_dir: Path, progress=print) -> dict[str, str]:
    """Score every attempt of the eval `folders` (their runs in order), select, and write the report to `out_dir`."""
    from swehero.data.render import load_tokenizer
    from swehero.data.verifier import VerifierFormat
    from swehero.eval.attempts import check_distinct_runs, read_attempts
    from swehero.eval.runs import eval_runs
    from swehero.jsonio import JsonlLog
    from swehero.rollout.runner import recorded_differences

    check_verifier(settings)
    out_dir = Path(out_dir)
    instance_ids, attempts = read_attempts([Path(f) for f in folders])
    ungraded = [a for per in attempts.values() for a in per if a.resolved is None]
    if ungraded:
        raise InputError(f"{len(ungraded)} attempt(s) are not graded yet, or their grading errored and is to be "
                         f"done again (e.g. {ungraded[0].trajectory}): run `swehero eval grade` first")
    fingerprints = {(a.run, a.instance_id): a.fingerprint() for per in attempts.values() for a in per}
    check_distinct_runs(attempts, fingerprints)
    verifier = verifier_identity(settings)
    log = JsonlLog(out_dir / SCORES, key=lambda r: r.get("attempt"))  # lines of older logs have none: scored again
    logged: dict = {}
    for number, line in log.numbered():
        if not isinstance(line, dict) or not isinstance(line.get("verifier"), dict):
            raise InputError(f"{log.path}:{number}: not a score of `eval select`'s (no `verifier` that made it): "
                             "mend or remove the line, or select into another folder (--out)")
        logged.setdefault(log.key(line), line)  # as `records` keeps them: the first of a key
    # a key one record lacks is no difference: logs of older versions recorded the weights' times (`weights`)
    other = next((found for r in logged.values() if (found := recorded_differences(r["verifier"], verifier))), None)
    if other:
        raise InputError(f"{log.path} holds scores of another verifier ({'; '.join(other)}): "
                         "select into another folder (--out), or remove the file")
    fmt = VerifierFormat(load_tokenizer(settings.serve.model), settings.seq_length)
    judged = [a for per in attempts.values() for a in per if a.patch.strip()]
    todo = [a for a in judged if fingerprints[a.run, a.instance_id] not in logged]
    progress(f"verifier: {len(judged) - len(todo)} attempt(s) scored before, {len(todo)} to score")
    if todo:
        with _endpoint(settings, out_dir) as client:
            scorer = _Scorer(client, fmt)

            def one(attempt) -> None:
                log.append({"attempt": fingerprints[attempt.run, attempt.instance_id],
                            "trajectory": str(attempt.trajectory), "instance_id": attempt.instance_id,
                            "verifier": verifier, **scorer.score(attempt.record(), attempt.patch)})

            _each(one, todo, settings.workers)
        logged = log.records()
    scores = {(a.run, a.instance_id): logged[fingerprints[a.run, a.instance_id]] for a in judged}
    sources = [{"folder": str(f), "model": saved["model"], "runs": saved.get("runs", 1)}
               for f, saved in ((f, eval_runs(f)[0]) for f in folders)]
    return write_selection(instance_ids, attempts, scores, verifier, sources, out_dir, progress)


def _each(score, attempts: list, workers: int) -> None:
    """`score(attempt)` for every attempt, `workers` at a time. The first failure is raised once the attempts under
    way end, and no attempt starts after it: against a dead server each would retry with backoff (half a minute
    each, hours for an eval's attempts)."""
    from tqdm import tqdm

    failed = threading.Event()

    def one(attempt) -> None:
        if failed.is_set():
            return
        try:
            score(attempt)
        except BaseException:
            failed.set()
            raise

    with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        futures = [pool.submit(one, a) for a in attempts]
        try:
            for future in tqdm(futures, desc="verifier", unit="attempt"):
                future.result()
        except BaseException:  # an interrupt too: the pool then waits only for the attempts under way
            failed.set()
            raise


@contextlib.contextmanager
def _endpoint(settings: VerifierSettings, log_dir: Path):
    """The verifier's client settings: its endpoint, or a server started here (with the key it requires)."""
    from swehero.agent.openai_policy import OpenAIConfig

    if settings.endpoint:
        yield OpenAIConfig(base_url=settings.endpoint)
        return
    from swehero.serve.server import VLLMServer

    with VLLMServer(settings.serve, Path(log_dir) / "verifier-vllm.log") as server:
        yield OpenAIConfig(base_url=server.url, **({"api_key_env": server.key_env} if server.key_env else {}))


class _Scorer:
    """One completion request per attempt: the prompt's token ids in, the two answers' log-probabilities out."""

    def __init__(self, client: OpenAIConfig, fmt) -> None:
        from swehero.agent.openai_policy import OpenAIPolicy

        try:  # it asks the server which model it serves: one that does not answer is this machine's problem
            self.client = OpenAIPolicy(client)
        except PolicyError as e:
            raise Unavailable(f"the verifier's server does not answer: {e}") from None
        self.fmt = fmt

    def score(self, record: dict, patch: str) -> dict:
        from swehero.data.trajectory import validate

        try:
            record = validate(record)
            judged = self.fmt.judge(record["messages"], record["tools"], patch)
        except ValueError as e:  # a Reject (no conversation), or no task message: nothing to judge
            return {"score": None, "unscored": str(e)}
        if judged is None:
            return {"score": None, "unscored": f"longer than {self.fmt.seq_length} tokens even truncated"}
        prompt = self.fmt.prompt_ids(judged, record["tools"])
        yes, no = self.fmt.answer_ids[True], self.fmt.answer_ids[False]
        where = f"the verifier at {self.client.config.base_url}"
        try:
            reply = self.client.request("/completions", {
                "model": self.client.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0, "logprobs": 1,
                "logprob_token_ids": [yes, no], "return_tokens_as_token_ids": True})
        except PolicyError as e:  # after its retries: a server down, or one that refuses the request
            raise Unavailable(f"{where}: {e}") from None
        try:
            top = reply["choices"][0]["logprobs"]["top_logprobs"][0]
            lp_yes, lp_no = top[f"token_id:{yes}"], top[f"token_id:{no}"]
        except (KeyError, IndexError, TypeError):
            raise Unavailable(f"{where} answered without the log-probabilities of both answers: it must be a vLLM "
                              f"server that takes `logprob_token_ids`; it sent {str(reply)[:300]}") from None
        return {"score": yes_probability(lp_yes, lp_no), "logprob_yes": lp_yes, "logprob_no": lp_no,
                "prompt_tokens": len(prompt), "omitted_messages": judged.omitted_messages,
                "omitted_patch_lines": judged.omitted_patch_lines}


def yes_probability(lp_yes: float, lp_no: float) -> float:
    """p(yes) / (p(yes) + p(no)) from the two log-probabilities, the logistic of their difference computed without
    overflow: vLLM reports an impossible token's log-probability as -9999.0, far past `math.exp`'s range."""
    if lp_yes >= lp_no:
        return 1.0 / (1.0 + math.exp(lp_no - lp_yes))
    odds = math.exp(lp_yes - lp_no)
    return odds / (1.0 + odds)


def write_selection(instance_ids: list[str], attempts: dict, scores: dict, verifier: dict, folders: list[dict],
                    out_dir: Path, progress=print) -> dict[str, str]:
    """`select.json`, `select.md` and `select.png` from the attempts and their scores (by run and instance) of the
    eval `folders` ({folder, model, runs}, in the order their runs were read); returns the paths."""
    from swehero.eval.best_of import majority_choice, patch_groups, ranking, summarise
    from swehero.eval.selection_report import chart, markdown
    from swehero.jsonio import atomic_path, write_json_atomic, write_text_atomic

    runs = len(next(iter(attempts.values())))
    instances = []
    for iid in instance_ids:
        per = attempts[iid]
        entry = {"instance_id": iid, "patches": [a.patch for a in per], "resolved": [bool(a.resolved) for a in per],
                 "graded": [not a.infra_failure for a in per],
                 "scores": [(scores.get((a.run, iid)) or {}).get("score") for a in per]}
        entry["selected_run"] = ranking(entry["scores"], entry["patches"])[0]
        entry["majority_run"] = majority_choice(list(range(runs)), patch_groups(entry["patches"]))
        instances.append(entry)
    summary = summarise(instances, runs)
    unscored = [{"run": run, "instance_id": iid, "why": s["unscored"]} for (run, iid), s in scores.items()
                if s["score"] is None]
    # counted unresolved, as the runs' reports count them (outcome infra_error), and named beside the figures
    grader_failures = [{"run": a.run, "instance_id": a.instance_id} for iid in instance_ids for a in attempts[iid]
                       if a.infra_failure]
    report = {"verifier": {**verifier, "score": SCORE_RULE}, "folders": folders, "runs": runs,
              "instances": len(instances), **summary,
              # best@N in instances: a count of the `selected_run`s would depend on the order of the runs where
              # scores tie (a verifier scoring all alike: run 0's count)
              "selected_resolved": round(summary["best_at_k"][str(runs)] * len(instances), 2),
              "oracle_resolved": sum(any(i["resolved"]) for i in instances),
              "unscored": unscored, "grader_failures": grader_failures,
              "per_instance": [{k: v for k, v in i.items() if k != "patches"} for i in instances]}
    paths = {"select": out_dir / "select.json", "select_md": out_dir / "select.md", "select_chart": out_dir / "select.png"}
    # each file whole: a reader may open them while a selection rewrites them
    write_json_atomic(paths["select"], report, indent=1)
    write_text_atomic(paths["select_md"], markdown(report))
    with atomic_path(paths["select_chart"]) as tmp:
        chart(report, tmp)
    progress(f"best@{runs} {100 * report['best_at_k'][str(runs)]:.1f}% (majority patch "
             f"{100 * report['majority_at_k'][str(runs)]:.1f}%, pass@{runs} {100 * report['pass_at_k'][str(runs)]:.1f}%, "
             f"mean {100 * report['mean']:.1f}%); report: {paths['select_md']}")
    return {name: str(path) for name, path in paths.items()}
