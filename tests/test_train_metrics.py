"""What a training run logs: one record per log interval, and TensorBoard and Weights & Biases after a resume."""

import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from swehero.train.metrics import LogInterval, MetricsLogger, read_metrics


def test_a_log_record_reports_its_whole_interval():
    interval = LogInterval()
    # Three steps of a log_every=3 run: the last step's loss alone (6.0) is not the interval's.
    steps = [({"loss": 9.0, "grad_norm": 3.0, "lr": 1e-3, "tokens_per_s": 100.0, "mfu": 0.1}, 1.0),
             ({"loss": 7.5, "grad_norm": 2.0, "lr": 2e-3, "tokens_per_s": 400.0, "mfu": 0.4}, 3.0),
             ({"loss": 6.0, "grad_norm": 5.0, "lr": 3e-3, "tokens_per_s": 200.0, "mfu": 0.2}, 1.0)]
    for metrics, seconds in steps:
        interval.add(metrics, seconds)
    record = interval.pop()
    assert record["loss"] == pytest.approx(7.5)  # every step counts once, as in Megatron-LM
    # 100 + 1200 + 200 tokens in 5 s, not the mean of the three rates (233.3)
    assert record["tokens_per_s"] == pytest.approx(300.0) and record["mfu"] == pytest.approx(0.3)
    assert record["grad_norm"] == 5.0 and record["lr"] == 3e-3  # the last step's, as Megatron-LM logs them

    interval.add({"loss": 4.0, "grad_norm": 1.0, "lr": 1e-3, "tokens_per_s": 50.0}, 2.0)
    assert interval.pop() == {"loss": 4.0, "grad_norm": 1.0, "lr": 1e-3, "tokens_per_s": 50.0}


def log_run(folder, start_step: int, losses: dict[int, float], valid: dict[int, float], wandb_project: str = "") -> None:
    logger = MetricsLogger(folder, 6, start_step, tensorboard=True, wandb_project=wandb_project, run_name="run",
                           config={})
    for step, loss in losses.items():
        logger.log(step, {"loss": loss, "lr": 1e-3})
        if step in valid:
            logger.log(step, {"valid_loss": valid[step]})
        logger.advance()
    logger.close()


def scalars(folder, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(folder / "tensorboard"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_tensorboard_after_a_resume_holds_each_step_once(tmp_path):
    # Killed after step 4 with the checkpoint of step 2: the rerun logs steps 3-6 again.
    log_run(tmp_path, 0, {1: 9.0, 2: 8.0, 3: 7.0, 4: 6.0}, valid={2: 7.5})
    log_run(tmp_path, 2, {3: 7.25, 4: 6.25, 5: 5.0, 6: 4.0}, valid={})
    assert scalars(tmp_path, "loss") == [(1, 9.0), (2, 8.0), (3, 7.25), (4, 6.25), (5, 5.0), (6, 4.0)]
    assert scalars(tmp_path, "valid_loss") == [(2, 7.5)]  # the checkpoint's step itself is not trained again


@pytest.mark.slow
def test_a_resumed_training_logs_to_the_same_wandb_run_and_a_new_one_to_another(tmp_path, monkeypatch):
    """A requeued job started a new Weights & Biases run at each resume (`resume="allow"` without an id), and wrote
    wandb's files wherever the command was started. Offline mode: wandb itself, without a server."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)
    stage = tmp_path / "sft"
    stage.mkdir()

    def runs() -> list[str]:  # the run id of each offline run, oldest first (wandb names them by start time)
        return [p.name.rsplit("-", 1)[1] for p in sorted((stage / "wandb").glob("offline-run-*"))]

    log_run(stage, 0, {1: 9.0, 2: 8.0, 3: 7.0}, valid={}, wandb_project="p")
    log_run(stage, 2, {3: 7.25, 4: 6.25}, valid={}, wandb_project="p")  # resumed from the checkpoint of step 2
    first, resumed = runs()
    assert resumed == first
    time.sleep(1.1)  # the next run's folder sorts after (wandb's names have whole seconds)
    log_run(stage, 0, {1: 9.5}, valid={}, wandb_project="p")  # trained again from the start: another run
    assert runs()[:2] == [first, first] and runs()[2] != first
    assert not (tmp_path / "wandb").exists()


def test_a_torn_last_record_is_cut_when_the_run_resumes(tmp_path):
    """A run killed mid-write left `{"step": 2, "loss": 7.05`; the resumed run appended to it, and reading the
    metrics at every later run's end failed (JSONDecodeError), so the stage could never complete."""
    log_run(tmp_path, 0, {1: 9.0, 2: 8.0}, {})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 7.05')
    log_run(tmp_path, 2, {3: 7.0, 4: 6.0}, {})
    assert [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [9.0, 8.0, 7.0, 6.0]
    assert (tmp_path / "loss.png").exists()
