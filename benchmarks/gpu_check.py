"""Sections of `benchmarks/gpu_check.sh` that are not already benchmarks of their own: bf16 logits parity of the
Megatron model against transformers, FP8 scaling state through a checkpoint, and a vLLM GPU server with the
tool-call parser. `--dry-run` runs the same
code on the CPU at toy size (Megatron's local layers, bf16 for parity and fp32 elsewhere, vLLM's CPU build), so the
check is tested without a GPU; `parity --perturb 0.05` runs it on a wrong model, which must FAIL.

    python benchmarks/gpu_check.py parity [--dry-run]
    python benchmarks/gpu_check.py fp8-state [--dry-run]
    python benchmarks/gpu_check.py serve [--dry-run]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

import torch

BUNDLED = Path(__file__).resolve().parents[1] / "swehero" / "model" / "configs"


# How much larger than transformers' own bf16 error Megatron's bf16 error may be. Both are measured against an fp32
# forward of the same weights: random weights give nearly flat logits, so a fixed threshold on the difference or on
# argmax agreement fails correct bf16 models (transformers bf16 alone agrees with its fp32 on 94-95% of argmaxes at
# the 7B shapes). Measured on the CPU with Megatron's local layers, 128 tokens at the 7B shapes: ratio 1.71 (their
# attention rounds the scores to bf16 before the softmax; 1.02 at the dry run's toy size); with the final norm
# scaled by 1.02, logits 2% off, 2.28 (3.70 at toy size), by 1.01 1.87: errors under ~1.5% of the logits hide in
# bf16's own, a structural bug (rope, biases, head layout) is tens of percent.
PARITY_TOLERANCE = 2.0


def parity(dry_run: bool, perturb: float = 0.0) -> bool:
    """A random model of Qwen2.5-Coder-7B's layer shapes (2 layers, its vocabulary) in bf16 on one GPU, built
    with Transformer Engine's layers where installed, against transformers on the same weights and tokens: its
    error against an fp32 forward of those weights may be at most PARITY_TOLERANCE times transformers' bf16 error.
    `perturb` scales the Megatron model's final norm by 1 + perturb after loading: a wrong model, which must FAIL."""
    from megatron.core import parallel_state
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from swehero.model.hf_weights import load_hf_weights
    from swehero.model.forward import forward_logits
    from swehero.model.folder import read_config
    from swehero.model.parallel import ParallelConfig
    from swehero.model.provider import build_model, init_parallel

    if dry_run:
        from swehero.model import cpu_backend

        cpu_backend.enable()
    device = "cpu" if dry_run else "cuda"
    te = not dry_run and importlib.util.find_spec("transformer_engine") is not None
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29511"), RANK="0",
                      WORLD_SIZE="1", LOCAL_RANK="0")
    torch.distributed.init_process_group("gloo" if dry_run else "nccl")
    init_parallel(ParallelConfig())
    config = json.loads((BUNDLED / "qwen2.5-coder-7b-instruct.json").read_text())
    config.update(num_hidden_layers=2, torch_dtype="bfloat16")
    if dry_run:
        config.update(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2,
                      vocab_size=1024)
    seq = 64 if dry_run else 2048
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        hf_model = Qwen2ForCausalLM(Qwen2Config(**config)).to(torch.bfloat16)
        hf_model.save_pretrained(tmp, safe_serialization=True)
        hf = read_config(tmp)
        tokens = torch.randint(0, hf["vocab_size"], (1, seq)).to(device)
        with torch.no_grad():
            hf_model.to(device).eval()
            transformers_bf16 = hf_model(tokens).logits.float()
            exact = hf_model.float()(tokens).logits  # the same bf16-rounded weights, computed in fp32
        del hf_model
        model = build_model(hf, ParallelConfig(), spec="te" if te else "local", dtype=torch.bfloat16)
        model.to(device)
        load_hf_weights(model, tmp, hf)
        with torch.no_grad():
            model.decoder.final_layernorm.weight.mul_(1 + perturb)
        megatron = forward_logits(model, tokens)[..., : hf["vocab_size"]].float()
    ours, theirs = _logits_error(megatron, exact), _logits_error(transformers_bf16, exact)
    ok = ours["mean"] <= PARITY_TOLERANCE * theirs["mean"]
    wrong = f" (final norm x{1 + perturb:g})" if perturb else ""
    print(f"parity: Megatron {'Transformer Engine' if te else 'local'} layers{wrong} vs transformers, bf16, "
          f"{seq} tokens, vocab {hf['vocab_size']}, against fp32 of the same weights: "
          f"mean |diff| {ours['mean']:.2%} of mean |logit| (transformers bf16 {theirs['mean']:.2%}, ratio "
          f"{ours['mean'] / theirs['mean']:.2f}, at most {PARITY_TOLERANCE}), max |diff| {ours['max']:.4f} "
          f"({theirs['max']:.4f}), argmax agreement {ours['agree']:.2%} ({theirs['agree']:.2%}) "
          f"-> {'PASS' if ok else 'FAIL'}")
    parallel_state.destroy_model_parallel()
    torch.distributed.destroy_process_group()
    return ok


