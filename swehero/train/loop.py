"""The SFT loop, run by every training process (`python -m swehero.train.worker STAGE_DIR`)."""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from swehero.data.prepare import read_stats
from swehero.jsonio import write_json_atomic
from swehero.train import model_setup
from swehero.train.checkpoint import Checkpointer, is_reporting_rank
from swehero.train.config import Settings, rows_per_step
from swehero.train.data import PackedSequences, sample_indices, steps_for
from swehero.train.memory import GiB, peak_bytes
from swehero.train.metrics import LogInterval, MetricsLogger, training_flops_per_token
from swehero.train.step import evaluate, train_step
from swehero.train.worker import FINISHED, StopRequest


@dataclass
class TrainJob:
    """What the stage hands to the worker processes (written as `train_job.json`)."""

    settings: Settings
    dir: str
    """The stage folder."""
    init: str
    """HF folder or earlier train stage folder to start from."""
    seed: int
    name: str


def train(job: TrainJob, stop: StopRequest) -> None:
    s, folder = job.settings, Path(job.dir)
    env = model_setup.initialize(s, job.seed)
    if torch.distributed.get_rank() == 0:
        # An earlier run's: this one's export (a Slurm job on a finished stage exports again) may fail, and the
        # stage must not complete from a claim of an export that is no longer whole
        (folder / FINISHED).unlink(missing_ok=True)
    before_model = peak_bytes(env.cuda)  # what the model, optimizer and batches add is measured from here
    model, hf_config = model_setup.build(s, job.init, env)
    ckpt = Checkpointer(folder / "checkpoints", hf_config, s.checkpoint.keep_last, s.checkpoint.async_save and env.cuda)
    if not ckpt.has_checkpoint():
        model_setup.load_initial_weights(model, job.init, hf_config)
    optimizer, scheduler = model_setup.optimizer_and_schedule(s, model, total_steps := total_steps_of(s))
    step = ckpt.load_latest(model, optimizer, scheduler)
    data, valid = PackedSequences(s.data, "train"), PackedSequences(s.data, "valid")
    log = MetricsLogger(folder, total_steps, step, s.tensorboard, s.wandb_project, job.name, asdict(s)) \
        if is_reporting_rank() else None
    interval = LogInterval()
    while step < total_steps:
        began = time.perf_counter()
        batches = [data[i] for i in sample_indices(len(data), job.seed, step, rows_per_step(s), env.dp_rank, env.dp_size)]
        try:
            metrics = train_step(model, optimizer, scheduler, batches, data.seq_length, env.device, s.fused_ce)
        except Exception as e:  # Megatron's own checks (a NaN gradient) do not say which step
            e.add_note(f"in training step {step + 1}, before its checkpoint: a rerun resumes from "
                       f"{ckpt.newest() or 'the initial weights'}")
            raise
        step += 1
        if log is not None:
            seconds = time.perf_counter() - began
            interval.add({**metrics, **throughput(batches, hf_config, env, seconds, s.precision)}, seconds)
            if step % s.log_every == 0:
                log.log(step, {**interval.pop(), "peak_memory_gib": (peak_bytes(env.cuda) - before_model) / GiB})
        if step % s.checkpoint.every == 0 or step == total_steps:
            ckpt.save(step, model, optimizer, scheduler)
        if len(valid) and ((s.eval_every and step % s.eval_every == 0) or step == total_steps):
            groups = validation_groups(valid, env, s.parallel.pipeline)
            valid_loss = evaluate(model, groups, valid.seq_length, env.device, s.fused_ce)
            if log is not None:
                log.log(step, {"valid_loss": valid_loss})
        ckpt.poll()
        if log is not None:
            log.advance()
        if step < total_steps and (signum := agreed_stop(stop, env.device)):
            break
    ckpt.poll(blocking=True)
    if log is not None:
        log.close()
    if step < total_steps:
        save_stopped(ckpt, step, total_steps, signum, model, optimizer, scheduler)
    else:
        if s.export_hf:
            model_setup.export_hf(model, hf_config, job.init, folder / "hf")
        torch.distributed.barrier()  # every rank's checkpoint written: the stage's work is done
        if torch.distributed.get_rank() == 0:
            write_json_atomic(folder / FINISHED, {"step": step, "hf": s.export_hf})
    model_setup.shutdown()


def agreed_stop(stop: StopRequest, device) -> int:
    """The stop signal any rank has received (0: none). Ranks receive one at different moments, or not all of them
    (torchrun hands its own on to the workers of its node only): agreeing at each step boundary, as Megatron-LM's
    DistributedSignalHandler does, every rank stops after the same step."""
    flag = torch.tensor([stop.signum], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return int(flag.item())


def save_stopped(ckpt: Checkpointer, step: int, total_steps: int, signum: int, model, optimizer, scheduler) -> None:
    """What a run stopped by a signal leaves: a checkpoint of the last step it trained, and no FINISHED, so that a
    rerun of the stage resumes from it. The workers then exit with status 0."""
    if ckpt.newest() != ckpt.folder / f"step-{step}":
        ckpt.save(step, model, optimizer, scheduler, background=False)  # the process ends next
    if torch.distributed.get_rank() == 0:
        print(f"stopped by {signal.Signals(signum).name} after step {step} of {total_steps}: saved {ckpt.newest()}; "
              "run the stage again to resume from it", file=sys.stderr, flush=True)


def total_steps_of(s: Settings) -> int:
    stats = read_stats(s.data)
    return steps_for(stats["samples"]["train"], rows_per_step(s), s.epochs, s.steps)


def validation_groups(valid: PackedSequences, env, size: int) -> list[list]:
    """This DP rank's share of the validation set, one sample per micro-batch, in passes of `size` micro-batches
    (the pipeline size: the interleaved schedule runs whole multiples of it). The last pass is filled up with
    copies whose loss mask is zero, which add nothing to the loss."""
    mine = [valid[i] for i in range(env.dp_rank, len(valid), env.dp_size)]
    if mine:
        mine += [replace(mine[-1], loss_mask=torch.zeros_like(mine[-1].loss_mask))] * (-len(mine) % size)
    return [mine[i:i + size] for i in range(0, len(mine), size)]


def throughput(batches: list, hf_config: dict, env, seconds: float, precision: str) -> dict:
    """Tokens/s and MFU of this step over the whole job (every DP rank processed as many tokens)."""
    tokens = sum(b.tokens.numel() for b in batches) * env.dp_size
    docs = [n for b in batches for n in b.doc_lengths]
    per_token = training_flops_per_token(hf_config, docs)
    out = {"tokens_per_s": tokens / seconds,
           "tflops_per_gpu": per_token.total * tokens / seconds / env.world_size / 1e12}
    if env.cuda:
        out["mfu"] = per_token.seconds_at_peak(precision) * tokens / seconds / env.world_size
    return out
