"""What the training tests share: trajectories, settings, training runs under torchrun, and the gradient job with
its plain-PyTorch reference (one module, so spawned processes can import the job)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from swehero.train.config import CheckpointConfig, OptimizerConfig, Settings
from swehero.train.launch import torchrun_command
from swehero.train.metrics import read_metrics

TOOL = {"type": "function", "function": {"name": "open", "description": "Open a file.", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}
WORDS = ["parser", "config", "utils", "models", "views", "cache", "client", "server", "tests", "setup"]


def trajectory(i: int, reply_words: int = 0, tool_output_lines: int = 1) -> dict:
    """A short tool-calling episode with a learnable pattern: the assistant opens the file the user names.
    `reply_words` lengthens the final (trained) reply, `tool_output_lines` the (untrained) tool output."""
    name = f"{WORDS[i % 10]}_{WORDS[(i // 10) % 10]}.py"
    output = f"def f():\n    return {i}\n" * tool_output_lines
    reply = " ".join([f"Fixed {name}."] + [WORDS[(i + j) % 10] for j in range(reply_words)])
    return {
        "id": f"t{i}", "instance_id": f"task-{i}", "tools": [TOOL],
        "messages": [
            {"role": "system", "content": "You fix bugs."},
            {"role": "user", "content": f"The bug is in {name}."},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": f"c{i}", "type": "function", "function": {"name": "open", "arguments": json.dumps({"path": name})}}]},
            {"role": "tool", "tool_call_id": f"c{i}", "content": output},
            {"role": "assistant", "content": reply},
        ],
    }


def settings(dataset: Path, **overrides) -> Settings:
    base = Settings(data=str(dataset), seq_length=512, global_batch_size=4, steps=6, precision="fp32",
                    recompute="none", fused_ce=False, device="cpu", tensorboard=False, gpus_per_node=1,
                    optimizer=OptimizerConfig(lr=2e-3, min_lr=2e-4, warmup_fraction=0.1),
                    checkpoint=CheckpointConfig(every=100, keep_last=2, async_save=False))
    return dataclasses.replace(base, **overrides)


def start(folder: Path, s: Settings, init: Path, seed: int = 0) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train_job.json").write_text(json.dumps({
        "settings": dataclasses.asdict(s), "dir": str(folder), "init": str(init), "seed": seed, "name": folder.name}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(torchrun_command(folder, s.gpus_per_node), env=env, start_new_session=True,
                            stdout=open(folder / "log.txt", "a"), stderr=subprocess.STDOUT)


# A train stage run as the command line runs it (swehero.cli: SIGTERM unwinds), with `settings(DATA, **OVERRIDES)`.
STAGE = f"""
import json, sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from train_jobs import settings
from swehero.process import exit_with_signal, on_sigterm
from swehero.recipe.stage import StageContext
from swehero.train.stage import train_here
folder, data, init, overrides = sys.argv[1:]
with on_sigterm(exit_with_signal):
    train_here(settings(Path(data), init=init, **json.loads(overrides)),
               StageContext(Path(folder).name, Path(folder), 0, None, {{}}, resume=True))
