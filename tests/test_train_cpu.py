"""Real Megatron-Core training on CPU processes (gloo + the CPU backend) of the tiny model on packed data."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_jobs import hf_weights, losses, settings, start, start_stage, train, trajectory  # noqa: E402

from swehero.data.prepare import PrepareConfig, prepare  # noqa: E402
from swehero.train.config import CheckpointConfig, OptimizerConfig, ParallelConfig, Settings  # noqa: E402
from swehero.train.metrics import read_metrics  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tiny_model_dir) -> Path:
    folder = tmp_path_factory.mktemp("train-data")
    (folder / "trajectories.jsonl").write_text("".join(json.dumps(trajectory(i)) + "\n" for i in range(160)))
    prepare([str(folder / "trajectories.jsonl")], str(tiny_model_dir), folder / "dataset",
            PrepareConfig(seq_length=512, valid_fraction=0.1, workers=0, seed=0))
    return folder / "dataset"


# One rank, 6 steps, a checkpoint every 2 (steps 4 and 6 kept), exported: the run the resume, stop, data-parallel and
# stage-two tests compare with or start from. Shared, since each training run costs seconds of imports per rank.
REFERENCE = {"steps": 6, "checkpoint": CheckpointConfig(every=2, keep_last=2, async_save=False)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, dataset, tiny_model_dir) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("reference") / "run"
    return folder, train(folder, settings(dataset, **REFERENCE), tiny_model_dir)


def test_an_empty_validation_split_trains_without_validation(tmp_path, tiny_model_dir):
    (tmp_path / "trajectories.jsonl").write_text("".join(json.dumps(trajectory(i)) + "\n" for i in range(8)))
    stats = prepare([str(tmp_path / "trajectories.jsonl")], str(tiny_model_dir), tmp_path / "dataset",
                    PrepareConfig(seq_length=512, valid_fraction=0.0, workers=0, seed=0))
    assert stats["samples"]["valid"] == 0
    records = train(tmp_path / "run", settings(tmp_path / "dataset", global_batch_size=2, steps=2), tiny_model_dir)
    assert len(losses(records)) == 2 and not any("valid_loss" in r for r in records)


def test_tp2_pp2_trains_and_loss_falls(tmp_path, dataset, tiny_model_dir):
    s = settings(dataset, steps=24, gpus_per_node=4, parallel=ParallelConfig(tensor=2, pipeline=2))
    records = train(tmp_path / "tp2pp2", s, tiny_model_dir)
    curve = losses(records)
    assert len(curve) == 24
    assert sum(curve[-4:]) / 4 < 0.7 * sum(curve[:4]) / 4, curve
    assert records[-1]["valid_loss"] < curve[0]
    assert (tmp_path / "tp2pp2" / "loss.png").exists() and (tmp_path / "tp2pp2" / "checkpoints" / "step-24").is_dir()


def test_data_parallel_equals_accumulation_and_resume_reproduces(tmp_path, dataset, tiny_model_dir, reference):
    s = settings(dataset, **REFERENCE)
    one_dir, one = reference
    two = train(tmp_path / "dp2", dataclasses.replace(s, gpus_per_node=2), tiny_model_dir)
    # The same global batch: 4 micro-batches on one rank vs 2 on each of two ranks.
    for a, b in zip(one, two):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    assert [c.name for c in sorted((one_dir / "checkpoints").iterdir())] == ["step-4", "step-6"]

    # Kill -9 after step 3 is logged (checkpoint at step 2), then rerun: it resumes and the curve is the same.
    folder = tmp_path / "killed"
    proc = start(folder, s, tiny_model_dir)
    deadline = time.monotonic() + 300
    while not (folder / "metrics.jsonl").exists() or len(read_metrics(folder / "metrics.jsonl")) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, (folder / "log.txt").read_text()[-3000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher; its workers die with it (launch.die_with_parent)
    proc.wait()
    time.sleep(2)
    # Nothing of the killed run lives on: not its ranks, nor what they spawned (the async checkpoint writer).
    assert not holders_of(folder / "log.txt")
    logged = len((folder / "metrics.jsonl").read_text().splitlines())
    assert not (folder / "checkpoints" / "step-6").exists()
    resumed = train(folder, s, tiny_model_dir)
    steps = [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) > logged and steps[logged] <= steps[logged - 1]  # the rerun went back to its checkpoint
    assert losses(resumed) == pytest.approx(losses(one), rel=1e-6)


def test_a_stopped_stage_saves_the_step_it_reached_and_its_rerun_resumes_from_it(tmp_path, dataset, tiny_model_dir,
                                                                                 reference):
    # No checkpoint before the last step: whatever the rerun does not train again, the stop saved.
    s = settings(dataset, steps=6, export_hf=False)
    whole = reference[1]
    folder = tmp_path / "stopped"
    stage = start_stage(folder, dataset, tiny_model_dir, steps=6, export_hf=False)
    deadline = time.monotonic() + 300
    while not (folder / "metrics.jsonl").exists() or len(read_metrics(folder / "metrics.jsonl")) < 2:
        assert stage.poll() is None and time.monotonic() < deadline, (folder / "log.txt").read_text()[-3000:]
        time.sleep(0.2)
    stage.send_signal(signal.SIGTERM)  # as `kill` or a scheduler stops `recipe run`
    assert stage.wait(timeout=120) == 128 + signal.SIGTERM, (folder / "log.txt").read_text()[-3000:]
    reached = read_metrics(folder / "metrics.jsonl")[-1]["step"]
    assert 2 <= reached < 6
    assert [c.name for c in (folder / "checkpoints").iterdir()] == [f"step-{reached}"]
    assert not (folder / "finished.json").exists()
    log = (folder / "log.txt").read_text()
    assert f"stopped by SIGUSR1 after step {reached} of 6: saved {folder}/checkpoints/step-{reached}; run the stage " \
           "again to resume from it" in log, log[-3000:]

    resumed = train(folder, s, tiny_model_dir)
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3, 4, 5, 6]  # the rerun trained no step again
    assert losses(resumed) == pytest.approx(losses(whole), rel=1e-6)


def test_a_job_on_a_finished_stage_whose_export_fails_leaves_no_claim_of_it(tmp_path, dataset, tiny_model_dir,
                                                                            reference):
    """A Slurm job run on a stage whose workers had finished (chained with --dependency, resubmitted) loads the last
    checkpoint and exports again; that export failing (here a folder stands where its config goes) left the earlier
    finished.json, which said the export was whole, and `recipe run` completed the stage from a broken `hf/`."""
    from swehero.train.stage import workers_finished

    folder = tmp_path / "stage"
    shutil.copytree(reference[0], folder)
    assert workers_finished(folder, True, export_hf=True)
    shutil.rmtree(folder / "hf")
    (folder / "hf" / "config.json").mkdir(parents=True)
    job = start(folder, settings(dataset, **REFERENCE), tiny_model_dir)  # the workers alone, as a job starts them
    assert job.wait(timeout=600) != 0
    assert "IsADirectoryError" in (folder / "log.txt").read_text()
    assert not workers_finished(folder, True, export_hf=True) and not (folder / "finished.json").exists()


def test_the_logged_lr_is_the_one_each_step_trained_with(reference):
    """It was read after the scheduler's step: the next step's, so step 1 showed a decayed lr it never trained at and
    the last step min_lr, which no step used."""
    records = [r for r in reference[1] if "loss" in r]
    # 10% warmup of 6 steps is none: step 1 trains at the peak, 2e-3; the cosine reaches min_lr (2e-4) after step 6
    assert records[0]["lr"] == pytest.approx(2e-3) and records[-1]["lr"] > 2.1e-4
    assert all(a["lr"] > b["lr"] for a, b in zip(records, records[1:]))


def test_a_trained_stage_whose_export_is_turned_on_exports_its_last_checkpoint_and_trains_nothing(
        tmp_path, dataset, tiny_model_dir, reference):
    """Turning `export_hf` on for a stage trained without it emptied its folder and trained it again from scratch
    (days, at the paper's scale): it resumes at its last step now, and exports."""
    from swehero.train.stage import workers_finished

    folder = tmp_path / "stage"
    assert start_stage(folder, dataset, tiny_model_dir, steps=6, export_hf=False).wait(timeout=600) == 0, \
        (folder / "log.txt").read_text()[-3000:]
    assert not (folder / "hf").exists() and workers_finished(folder, True, export_hf=False)
    assert not workers_finished(folder, True, export_hf=True)
    trained = (folder / "metrics.jsonl").read_text()
    assert start_stage(folder, dataset, tiny_model_dir, steps=6, export_hf=True).wait(timeout=600) == 0, \
        (folder / "log.txt").read_text()[-3000:]
    assert (folder / "metrics.jsonl").read_text() == trained  # no step trained again
    assert workers_finished(folder, True, export_hf=True)
    exported, whole = hf_weights(folder / "hf"), hf_weights(reference[0] / "hf")
    assert exported.keys() == whole.keys()
    for name, tensor in whole.items():
        torch.testing.assert_close(exported[name], tensor, rtol=1e-5, atol=1e-6)


def test_every_worker_starts_with_what_megatron_needs_in_its_environment(tmp_path):
    from swehero.train.launch import torchrun_command

    # The worker module swapped for one that reports its environment; torchrun is started as both launchers start it.
    (tmp_path / "report.py").write_text(
        "import os, sys\nopen(sys.argv[1], 'w').write(os.environ.get('CUDA_DEVICE_MAX_CONNECTIONS', ''))\n")
    command = torchrun_command(tmp_path / "seen", 1)
    command[command.index("swehero.train.worker") - 1:-1] = [str(tmp_path / "report.py")]
    subprocess.run(command, check=True, timeout=120, capture_output=True)
    assert (tmp_path / "seen").read_text() == "1"  # Megatron overlaps tensor-parallel communication only with 1


def holders_of(path: Path) -> list[int]:
    """The processes that hold `path` open (Linux: their /proc/PID/fd links)."""
    pids = []
    for fds in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) == str(path) for fd in fds.iterdir()):
                pids.append(int(fds.parent.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


def test_stage_two_starts_from_stage_one_and_export_matches(tmp_path, dataset, reference):
    from transformers import AutoModelForCausalLM

    from swehero.train.data import PackedSequences

    zero_dir, zero = reference
    hero = train(tmp_path / "hero", settings(dataset, steps=2), zero_dir)
    # Stage 2 begins where stage 1 ended (its first loss is far below stage 1's), with a fresh schedule.
    assert hero[0]["loss"] < 0.8 * zero[0]["loss"]
    assert hero[0]["lr"] > 2 * zero[-1]["lr"]

    # The exported Hugging Face model gives the validation loss Megatron measured.
    model = AutoModelForCausalLM.from_pretrained(zero_dir / "hf", torch_dtype=torch.float32)
    valid = PackedSequences(dataset, "valid")
    total = tokens = 0.0
    with torch.no_grad():
        for i in range(len(valid)):
            batch = valid[i]
            # Megatron attends within each packed document: run HF on each document alone.
            bounds = [sum(batch.doc_lengths[:i]) for i in range(len(batch.doc_lengths) + 1)]
            for start_, end in zip(bounds[:-1], bounds[1:]):
                doc = batch.tokens[:, start_:end]
                doc_logits = model(input_ids=doc).logits.float()[0]
                ce = torch.nn.functional.cross_entropy(doc_logits, batch.labels[0, start_:end], reduction="none")
                mask = batch.loss_mask[0, start_:end]
                total += float((ce * mask).sum())
                tokens += float(mask.sum())
    assert total / tokens == pytest.approx(zero[-1]["valid_loss"], rel=1e-4)


def test_fused_cross_entropy_matches_the_unfused_loss_under_tp2(tmp_path, dataset, tiny_model_dir):
    s = settings(dataset, steps=3, gpus_per_node=2, parallel=ParallelConfig(tensor=2))
    unfused = train(tmp_path / "unfused", s, tiny_model_dir)
    fused = train(tmp_path / "fused", dataclasses.replace(s, fused_ce=True), tiny_model_dir)
    for a, b in zip(unfused, fused):
        for key in ("loss", "grad_norm", "valid_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5), key


def test_virtual_pipeline_matches_one_stage_and_resumes(tmp_path, dataset, four_layer_model_dir):
    plain = settings(dataset, steps=4)
    interleaved = dataclasses.replace(plain, gpus_per_node=2, parallel=ParallelConfig(pipeline=2, virtual_pipeline=2),
                                      checkpoint=CheckpointConfig(every=2, keep_last=2, async_save=False))
    one = train(tmp_path / "pp1", plain, four_layer_model_dir)
    vpp = train(tmp_path / "vpp", interleaved, four_layer_model_dir)
    # Same weights, data and math; only the schedule differs (4 chunks over 2 ranks, 4 micro-batches). What the
    # schedule must preserve is the function and its gradient: the losses, gradient norms and validation loss of
    # every step here, each parameter's gradient in test_train_gradients. Not the weights after AdamW: it moves
    # each weight by about the learning rate whatever the size of its gradient, so a weight whose gradient is
    # small against its rounding noise moves as the noise, i.e. the reduction order, decides. The key biases' are
    # such (1e-4 of the whole gradient, mostly cancellation: softmax would ignore them but for RoPE), and after 4
    # steps they differed between layouts by more than any tolerance that means something for the other weights.
    assert vpp[0]["loss"] == pytest.approx(one[0]["loss"], rel=1e-6)
    for a, b in zip(one, vpp):
        for key in ("loss", "grad_norm", "valid_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5), (key, a, b)
    assert losses(vpp)[-1] < losses(vpp)[0]

    # Resume from the VPP checkpoint of step 2: steps 3-4 and the exported weights come out the same.
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "vpp" / "checkpoints" / "step-2", resumed / "checkpoints" / "step-2")
    again = train(resumed, interleaved, four_layer_model_dir)
    assert [r["step"] for r in again] == [3, 4]
    assert losses(again) == pytest.approx(losses(vpp)[2:], rel=1e-6)
    exported, reexported = (hf_weights(folder / "hf") for folder in (tmp_path / "vpp", resumed))
    assert exported.keys() == reexported.keys() and len(exported) == len(hf_weights(four_layer_model_dir))
    for name, tensor in exported.items():
        assert torch.equal(tensor, reexported[name]), name  # the same layout and order of operations: bit for bit

    # Stage 2 across layouts: the VPP run's checkpoint into one stage, the one-stage run's into VPP chunks.
    one_step = {"steps": 1, "export_hf": False}
    from_vpp = train(tmp_path / "from-vpp", dataclasses.replace(plain, **one_step), tmp_path / "vpp")
    from_one = train(tmp_path / "from-one", dataclasses.replace(interleaved, **one_step), tmp_path / "pp1")
    assert from_vpp[0]["loss"] == pytest.approx(from_one[0]["loss"], rel=1e-5)
    assert from_vpp[0]["loss"] < 0.9 * one[0]["loss"]


def test_resume_without_the_distributed_optimizer(tmp_path, dataset, tiny_model_dir):
    s = settings(dataset, steps=4, distributed_optimizer=False, export_hf=False,
                 checkpoint=CheckpointConfig(every=2, keep_last=2, async_save=False))
    _resumes_at_step_2_as_it_went_on(tmp_path, s, tiny_model_dir)


def _resumes_at_step_2_as_it_went_on(tmp_path: Path, s: Settings, init: Path) -> None:
    """A 4-step run, and a run started from its step-2 checkpoint alone: steps 3-4 come out the same."""
    whole = train(tmp_path / "whole", s, init)
    shutil.copytree(tmp_path / "whole" / "checkpoints" / "step-2", tmp_path / "resumed" / "checkpoints" / "step-2")
    resumed = train(tmp_path / "resumed", s, init)
    assert [r["step"] for r in resumed if "loss" in r] == [3, 4]
    assert losses(resumed) == pytest.approx(losses(whole)[2:], rel=1e-6)


def test_a_resume_with_another_schedule_stops_naming_the_setting(tmp_path, dataset, tiny_model_dir, reference):
    # Megatron's scheduler would otherwise carry on with the checkpoint's 6-step schedule, or stop on a bare assert.
    shutil.copytree(reference[0] / "checkpoints" / "step-4", tmp_path / "longer" / "checkpoints" / "step-4")
    longer = settings(dataset, export_hf=False, **{**REFERENCE, "steps": 8})
    assert start(tmp_path / "longer", longer, tiny_model_dir).wait() != 0
    log = (tmp_path / "longer" / "log.txt").read_text()
    assert (f"InputError: {tmp_path}/longer/checkpoints/step-4: its LR schedule has lr_decay_steps 6, this run's is 8 "
            "(from the run's steps (steps, or epochs of the data at global_batch_size)): a run resumes only with the "
            f"schedule it was saved with; set it back, or start a new stage from this one (init: {tmp_path}/longer)"
            in log), log[-3000:]
    assert not (tmp_path / "longer" / "metrics.jsonl").exists()


@pytest.fixture(scope="module")
def bf16_model_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny model with its weights saved in bf16, as Qwen2.5's are."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("bf16") / "model"
    shutil.copytree(tiny_model_dir, folder)
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.bfloat16).save_pretrained(folder)
    return folder


def test_bf16_on_megatrons_local_layers_saves_resumes_and_exports(tmp_path, dataset, bf16_model_dir):
    from transformers import AutoModelForCausalLM

    # Megatron's local layers (no Transformer Engine here) create their norm weights in fp32: unless every chunk is
    # cast as Megatron-LM's Float16Module does, the distributed optimizer's state cannot be saved.
    s = settings(dataset, steps=4, precision="bf16", gpus_per_node=2,
                 checkpoint=CheckpointConfig(every=2, keep_last=2, async_save=False))
    _resumes_at_step_2_as_it_went_on(tmp_path, s, bf16_model_dir)
    exported, reexported = (hf_weights(folder / "hf") for folder in (tmp_path / "whole", tmp_path / "resumed"))
    for name, tensor in exported.items():
        assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, reexported[name]), name
    model, info = AutoModelForCausalLM.from_pretrained(tmp_path / "whole" / "hf", torch_dtype="auto",
                                                       output_loading_info=True)
    assert model.dtype == torch.bfloat16 and not any(info.values()), info


def test_training_prints_no_known_harmless_noise(reference):
    # fp32 with the distributed optimizer (whose zero_grad reads `.grad` of non-leaf views), three checkpoints.
    log = (reference[0] / "log.txt").read_text()
    assert "Overwriting old incomplete / corrupted checkpoint" not in log
    assert "The .grad attribute of a Tensor that is not a leaf Tensor" not in log


def test_a_non_finite_step_stops_the_run_before_its_checkpoint(tmp_path, dataset, tiny_model_dir):
    # A learning rate no weight survives: step 1 is finite, its update overflows, step 2's loss and gradients are NaN.
    s = settings(dataset, steps=4, checkpoint=CheckpointConfig(every=1, keep_last=2, async_save=False),
                 optimizer=OptimizerConfig(lr=1e19, min_lr=1e19, warmup_fraction=0.0, decay="constant"))
    folder = tmp_path / "run"
    for attempt in range(2):
        assert start(folder, s, tiny_model_dir).wait() != 0
        log = (folder / "log.txt").read_text()
        assert log.count(f"in training step 2, before its checkpoint: a rerun resumes from {folder}/checkpoints/"
                         "step-1") == attempt + 1, log[-3000:]
        # Nothing of the NaN state was kept or exported, and the last good checkpoint is left.
        assert [c.name for c in (folder / "checkpoints").iterdir()] == ["step-1"]
        assert not (folder / "finished.json").exists() and not (folder / "hf").exists()
    assert "found NaN in local grad norm" in log
    # The rerun resumed from step 1: it logged no step of its own before failing at step 2 again.
    assert [r["step"] for r in read_metrics(folder / "metrics.jsonl")] == [1]


def test_resume_at_another_data_parallel_size_and_a_clear_error_at_another_tensor_size(tmp_path, dataset,
                                                                                         tiny_model_dir, reference):
    s = settings(dataset, export_hf=False, **REFERENCE)
    whole_dir, whole = reference
    for name in ("dp2", "tp2"):
        shutil.copytree(whole_dir / "checkpoints" / "step-4", tmp_path / name / "checkpoints" / "step-4")
    # Every rank of the wider run takes the RNG state of its model-parallel position; the optimizer reshards.
    resumed = train(tmp_path / "dp2", dataclasses.replace(s, gpus_per_node=2), tiny_model_dir)
    assert [r["step"] for r in resumed if "loss" in r] == [5, 6]
    assert losses(resumed) == pytest.approx(losses(whole)[4:], rel=1e-5)
    # Megatron cannot reshard the optimizer over tensor ranks: one line naming both layouts, not its KeyError.
    tp2 = dataclasses.replace(s, gpus_per_node=2, parallel=ParallelConfig(tensor=2))
    assert start(tmp_path / "tp2", tp2, tiny_model_dir).wait() != 0
    assert (f"LayoutError: {tmp_path}/tp2/checkpoints/step-4 was saved at tensor 1, pipeline 1, context 1, this run "
            f"is tensor 2, pipeline 1, context 1: the optimizer state resumes only at the layout it was saved at"
            in (tmp_path / "tp2" / "log.txt").read_text())