def _logits_error(logits: torch.Tensor, exact: torch.Tensor) -> dict[str, float]:
    """Mean |difference| relative to the mean |logit|, max |difference| and argmax agreement against `exact`."""
    diff = (logits - exact).abs()
    return {"mean": diff.mean().item() / exact.abs().mean().item(), "max": diff.max().item(),
            "agree": (logits.argmax(-1) == exact.argmax(-1)).float().mean().item()}


def fp8_state(dry_run: bool) -> bool:
    """Transformer Engine's FP8 scaling state through a training checkpoint: 2 FP8 steps of a 2-layer 7B-shaped
    model, saved, then a freshly built model resumed from it holds every module's extra state byte for byte.
    (The dry run has no TE: fp32 local layers, whose extra state is empty; tests/test_train_fp8_state.py checks
    the round trip on the CPU with a layer that has real state.)"""
    from megatron.core import parallel_state
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from swehero.model.packing import position_ids
    from swehero.train import model_setup
    from swehero.train.checkpoint import Checkpointer
    from swehero.train.config import Settings
    from swehero.train.data import PackedBatch
    from swehero.train.step import train_step

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29512"), RANK="0",
                      WORLD_SIZE="1", LOCAL_RANK="0")
    s = Settings(data="unused", seq_length=256 if dry_run else 4096, precision="fp32" if dry_run else "fp8",
                 device="cpu" if dry_run else "cuda", global_batch_size=1)
    env = model_setup.initialize(s, seed=0)
    config = json.loads((BUNDLED / "qwen2.5-coder-7b-instruct.json").read_text())
    config.update(num_hidden_layers=2)
    if dry_run:
        config.update(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2, vocab_size=1024)
    with tempfile.TemporaryDirectory() as tmp:
        Qwen2ForCausalLM(Qwen2Config(**config)).save_pretrained(tmp, safe_serialization=True)
        model, hf = model_setup.build(s, tmp, env)
        model_setup.load_initial_weights(model, tmp, hf)
        optimizer, scheduler = model_setup.optimizer_and_schedule(s, model, total_steps=10)
        half = s.seq_length // 2
        for step in range(2):
            tokens = torch.randint(0, hf["vocab_size"], (1, s.seq_length), generator=torch.Generator().manual_seed(step))
            batch = PackedBatch(tokens, torch.roll(tokens, -1, 1), torch.ones(1, s.seq_length), position_ids([half, half]),
                                [half, half])
            train_step(model, optimizer, scheduler, [batch], s.seq_length, env.device, s.fused_ce)
        ckpt = Checkpointer(Path(tmp) / "checkpoints", hf, keep_last=1, async_save=False)
        ckpt.save(2, model, optimizer, scheduler)
        saved = _extra_states(model)
        resumed, _ = model_setup.build(s, tmp, env)
        optimizer, scheduler = model_setup.optimizer_and_schedule(s, resumed, total_steps=10)
        step = ckpt.load_latest(resumed, optimizer, scheduler)
        restored = _extra_states(resumed)
    same = saved.keys() == restored.keys() and all(_equal(saved[k], restored[k]) for k in saved)
    carried = sum(1 for v in saved.values() if isinstance(v, torch.Tensor) and v.numel())
    ok = step == 2 and same and (dry_run or carried > 0)
    print(f"fp8 state: {len(saved)} modules with extra state, {carried} non-empty, restored identically: {same} "
          f"-> {'PASS' if ok else 'FAIL'}")
    parallel_state.destroy_model_parallel()
    torch.distributed.destroy_process_group()
    return ok


