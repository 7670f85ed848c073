"""FP8 resume: modules' `_extra_state` (where Transformer Engine keeps its FP8 scaling state) goes through the
training checkpoint and comes back into the right layer of a freshly built model.

Transformer Engine needs a GPU, so the layer here is Megatron's own ColumnParallelLinear with a real extra state
of the same kind: a delayed-scaling amax history and scale, updated by every forward pass and serialised by
get_extra_state / restored by set_extra_state, as TE's linear layers do. Everything else is the real training
path on 2 gloo processes (pipeline 2, so each rank saves and reloads its own layers): `model_setup.build`,
Megatron's DDP and distributed optimizer, and `Checkpointer.save` / `load_latest`. The GPU part (TE's own
state in an FP8 run) is in benchmarks/gpu_check.sh.

Also the background save GPU runs make (`checkpoint.async_save`), with the megatron-core of each tier.
"""

import io
from pathlib import Path

import pytest
import torch
from megatron.core.tensor_parallel import ColumnParallelLinear

from swehero.model.packing import position_ids
from swehero.train.data import PackedBatch

FP8_E4M3_MAX = 448.0


class ScalingStateLinear(ColumnParallelLinear):
    """ColumnParallelLinear that tracks FP8 delayed-scaling state the way TE does: each forward records the
    input's amax in a rolling history, and the scale is FP8's maximum over the history's maximum."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.amax_history = torch.zeros(16)
        self.scale = torch.ones(())

    def forward(self, input_, *args, **kwargs):
        with torch.no_grad():
            self.amax_history = torch.roll(self.amax_history, 1)
            self.amax_history[0] = input_.abs().max()
            self.scale = FP8_E4M3_MAX / self.amax_history.max()
        return super().forward(input_, *args, **kwargs)

    def get_extra_state(self) -> torch.Tensor:
        buffer = io.BytesIO()
        torch.save({"amax_history": self.amax_history, "scale": self.scale}, buffer)
        return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)  # TE's format: serialised bytes

    def set_extra_state(self, state) -> None:
        if state is None or state.numel() == 0:
            return
        loaded = torch.load(io.BytesIO(state.numpy().tobytes()))
        self.amax_history, self.scale = loaded["amax_history"], loaded["scale"]


def _qkv_layers(model: list) -> list:
    from swehero.train.model_setup import model_chunks

    return [layer.self_attention.linear_qkv for chunk in model_chunks(model) for layer in chunk.decoder.layers]


def _build(init: str):
    from megatron.core import parallel_state

    from swehero.train import model_setup
    from swehero.train.config import ParallelConfig, Settings

    s = Settings(data="unused", parallel=ParallelConfig(pipeline=2), precision="fp32", device="cpu")
    env = model_setup.Env(torch.device("cpu"), False, 2, parallel_state.get_data_parallel_rank(),
                          parallel_state.get_data_parallel_world_size())
    model, hf_config = model_setup.build(s, init, env)
    optimizer, scheduler = model_setup.optimizer_and_schedule(s, model, total_steps=10)
    return model, hf_config, optimizer, scheduler


SEQ = 32


def _batch(hf_config: dict, seed: int) -> PackedBatch:
    """One packed row of two random documents."""
    tokens = torch.randint(0, hf_config["vocab_size"], (1, SEQ), generator=torch.Generator().manual_seed(seed))
    return PackedBatch(tokens=tokens, labels=torch.roll(tokens, -1, 1), loss_mask=torch.ones(1, SEQ),
                       position_ids=position_ids([20, 12]), doc_lengths=[20, 12])


def extra_state_job(rank: int, init: str, folder: str) -> None:
    from megatron.core import parallel_state

    from swehero.model import provider
    from swehero.train.checkpoint import Checkpointer
    from swehero.train.step import train_step

    local_spec = provider.transformer_layer_spec

    def spec_with_scaling_state(name: str):
        spec = local_spec(name)
        spec.submodules.self_attention.submodules.linear_qkv = ScalingStateLinear
        return spec

    provider.transformer_layer_spec = spec_with_scaling_state
    parallel_state.initialize_model_parallel(pipeline_model_parallel_size=2)
    model, hf_config, optimizer, scheduler = _build(init)
    for step in range(2):  # real training steps: every forward updates each layer's scaling state
        train_step(model, optimizer, scheduler, [_batch(hf_config, step)], SEQ, torch.device("cpu"), fused_ce=True)
    saved = [(q.amax_history.clone(), q.scale.clone()) for q in _qkv_layers(model)]
    Checkpointer(Path(folder), hf_config, keep_last=1, async_save=False).save(1, model, optimizer, scheduler)

    resumed, _, optimizer, scheduler = _build(init)  # as a resumed run builds it: fresh scaling state
    assert all(q.amax_history.abs().sum() == 0 for q in _qkv_layers(resumed))
    step = Checkpointer(Path(folder), hf_config, keep_last=1, async_save=False).load_latest(resumed, optimizer, scheduler)
    restored = [(q.amax_history, q.scale) for q in _qkv_layers(resumed)]
    torch.save({"step": step, "saved": saved, "restored": restored}, f"{folder}/rank{rank}.pt")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_extra_state_round_trips_through_the_training_checkpoint(tmp_path):
    from model_jobs import make_hf

    from swehero.model.cpu_backend import launch

    init = make_hf(tmp_path / "hf")
    launch(extra_state_job, 2, str(init), str(tmp_path / "checkpoints"))
    for rank in range(2):
        result = torch.load(tmp_path / "checkpoints" / f"rank{rank}.pt")
        assert result["step"] == 1
        assert len(result["saved"]) == 2  # this pipeline rank's two layers
        for (history, scale), (history2, scale2) in zip(result["saved"], result["restored"]):
            assert torch.equal(history, history2) and torch.equal(scale, scale2)
        assert result["saved"][0][0][:2].abs().min() > 0  # both steps recorded an amax
        assert not torch.equal(result["saved"][0][0], result["saved"][1][0])  # each layer got back its own


def background_save_job(rank: int, init: str, folder: str) -> None:
    from megatron.core import parallel_state

    from swehero.train.checkpoint import Checkpointer
    from swehero.train.step import train_step

    parallel_state.initialize_model_parallel(pipeline_model_parallel_size=2)
    model, hf_config, optimizer, scheduler = _build(init)
    train_step(model, optimizer, scheduler, [_batch(hf_config, 0)], SEQ, torch.device("cpu"), fused_ce=True)
    saved = {name: p.detach().clone() for name, p in model[0].named_parameters()}
    checkpointer = Checkpointer(Path(folder), hf_config, keep_last=1, async_save=True)
    checkpointer.save(1, model, optimizer, scheduler)
    checkpointer.poll(blocking=True)  # the training loop's last call: the background writes finish and publish

    resumed, _, optimizer, scheduler = _build(init)
    reader = Checkpointer(Path(folder), hf_config, keep_last=1, async_save=False)
    step = reader.load_latest(resumed, optimizer, scheduler)
    restored = dict(resumed[0].named_parameters())
    torch.save({"step": step, "equal": [torch.equal(p, restored[name]) for name, p in saved.items()]},
               f"{folder}/rank{rank}.pt")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_background_save_works_with_the_installed_megatron_core(tmp_path):
    """Training saves in the background on GPUs (`checkpoint.async_save`). megatron-core 0.19's background save
    wants nvidia-resiliency-ext unless told to use its own writer: run that path here, under both tiers' versions."""
    from model_jobs import make_hf

    from swehero.model.cpu_backend import launch

    init = make_hf(tmp_path / "hf")
    launch(background_save_job, 2, str(init), str(tmp_path / "checkpoints"))
    assert (tmp_path / "checkpoints/step-1").is_dir() and not list((tmp_path / "checkpoints").glob(".*partial"))
    for rank in range(2):
        result = torch.load(tmp_path / "checkpoints" / f"rank{rank}.pt")
        assert result["step"] == 1 and result["equal"] and all(result["equal"])