"""


def start_stage(folder: Path, data: Path, init: Path, **overrides) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", STAGE, str(folder), str(data), str(init), json.dumps(overrides)],
                            env=env, stdout=open(folder / "log.txt", "a"), stderr=subprocess.STDOUT)


def train(folder: Path, s: Settings, init: Path) -> list[dict]:
    proc = start(folder, s, init)
    assert proc.wait() == 0, (folder / "log.txt").read_text()[-4000:]
    return read_metrics(folder / "metrics.jsonl")


def losses(records: list[dict]) -> list[float]:
    return [r["loss"] for r in records if "loss" in r]


def hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {name: tensor for f in sorted(folder.glob("*.safetensors")) for name, tensor in load_file(f).items()}


def gradient_job(rank: int, layouts: dict[str, Settings], init: Path, samples: list[int], out: Path) -> None:
    """For each layout, one training step's forward and backward on the packed `samples` of `Settings.data`
    (split over the data-parallel ranks in order, as a global batch is), through the training code: model set-up,
    Megatron DDP, the pipeline schedule, the loss and the gradient finalisation. Writes the finalised gradients in
    Hugging Face names to `out/<layout>/` (exported in place of the weights) and each rank's (loss sum, trained
    tokens) to `out/<layout>/rank<r>.json`. Run with the distributed optimizer off, so every rank holds whole
    gradients."""
    from megatron.core import parallel_state

    from swehero.model.hf_weights import save_hf_weights
    from swehero.train import model_setup
    from swehero.train.data import PackedSequences
    from swehero.train.step import run_batches

    for name, s in layouts.items():
        parallel_state.destroy_model_parallel()
        env = model_setup.initialize(s, seed=0)
        model, hf = model_setup.build(s, str(init), env)
        model_setup.load_initial_weights(model, str(init), hf)
        data = PackedSequences(s.data, "train")
        share = len(samples) // env.dp_size
        batches = [data[i] for i in samples[env.dp_rank * share:(env.dp_rank + 1) * share]]
        loss_sum, tokens = run_batches(model, batches, data.seq_length, env.device, forward_only=False,
                                       fused_ce=s.fused_ce)
        chunks = model_setup.model_chunks(model)
        with torch.no_grad():
            for chunk in chunks:
                for param in chunk.parameters():
                    param.copy_(param.main_grad)
        folder = Path(out) / name
        folder.mkdir(parents=True, exist_ok=True)
        save_hf_weights(chunks, hf, folder)
        (folder / f"rank{rank}.json").write_text(json.dumps({"loss_sum": loss_sum, "tokens": tokens}))


def assistant_tokens(ids: list[int], tokenizer) -> list[bool]:
    """True at the tokens the assistant generated, found from the token ids alone: everything after each
    `<|im_start|>assistant\\n` header up to and including the `<|im_end|>` that closes the turn."""
    header = tokenizer("<|im_start|>assistant\n")["input_ids"]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    out, t = [False] * len(ids), 0
    while t < len(ids):
        if ids[t:t + len(header)] != header:
            t += 1
            continue
        t += len(header)
        while t < len(ids):
            out[t] = True
            t += 1
            if ids[t - 1] == end:
                break
    return out


def packed_documents(dataset: Path, sample: int) -> list[list[int]]:
    """The token ids of each sequence (trajectory, or padding tail) packed in training sample `sample`, read from
    the stored IndexedDataset."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    tokens = IndexedDataset(str(Path(dataset) / "train_tokens"))
    first, last = tokens.document_indices[sample], tokens.document_indices[sample + 1]
    return [tokens[j].tolist() for j in range(first, last)]


def reference_step(hf_dir: Path, dataset: Path, samples: list[int]) -> tuple[float, int, dict[str, torch.Tensor]]:
    """(Sum of token losses, trained tokens, gradient of their ratio by parameter name) for a global batch, in
    plain PyTorch with transformers: each trajectory runs alone, and position t is scored on token t + 1 exactly
    where token t + 1 is an assistant token (`assistant_tokens`)."""
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = Qwen2ForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32)
    total, count = torch.zeros(()), 0
    for sample in samples:
        for ids in packed_documents(dataset, sample):
            targets = torch.tensor(assistant_tokens(ids, tokenizer)[1:])
            if targets.any():
                ids = torch.tensor(ids)
                logits = model(ids[None]).logits[0, :-1]
                total = total + torch.nn.functional.cross_entropy(logits[targets], ids[1:][targets], reduction="sum")
                count += int(targets.sum())
    (total / count).backward()
    return float(total.detach()), count, {name: p.grad for name, p in model.named_parameters()}


def assert_gradients_close(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], rtol: float = 1e-4,
                           floor: float = 1e-6) -> None:
    """Each parameter's gradient equals the expected one within `rtol` of its norm, plus `floor` of the whole
    gradient's norm: rounding noise scales with the terms a gradient sums, not with the sum, and some sums are
    mostly cancellation (the key biases': a vector added to every key would shift each query's scores by one
    constant, which softmax ignores, were it not for RoPE rotating it; their gradient is 1e-4 of the whole)."""
    assert found.keys() == expected.keys()
    scale = torch.sqrt(sum(g.double().square().sum() for g in expected.values()))
    for name, want in expected.items():
        error = (found[name].double() - want.double()).norm()
        assert error <= rtol * want.double().norm() + floor * scale, (name, float(error), float(want.norm()))