def _extra_states(model: list) -> dict:
    from swehero.train.model_setup import model_chunks

    return {name: module.get_extra_state() for name, module in model_chunks(model)[0].named_modules()
            if type(module).get_extra_state is not torch.nn.Module.get_extra_state}


def _equal(a, b) -> bool:
    """Whether two extra states hold the same values. Transformer Engine serialises its state (a dict of scales,
    amax histories, counters) into a uint8 tensor, and one restored by `set_extra_state` may come out with its keys
    in another order, which changes the bytes and nothing else: compare what they decode to."""
    a, b = _decoded(a), _decoded(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(map(_equal, a, b))
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu())
    return type(a) is type(b) and a == b


def _decoded(state):
    """A uint8 tensor of serialised state (TE's `pickle.dumps`, or `torch.save` in TE 1.x) as its value; anything
    else as it is."""
    import io
    import pickle

    if not (isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and state.dim() == 1 and state.numel()):
        return state
    data = state.cpu().numpy().tobytes()
    for load in (pickle.loads, lambda raw: torch.load(io.BytesIO(raw), weights_only=False)):
        try:
            return load(data)
        except Exception:  # not that format (a plain uint8 tensor stays one)
            continue
    return state


def serve(dry_run: bool) -> bool:
    """The tiny model served by vLLM (GPU build; CPU build in the dry run) with swehero's tool-call parser plugin:
    one chat completion offering a tool, answered, and the plugin named in the server's log."""
    from swehero.serve.server import ServeConfig, VLLMServer
    from swehero.tiny.kit import TinyModelConfig, make_tiny

    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny(Path(tmp) / "tiny", TinyModelConfig(), seed=0)
        cfg = ServeConfig(model=str(model), max_model_len=2048, dtype="float32" if dry_run else "bfloat16",
                          gpu_memory_utilization=0.2 if dry_run else 0.3, compile=not dry_run)
        log = Path(tmp) / "vllm.log"
        with VLLMServer(cfg, log) as server:
            request = urllib.request.Request(f"{server.url}/chat/completions", headers={"Content-Type": "application/json"},
                                             data=json.dumps({
                "model": model.name, "max_tokens": 16, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
                "messages": [{"role": "user", "content": "Fix the bug."}],
                "tools": [{"type": "function", "function": {"name": "finish", "description": "Finish.",
                                                            "parameters": {"type": "object", "properties": {}}}}],
            }).encode())
            with urllib.request.urlopen(request, timeout=300) as response:
                reply = json.loads(response.read())
        plugin = "swehero_hermes" in log.read_text()
    choice = reply["choices"][0]
    ok = plugin and choice["finish_reason"] in ("length", "stop", "tool_calls") and reply["usage"]["completion_tokens"] >= 1
    print(f"serve: vLLM {'CPU' if dry_run else 'GPU'}, tool parser plugin loaded: {plugin}, finish_reason "
          f"{choice['finish_reason']}, {reply['usage']['completion_tokens']} tokens -> {'PASS' if ok else 'FAIL'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=["parity", "fp8-state", "serve"])
    parser.add_argument("--dry-run", action="store_true", help="CPU, toy sizes: everything but the GPU")
    parser.add_argument("--perturb", type=float, default=0.0,
                        help="parity only: scale the Megatron model's final norm by 1 + PERTURB (the check must FAIL)")
    args = parser.parse_args()
    if args.section == "parity":
        ok = parity(args.dry_run, args.perturb)
    else:
        ok = {"fp8-state": fp8_state, "serve": serve}[args.section](args.dry_run)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
