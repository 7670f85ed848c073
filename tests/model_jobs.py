"""Tiny random Qwen2 checkpoints and the multi-process jobs the model tests run (one module so spawn can import it)."""

from __future__ import annotations

from pathlib import Path

import torch

TINY = dict(
    vocab_size=300, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, head_dim=64, max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)
YARN = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}


def make_hf(out: Path, seed: int = 0, dtype: torch.dtype = torch.float32, **overrides) -> Path:
    """A random Qwen2ForCausalLM saved as safetensors, with non-zero q/k/v biases so bias mistakes show."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(**{**TINY, **overrides})
    model = Qwen2ForCausalLM(config).float()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "norm" in name else 0.0))
    model.to(dtype).save_pretrained(out, safe_serialization=True)
    return out


def with_tokenizer(hf_dir: Path) -> Path:
    """`hf_dir` with the reference Qwen2.5 tokenizer beside its weights, as a downloaded model has (what an export
    takes from `like`)."""
    import shutil

    from tests_paths import qwen

    for path in qwen().iterdir():
        if path.name != "README.md":
            shutil.copy(path, hf_dir / path.name)
    return hf_dir


def hf_logits(hf_dir: Path, tokens: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
    from transformers import Qwen2ForCausalLM

    model = Qwen2ForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(tokens, position_ids=position_ids).logits


def _diff(logits: torch.Tensor | None, ref: torch.Tensor) -> torch.Tensor:
    """Max |megatron - hf| over the real vocabulary, maxed over all ranks (0 where this rank has no logits)."""
    local = torch.zeros(())
    if logits is not None:
        local = (logits[..., : ref.shape[-1]] - ref).abs().max()
    torch.distributed.all_reduce(local, op=torch.distributed.ReduceOp.MAX)
    return local


def _model(case: dict, layout: tuple[int, int]):
    from megatron.core import parallel_state

    from swehero.model.folder import read_config
    from swehero.model.parallel import ParallelConfig
    from swehero.model.provider import build_model, init_parallel

    parallel_state.destroy_model_parallel()
    parallel = ParallelConfig(tensor=layout[0], pipeline=layout[1])
    init_parallel(parallel)
    hf = read_config(case["hf_dir"])
    return build_model(hf, parallel, **case.get("build", {})), hf


def parity_job(rank: int, cases: list[dict], out: Path) -> None:
    """Each case: HF folder, layouts, tokens, reference logits, optional packed document lengths.

    Conversion cases (`ckpt`) also save a dist checkpoint at the first layout, reload it at the others and
    export each back to Hugging Face under `export/<layout>`.
    """
    import json

    from megatron.core import parallel_state

    from swehero.model.checkpoint import load_checkpoint, save_checkpoint
    from swehero.model.hf_weights import load_hf_weights, save_hf_weights
    from swehero.model.forward import forward_logits
    from swehero.model.packing import packed_seq_params, position_ids

    results = {}
    for case in cases:
        packed = positions = None
        if case.get("docs"):
            packed, positions = packed_seq_params(case["docs"]), position_ids(case["docs"])
        for i, layout in enumerate(case["layouts"]):
            model, hf = _model(case, layout)
            if case.get("ckpt") and i > 0:
                load_checkpoint(model, case["ckpt"])
            else:
                load_hf_weights(model, case["hf_dir"], hf)
            if case.get("ckpt") and i == 0:
                save_checkpoint(model, hf, case["ckpt"])
            if case.get("drop_middle_boundaries"):
                # The known failure this guards against: middle stages forward without the document boundaries.
                ends = parallel_state.is_pipeline_first_stage() or parallel_state.is_pipeline_last_stage()
                logits = forward_logits(model, case["tokens"], positions, packed if ends else None)
            else:
                logits = forward_logits(model, case["tokens"], positions, packed)
            results[f"{case['name']}@tp{layout[0]}pp{layout[1]}"] = _diff(logits, case["ref"]).item()
            if case.get("ckpt"):
                export = Path(case["ckpt"]).parent / "export" / f"tp{layout[0]}pp{layout[1]}"
                export.mkdir(parents=True, exist_ok=True)
                torch.distributed.barrier()
                save_hf_weights(model, hf, export)
    if rank == 0:
        Path(out).write_text(json.dumps(results, indent=2))


def param_count_job(rank: int, config_paths: list[Path], out: Path) -> None:
    """Build each real config on the meta device at TP=1/PP=1 and record its parameter count."""
    import json

    from swehero.model.folder import read_config
    from swehero.model.parallel import ParallelConfig
    from swehero.model.provider import build_model, init_parallel

    init_parallel(ParallelConfig())
    counts = {}
    for path in config_paths:
        with torch.device("meta"):
            model = build_model(read_config(path), ParallelConfig(), dtype=torch.bfloat16, perform_initialization=False)
        counts[Path(path).name] = sum(p.numel() for p in model.parameters())
    Path(out).write_text(json.dumps(counts))


def train_job(rank: int, hf_dir: Path, out: Path) -> None:
    """Three optimizer steps at TP=2 x PP=2 on packed rows: Megatron DDP, distributed Adam, the 1F1B schedule."""
    import json

    from megatron.core import parallel_state
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from swehero.model.folder import read_config
    from swehero.model.hf_weights import load_hf_weights
    from swehero.model.packing import packed_seq_params
    from swehero.model.parallel import ParallelConfig
    from swehero.model.provider import build_model, init_parallel

    parallel = ParallelConfig(tensor=2, pipeline=2)
    init_parallel(parallel)
    hf = read_config(hf_dir)
    model = build_model(hf, parallel)
    load_hf_weights(model, hf_dir, hf)
    ddp = DistributedDataParallel(
        model.config, DistributedDataParallelConfig(use_distributed_optimizer=True, grad_reduce_in_fp32=True), model
    )
    optimizer = get_megatron_optimizer(OptimizerConfig(optimizer="adam", lr=1e-3, use_distributed_optimizer=True), [ddp])
    model.config.no_sync_func = ddp.no_sync
    model.config.finalize_model_grads_func = finalize_model_grads
    tokens = torch.randint(0, 300, (1, 64), generator=torch.Generator().manual_seed(0))
    labels, packed = torch.roll(tokens, -1, 1), packed_seq_params([40, 24])

    def step(data_iterator, chunk):
        per_token = chunk(tokens, None, None, labels=labels, packed_seq_params=packed)

        def loss(output):
            total, count = output.float().sum(), torch.tensor(output.numel())
            return total, count, {"lm loss": torch.stack([total.detach(), count.float()])}

        return per_token, loss

    losses, grad_norms = [], []
    for _ in range(3):
        ddp.zero_grad_buffer()
        optimizer.zero_grad()
        reduced = get_forward_backward_func()(
            forward_step_func=step, data_iterator=iter([None, None]), model=[ddp], num_microbatches=2,
            seq_length=64, micro_batch_size=1, forward_only=False,
        )
        _, grad_norm, _ = optimizer.step()
        grad_norms.append(grad_norm)
        if parallel_state.is_pipeline_last_stage():
            losses.append(sum(r["lm loss"][0] for r in reduced).item() / sum(r["lm loss"][1] for r in reduced).item())
    Path(out, f"rank{rank}.json").write_text(json.dumps({"losses": losses, "grad_norms": grad_norms}))
