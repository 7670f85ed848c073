"""Training set-up that needs no model: layout checks, the data order, the launchers, FLOPs and plots."""

import dataclasses
import json
import subprocess
import sys

import pytest

from swehero.train.config import LayoutError, ParallelConfig, Settings, check_layout
from swehero.train.data import sample_indices, steps_for
from swehero.train.launch import slurm_script, torchrun_command
from swehero.train.metrics import plot_curves, read_metrics, training_flops_per_token

QWEN25_CODER_32B = {"hidden_size": 5120, "num_hidden_layers": 64, "num_attention_heads": 40,
                    "num_key_value_heads": 8, "intermediate_size": 27648, "vocab_size": 152064}
QWEN2_CONFIG = {**QWEN25_CODER_32B, "model_type": "qwen2", "max_position_embeddings": 32768, "rms_norm_eps": 1e-6}
"""Its config.json as a train stage reads it (the fields the model is built from)."""


def settings(**parallel) -> Settings:
    return Settings(data="d", seq_length=131072, parallel=ParallelConfig(**parallel))


def test_paper_layout_for_32b_is_accepted():
    # 4 nodes x 8 H100: TP 8, PP 2, CP 2 -> DP 1 ... 32 GPUs; global batch 32 -> 32 micro-batches per step.
    assert check_layout(settings(tensor=8, pipeline=2, context=2, sequence_parallel=True), QWEN25_CODER_32B, 32) == 1
    assert check_layout(settings(tensor=8, pipeline=4, virtual_pipeline=2), QWEN25_CODER_32B, 64) == 2
    # more tensor ranks than key/value heads: Megatron gives each group of 8 / 4 ranks one key/value head
    assert check_layout(settings(tensor=8), {**QWEN25_CODER_32B, "num_key_value_heads": 4}, 8) == 1


@pytest.mark.parametrize("parallel, world, message", [
    ({"tensor": 3}, 24, "tensor 3 does not divide num_attention_heads 40"),
    ({"tensor": 5}, 5, "tensor 5 neither divides nor is a multiple of num_key_value_heads 8"),
    ({"tensor": 8, "pipeline": 3}, 24, "pipeline 3 does not divide num_hidden_layers 64"),
    ({"tensor": 8}, 12, "world size 12 is not divisible by tensor 8 x pipeline 1 x context 1 = 8"),
    ({"sequence_parallel": True}, 8, "sequence_parallel needs tensor > 1"),
    ({"virtual_pipeline": 2}, 8, "virtual_pipeline > 1 needs pipeline > 1"),
    ({"tensor": 8}, 8 * 64, "global_batch_size 32 is not divisible by the data-parallel size 64"),
    ({"tensor": 8, "pipeline": 4, "virtual_pipeline": 2}, 32 * 16, "the 2 micro-batches per step to be a multiple of pipeline 4"),
])
def test_bad_layouts_name_the_conflicting_numbers(parallel, world, message):
    with pytest.raises(LayoutError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_layout(settings(**parallel), QWEN25_CODER_32B, world)


def test_context_parallel_needs_divisible_sequence():
    bad = Settings(data="d", seq_length=1000, parallel=ParallelConfig(context=16))
    with pytest.raises(LayoutError, match="seq_length 1000 is not divisible by 2 x context 16"):
        check_layout(bad, QWEN25_CODER_32B, 16)


def test_sequence_parallel_needs_a_sequence_the_tensor_ranks_divide():
    layout = ParallelConfig(tensor=8, sequence_parallel=True)
    with pytest.raises(LayoutError, match="seq_length 100004 is not divisible by tensor 8 .sequence parallelism"):
        check_layout(Settings(data="d", seq_length=100004, parallel=layout), QWEN25_CODER_32B, 8)
    assert check_layout(Settings(data="d", seq_length=100000, parallel=layout), QWEN25_CODER_32B, 8) == 1
    # with context parallelism the batch path pads each rank's share to what the tensor ranks divide
    assert check_layout(Settings(data="d", seq_length=100004, parallel=dataclasses.replace(layout, context=2)),
                        QWEN25_CODER_32B, 16) == 1


def test_data_order_is_a_function_of_seed_and_step():
    n, gbs = 10, 4
    assert steps_for(n, gbs, epochs=3, steps=None) == 7 and steps_for(n, gbs, 3, steps=5) == 5
    # Over an epoch every sample appears once; DP ranks split each step's batch without overlap.
    stream = [i for step in range(5) for rank in range(2) for i in sample_indices(n, 7, step, gbs, rank, 2)]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert stream[:10] != stream[10:20]  # a new permutation each epoch
    # DP=1 sees the same samples per step as DP=2 together (what makes the two runs comparable).
    for step in range(5):
        both = sample_indices(n, 7, step, gbs, 0, 2) + sample_indices(n, 7, step, gbs, 1, 2)
        assert both == sample_indices(n, 7, step, gbs, 0, 1)
    assert sample_indices(n, 8, 0, gbs, 0, 1) != sample_indices(n, 7, 0, gbs, 0, 1)


def test_launchers(tmp_path):
    cmd = torchrun_command(tmp_path, 4)
    assert cmd[1:4] == ["-m", "swehero.train.launch", "--standalone"] and "--nproc-per-node=4" in cmd
    assert cmd[-3:] == ["-m", "swehero.train.worker", str(tmp_path)]
    script = slurm_script(tmp_path, nodes=4, gpus_per_node=8, job_name="hero-32b",
                          sbatch_options=["--partition=batch", "--time=04:00:00"], container_image="/img/swehero.sqsh")
    assert "#SBATCH --nodes=4" in script and "#SBATCH --partition=batch" in script
    assert "--rdzv-endpoint=$head:29500" in script and "--nnodes=4 --nproc-per-node=8" in script
    assert "--container-image=/img/swehero.sqsh" in script
    assert script.startswith("#!/bin/bash\n")


def test_the_worker_module_imports_nothing_heavy():
    # Processes a rank spawns re-import the worker module (as __mp_main__): it must not bring torch and Megatron.
    probe = "import sys, swehero.train.worker; print(sorted(m for m in ('torch', 'megatron') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_flops_per_token_matches_the_textbook_estimate():
    # For short documents attention is negligible and training costs ~6 FLOPs per parameter per token.
    params = 32.5e9 - 5120 * 152064  # minus the input embedding
    flops = training_flops_per_token(QWEN25_CODER_32B, [128] * 8)
    assert flops.total == pytest.approx(6 * params, rel=0.02)
    # Long documents add the causal attention term: 12 * layers * hidden * (mean keys per token), none of it linear.
    long = training_flops_per_token(QWEN25_CODER_32B, [131072])
    assert long.total - flops.total == pytest.approx(12 * 64 * 5120 * ((131072 + 1) / 2 - (128 + 1) / 2), rel=1e-6)
    assert long.linear == flops.linear and long.attention == pytest.approx(12 * 64 * 5120 * (131072 + 1) / 2)


def test_fp8_speeds_up_only_the_linear_layers_in_gpu_hours_and_mfu(tmp_path):
    """Transformer Engine runs the linear layers in FP8 (Megatron's `hybrid`), core attention stays bf16: the plan's
    GPU-hours and the logged MFU took 2x the bf16 peak for all FLOPs, attention too, which at 128k is over half of
    the 32B's."""
    from types import SimpleNamespace

    import torch

    from swehero.train.data import PackedBatch
    from swehero.train.loop import throughput
    from swehero.train.metrics import H100_BF16_PEAK_FLOPS
    from swehero.train.plan import plan_stage

    per_token = training_flops_per_token(QWEN25_CODER_32B, [131072])
    fp8_share = (per_token.linear / 2 + per_token.attention) / per_token.total  # of bf16's time at peak
    assert 0.75 < fp8_share < 0.8  # not 0.5
    (tmp_path / "data").mkdir()  # one 131072-token trajectory per packed row, as the plan reads it
    (tmp_path / "data" / "stats.json").write_text(json.dumps({
        "seq_length": 131072, "samples": {"train": 960, "valid": 3}, "trajectories": {"kept": 1}, "tokens": 131072}))
    plans = {precision: plan_stage("sft", Settings(data=str(tmp_path / "data"), nodes=4, precision=precision,
                                                   parallel=ParallelConfig(tensor=8, pipeline=4)),
                                   "Qwen/Qwen2.5-Coder-32B-Instruct", mfu=0.45) for precision in ("bf16", "fp8")}
    bf16_hours = per_token.total * plans["bf16"].tokens / (0.45 * H100_BF16_PEAK_FLOPS) / 3600
    assert plans["bf16"].gpu_hours == pytest.approx(bf16_hours, rel=1e-3)  # the bundled config's exact sizes
    assert plans["fp8"].gpu_hours == pytest.approx(fp8_share * plans["bf16"].gpu_hours, rel=1e-3)

    # One step of a 131072-token document on 8 GPUs in the time bf16 would take at 45% MFU: fp8 reports less.
    batch = PackedBatch(tokens=torch.zeros(1, 131072, dtype=torch.long), labels=torch.zeros(1, 131072),
                        loss_mask=torch.ones(1, 131072), position_ids=torch.arange(131072)[None], doc_lengths=[131072])
    env = SimpleNamespace(dp_size=1, world_size=8, cuda=True)
    seconds = per_token.total * 131072 / 8 / (0.45 * H100_BF16_PEAK_FLOPS)
    assert throughput([batch], QWEN25_CODER_32B, env, seconds, "bf16")["mfu"] == pytest.approx(0.45)
    assert throughput([batch], QWEN25_CODER_32B, env, seconds, "fp8")["mfu"] == pytest.approx(0.45 * fp8_share)


def test_metrics_plot_and_resumed_records(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": 3.0 / s, "lr": 1e-5} for s in range(1, 6)]
    rows += [{"step": 4, "loss": 9.0, "lr": 1e-5}, {"step": 5, "valid_loss": 1.0}]  # step 4 redone after resume
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = read_metrics(path)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert records[3]["loss"] == 9.0 and records[4]["valid_loss"] == 1.0 and records[4]["loss"] == 0.6
    plot_curves(path, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_memory_model_terms_and_fit_warning(tmp_path):
    from swehero.train.memory import estimate, parameter_count
    from swehero.train.plan import format_plan, plan_stage

    # Published sizes: Qwen2.5-Coder-32B has 32.8B parameters (the card rounds to 32.5B).
    assert parameter_count(QWEN25_CODER_32B) == pytest.approx(32.76e9, rel=1e-3)
    layout = dict(tensor=8, pipeline=2, context=2, sequence_parallel=True)
    selective = estimate(Settings(data="d", parallel=ParallelConfig(**layout)), QWEN25_CODER_32B, data_parallel=1)
    full = estimate(Settings(data="d", parallel=ParallelConfig(**layout), recompute="full"), QWEN25_CODER_32B, 1)
    # bf16 weights over 16 model-parallel ranks; fp32 grads twice that; fp32 master + 2 moments 6x the weights,
    # sharded over the data- and context-parallel ranks together (megatron-core's intra_dp_cp group): DP 1 x CP 2.
    assert selective.weights_gib == pytest.approx(2 * 32.76e9 / 16 / 2**30, rel=1e-3)
    assert selective.gradients_gib == pytest.approx(2 * selective.weights_gib)
    assert selective.optimizer_gib == pytest.approx(6 * selective.weights_gib / 2)
    # Full recompute keeps one hidden vector per token per layer: 2 bytes x 5120 / 8 x 65536 tokens x 32 layers x 2 in
    # flight, plus the layer re-run in the backward pass, whole for one micro-batch: 2 bytes x (4 x 5120 norm and
    # projection inputs + (40 + 2 x 8) x 128 q, k, v + 2 x 40 x 128 attention output and o_proj input + 3 x 27648
    # gate, up and SwiGLU product) / 8 x 65536 tokens.
    recomputed = 2 * (4 * 5120 + 56 * 128 + 80 * 128 + 3 * 27648) / 8 * 65536
    assert full.activations_gib == pytest.approx((2 * 5120 / 8 * 65536 * 32 * 2 + recomputed) / 2**30)
    assert selective.activations_gib > 10 * full.activations_gib
    unfused = estimate(Settings(data="d", parallel=ParallelConfig(**layout), fused_ce=False), QWEN25_CODER_32B, 1)
    assert unfused.loss_gib == pytest.approx(8 * 65536 * 152064 / 8 / 2**30)
    # Fused, the forward holds the fp32 LM-head gradient (152064 / 8 x 5120), three bf16 copies of the hidden states
    # (the trained rows, their gradient, every row's) and a chunk of 8192 bf16 logits; the backward less.
    assert selective.loss_gib == pytest.approx(
        (4 * 152064 / 8 * 5120 + 3 * 2 * 65536 * 5120 + 2 * 8192 * 152064 / 8) / 2**30)

    folder = tmp_path / "qwen32b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(QWEN25_CODER_32B))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "stats.json").write_text(json.dumps({
        "seq_length": 131072, "samples": {"train": 9000, "valid": 90}, "trajectories": {"kept": 30000},
        "tokens": 30000 * 20000}))
    settings = Settings(data=str(tmp_path / "data"), nodes=4, parallel=ParallelConfig(**layout))
    plan = plan_stage("sft", settings, str(folder), mfu=0.45)
    assert plan.steps == 3 * 9000 // 32 and plan.tokens == plan.steps * 32 * 131072
    assert any("more than 80 GiB" in w for w in plan.warnings)
    assert "GPU-hours" in format_plan(plan, 0.45)
    settings.recompute = "full"
    assert not plan_stage("sft", settings, str(folder), mfu=0.45).warnings


def test_validation_passes_are_whole_pipeline_groups_padded_with_weightless_copies():
    from types import SimpleNamespace

    import torch

    from swehero.train.data import PackedBatch
    from swehero.train.loop import validation_groups

    samples = [PackedBatch(tokens=torch.full((1, 4), i), labels=torch.full((1, 4), i), loss_mask=torch.ones(1, 4),
                           position_ids=torch.arange(4)[None], doc_lengths=[4]) for i in range(7)]
    # DP rank 1 of 2 gets samples 1, 3, 5: with pipeline 2 (interleaved: whole groups of 2) a fourth is added.
    groups = validation_groups(samples, SimpleNamespace(dp_rank=1, dp_size=2), 2)
    assert [[int(b.tokens[0, 0]) for b in g] for g in groups] == [[1, 3], [5, 5]]
    assert groups[1][1].loss_mask.sum() == 0 and groups[1][0].loss_mask.sum() == 4
    assert validation_groups(samples[:1], SimpleNamespace(dp_rank=1, dp_size=2), 2) == []


def test_layouts_the_local_layers_cannot_run_are_refused_with_the_reason():
    from swehero.train.model_setup import layer_spec

    assert layer_spec(settings(context=2), has_te=True) == "te"
    assert layer_spec(settings(), has_te=False) == "local"
    with pytest.raises(ValueError, match="context 2 needs Transformer Engine's attention"):
        layer_spec(settings(context=2), has_te=False)
    with pytest.raises(ValueError, match="sequence_parallel needs Transformer Engine's layers"):
        layer_spec(settings(tensor=2, sequence_parallel=True), has_te=False)


def test_a_token_budget_per_step_sets_the_rows_and_is_checked_against_seq_length_and_data_parallel(tmp_path):
    from swehero.train.config import rows_per_step
    from swehero.train.plan import format_plan, plan_stage

    budget = Settings(data="d", seq_length=131072, global_batch_tokens=8 * 131072)
    assert rows_per_step(budget) == 8 and rows_per_step(Settings(data="d")) == 32
    assert check_layout(budget, QWEN25_CODER_32B, world_size=8) == 8  # DP 8: one row per rank
    with pytest.raises(LayoutError, match="not a whole number of seq_length 131072 rows"):
        check_layout(Settings(data="d", seq_length=131072, global_batch_tokens=1_000_000), QWEN25_CODER_32B, 8)
    with pytest.raises(LayoutError, match="multiple of seq_length x data-parallel = 2097152 tokens"):
        check_layout(Settings(data="d", seq_length=131072, global_batch_tokens=24 * 131072), QWEN25_CODER_32B, 16)

    folder = tmp_path / "qwen32b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(QWEN25_CODER_32B))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "stats.json").write_text(json.dumps({
        "seq_length": 131072, "samples": {"train": 1000, "valid": 10}, "trajectories": {"kept": 3000},
        "tokens": 3000 * 40000}))
    s = Settings(data=str(tmp_path / "data"), nodes=4, parallel=ParallelConfig(tensor=8, pipeline=4),
                 global_batch_tokens=8 * 131072)
    plan = plan_stage("sft", s, str(folder), mfu=0.45)
    # 1000 rows, 8 per step: 125 steps per epoch, 375 in 3 epochs, each of 8 x 131072 tokens.
    assert (plan.rows_per_step, plan.steps_per_epoch, plan.steps) == (8, 125, 375)
    assert plan.tokens == 375 * 8 * 131072
    text = format_plan(plan, 0.45)
    assert "global batch   8 rows x 131072 tokens = 1.05 M tokens per step" in text
    assert "steps          375, 125 per epoch  (393.22 M tokens)" in text


def test_an_odd_seq_length_is_no_context_parallel_problem_without_context_parallelism():
    """Refused as one: "seq_length 4095 is not divisible by 2 x context 1"."""
    check_layout(Settings(data="x", seq_length=4095, global_batch_size=2, gpus_per_node=2, device="cpu"), None, 2)
    with pytest.raises(LayoutError, match="seq_length 4095 is not divisible by 2 x context 2"):
        check_layout(Settings(data="x", seq_length=4095, global_batch_size=2, parallel=ParallelConfig(context=2)),
                     None, 2)


def test_a_node_that_cannot_train_the_stage_is_one_error_before_torchrun(monkeypatch, capsys):
    """A node that shows no GPU (a container started without them) trained `device: auto` on the CPU: every worker
    of a 7B layout imported Megatron and failed on sequence parallelism, naming Transformer Engine, not the GPUs
    (one without it trains on the CPU, said on stderr now); a node with fewer GPUs than `gpus_per_node` failed in
    every surplus worker's `set_device`."""
    import torch

    from swehero.errors import InputError, Unavailable
    from swehero.train import model_setup
    from swehero.train.stage import check_this_node

    seven_b = Settings(data="d", gpus_per_node=8, parallel=ParallelConfig(tensor=4, pipeline=2, sequence_parallel=True))
    assert not torch.cuda.is_available()  # this machine: the node without GPUs
    with pytest.raises(InputError, match="^stage sft: sequence_parallel needs Transformer Engine's layers .*, which the "
                                         "CPU cannot run: no CUDA GPU is visible on this node"):
        check_this_node(seven_b, "sft")
    with pytest.raises(Unavailable, match="^stage sft: device is cuda, but no CUDA GPU is visible on this node"):
        check_this_node(dataclasses.replace(seven_b, device="cuda"), "sft")
    check_this_node(dataclasses.replace(seven_b, parallel=ParallelConfig(tensor=4, pipeline=2)), "sft")  # CPU ranks
    assert capsys.readouterr().err == "warning: stage sft: no CUDA GPU is visible on this node: device auto trains " \
                                      "on the CPU, 8 gloo process(es)\n"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    with pytest.raises(Unavailable, match="^stage sft: gpus_per_node is 8, but this node shows 4 GPU"):
        check_this_node(seven_b, "sft")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(model_setup, "has_transformer_engine", lambda: False)
    with pytest.raises(InputError, match="^stage sft: sequence_parallel needs Transformer Engine's layers \\(Megatron's "
                                         "local norms refuse it\\)$"):
        check_this_node(seven_b, "sft")
    monkeypatch.setattr(model_setup, "has_transformer_engine", lambda: True)
    check_this_node(seven_b, "sft")


def test_what_every_worker_would_fail_on_is_one_error_before_any_starts(tmp_path, monkeypatch):
    from swehero.errors import InputError, MissingInput, Unavailable
    from swehero.train.plan import plan_stage
    from swehero.data.prepare import tokenizer_digests
    from swehero.train.stage import check_inputs

    data, model, other = tmp_path / "data", tmp_path / "model", tmp_path / "other"
    for folder in (data, model, other):
        folder.mkdir()
    (data / "stats.json").write_text(json.dumps({
        "seq_length": 65536, "samples": {"train": 64, "valid": 1}, "trajectories": {"kept": 96}, "tokens": 96 * 40000}))
    config = {**QWEN2_CONFIG, "tie_word_embeddings": False}
    (model / "config.json").write_text(json.dumps(config))
    _names_only_weights(model, config, leave_out=("lm_head.weight",))
    with pytest.raises(MissingInput, match=f"{model}: 1 tensor\\(s\\) its config.json needs are not in its weights: "
                                           "lm_head.weight \\(tie_word_embeddings is false"):
        check_inputs(Settings(data=str(data), seq_length=65536), str(model), "sft")
    _names_only_weights(model, config)
    with pytest.raises(InputError, match=f"stage sft: {model} has no tokenizer \\(tokenizer.json, .*\\) for the "):
        check_inputs(Settings(data=str(data), seq_length=65536), str(model), "sft")
    check_inputs(Settings(data=str(data), seq_length=65536, export_hf=False), str(model), "sft")
    (model / "tokenizer.json").write_text("{}")  # a tokenizer in any of its forms
    check_inputs(Settings(data=str(data), seq_length=65536), str(model), "sft")
    # Data rendered with another tokenizer folder (`model.tokenizer`) than the one the export serves with.
    stats = json.loads((data / "stats.json").read_text())
    for template, fails in (("{}", False), ('{"chat_template": "mine"}', True)):
        (other / "tokenizer.json").write_text("{}")
        (other / "tokenizer_config.json").write_text(template)
        (model / "tokenizer_config.json").write_text("{}")
        made_from = {"tokenizer": str(other), "tokenizer_files": tokenizer_digests(other)}
        (data / "stats.json").write_text(json.dumps({**stats, "made_from": made_from}))
        if fails:
            with pytest.raises(InputError, match=f"stage sft: {data} was rendered with the tokenizer of {other}, but "
                                                 f"the export takes {model}'s, and tokenizer_config.json differ"):
                check_inputs(Settings(data=str(data), seq_length=65536), str(model), "sft")
        else:
            check_inputs(Settings(data=str(data), seq_length=65536), str(model), "sft")
    check_inputs(Settings(data=str(data), seq_length=65536, export_hf=False), str(model), "sft")
    (data / "stats.json").write_text(json.dumps(stats))
    (other / "tokenizer.json").unlink()
    (other / "tokenizer_config.json").unlink()
    with monkeypatch.context() as without_wandb:  # as in the Docker image, which does not install it
        without_wandb.setitem(sys.modules, "wandb", None)  # what find_spec takes for a module that is not there
        with pytest.raises(Unavailable, match="stage sft: wandb_project is set, but wandb is not installed here"):
            check_inputs(Settings(data=str(data), seq_length=65536, wandb_project="p"), str(model), "sft")
    # Stage 2 takes the tokenizer from stage 1's export: one run with export_hf: false left none.
    (tmp_path / "sft_zero" / "checkpoints").mkdir(parents=True)
    with pytest.raises(InputError, match=f"stage sft: {tmp_path / 'sft_zero' / 'hf'} has no tokenizer"):
        check_inputs(Settings(data=str(data), seq_length=65536), str(tmp_path / "sft_zero"), "sft")
    # Rows of 65536 tokens under a model, plan and context split built for 131072: the plan warns, launch refuses.
    longer = Settings(data=str(data), seq_length=131072)
    with pytest.raises(InputError, match=f"stage sft: seq_length is 131072, but {data} was packed at 65536 tokens"):
        check_inputs(longer, str(model), "sft")
    assert any("was packed at 65536" in w for w in plan_stage("sft", longer, str(model), mfu=0.45).warnings)
    (other / "config.json").write_text(json.dumps({**QWEN25_CODER_32B, "model_type": "llama"}))
    with pytest.raises(InputError, match=f"stage sft: init {other}: expected a qwen2 config, got model_type='llama'"):
        check_inputs(Settings(data=str(data), seq_length=65536), str(other), "sft")
    (other / "config.json").unlink()
    with pytest.raises(MissingInput, match="neither a Hugging Face folder .* nor a train stage's folder"):
        check_inputs(Settings(data=str(data), seq_length=65536), str(other), "sft")
    for missing_data, init in ((data / "nope", model), (data, tmp_path / "sft_zero/hf")):
        with pytest.raises(MissingInput, match="stage sft cannot start: .* does not exist; run the stages that make"):
            check_inputs(Settings(data=str(missing_data), seq_length=65536), str(init), "sft")
    with pytest.raises(MissingInput, match=f"{model}: no stats.json"):
        check_inputs(Settings(data=str(model), seq_length=65536), str(model), "sft")


def test_serving_memory_of_the_published_configs():
    from swehero.model.folder import known_config
    from swehero.train.plan import kv_cache_bytes_per_token, serving_memory

    coder7b = known_config("Qwen/Qwen2.5-Coder-7B-Instruct")
    coder32b = known_config("Qwen/Qwen2.5-Coder-32B-Instruct")
    # Keys and values of one token: 2 x 28 layers x 4 KV heads x 128 x 2 bytes; 2 x 64 x 8 x 128 x 2 for 32B.
    assert kv_cache_bytes_per_token(coder7b, 1) == 57344 and kv_cache_bytes_per_token(coder32b, 1) == 262144
    assert kv_cache_bytes_per_token(coder7b, 8) == kv_cache_bytes_per_token(coder7b, 4)  # 4 heads: replicated
    one = serving_memory(coder32b, tensor_parallel=1, max_model_len=131072, concurrent_sequences=1)
    assert one.weights_gib == pytest.approx(32.76e9 * 2 / 2**30, rel=1e-3) and one.kv_cache_gib == 32.0
    assert not one.fits and one.budget_gib == pytest.approx(72.0)  # 61 + 32 + 3 GiB > 90% of 80 GiB
    two = serving_memory(coder32b, tensor_parallel=2, max_model_len=131072, concurrent_sequences=1)
    assert two.fits and two.kv_cache_gib == 16.0
    assert not serving_memory(coder32b, 2, 131072, concurrent_sequences=4).fits
    assert serving_memory(coder32b, 2, 131072, 4, kv_dtype_bytes=1).kv_cache_gib == 32.0


def test_intervals_and_kept_checkpoints_below_one_fail_validation(tmp_path):
    from swehero.recipe.config import load_recipe
    from swehero.recipe.loader import RecipeError

    (tmp_path / "data").mkdir()
    path = tmp_path / "r.yaml"
    path.write_text(f"""\
name: r
run_dir: {tmp_path / "run"}
stages:
  - name: sft
    kind: train
    data: {tmp_path / "data"}
    init: {tmp_path / "data"}
    checkpoint: {{every: 0, keep_last: 0}}
    log_every: 0
    eval_every: -1
""")
    with pytest.raises(RecipeError) as info:
        load_recipe(path, ())
    # Each was a ZeroDivisionError in every worker after step 1, or (keep_last 0) silently kept every checkpoint.
    assert info.value.problems == [
        f"{path}:8: stages[0].checkpoint.every: must be >= 1, got 0",
        f"{path}:8: stages[0].checkpoint.keep_last: must be >= 1, got 0",
        f"{path}:9: stages[0].log_every: must be >= 1, got 0",
        f"{path}:10: stages[0].eval_every: must be >= 0, got -1",
    ]


def _dataset(folder, train: int, seq_length: int = 65536):
    folder.mkdir()
    (folder / "stats.json").write_text(json.dumps({
        "seq_length": seq_length, "samples": {"train": train, "valid": 3}, "trajectories": {"kept": 3},
        "tokens": 3 * 40000}))
    return folder


def _model(folder, **config):
    folder.mkdir(parents=True)
    config = {**QWEN2_CONFIG, **config}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer.json").write_text("{}")
    _names_only_weights(folder, config)
    return folder


def _names_only_weights(folder, config: dict, leave_out: tuple[str, ...] = ()) -> None:
    """A `model.safetensors` with every tensor `config` needs but `leave_out`, of its shape, in a sparse file (tens
    of GB of a 32B model take no disk): the launch checks read only the header."""
    from sparse_weights import write_sparse_safetensors

    from swehero.model.qwen2 import hf_weight_shapes

    write_sparse_safetensors(folder / "model.safetensors", {name: shape for name, shape in
                                                            hf_weight_shapes(config).items() if name not in leave_out})


def test_an_empty_training_split_is_refused_at_launch_and_the_plan_says_why(tmp_path):
    from swehero.errors import InputError
    from swehero.train.plan import plan_stage
    from swehero.train.stage import check_inputs

    data, model = _dataset(tmp_path / "data", train=0), _model(tmp_path / "model")
    s = Settings(data=str(data), seq_length=65536, gpus_per_node=8, parallel=ParallelConfig(tensor=8))
    with pytest.raises(InputError, match=f"^stage sft: {data / 'stats.json'}: the training split is empty "
                                         r"\(0 packed samples, 3 in validation\): prepare more trajectories"):
        check_inputs(s, str(model), "sft")
    plan = plan_stage("sft", s, str(model), mfu=0.45)
    assert plan.steps is None and plan.warnings[-1] == (
        f"{data / 'stats.json'}: the training split is empty (0 packed samples, 3 in validation): prepare more "
        "trajectories or a smaller valid_fraction")
    assert not any("steps unknown" in w for w in plan.warnings)


def test_a_layout_the_model_cannot_take_is_refused_at_launch_in_one_line(tmp_path):
    from swehero.errors import InputError, MissingInput
    from swehero.train.stage import check_inputs

    data, model = _dataset(tmp_path / "data", train=64), _model(tmp_path / "model", num_attention_heads=28,
                                                                 num_key_value_heads=4, num_hidden_layers=28)
    good = Settings(data=str(data), seq_length=65536, gpus_per_node=8, parallel=ParallelConfig(tensor=4))
    check_inputs(good, str(model), "sft")
    for bad, message in [
        (dict(parallel=ParallelConfig(tensor=8)), "tensor 8 does not divide num_attention_heads 28"),
        (dict(gpus_per_node=2, parallel=ParallelConfig(), global_batch_size=3),
         r"global_batch_size 3 is not divisible by the data-parallel size 2 \(world 2 / model-parallel 1\)"),
        (dict(nodes=3, parallel=ParallelConfig(tensor=4, pipeline=3)), "pipeline 3 does not divide "
                                                                       "num_hidden_layers 28"),
    ]:
        with pytest.raises(InputError, match=f"^stage sft: bad parallel layout: {message}$"):
            check_inputs(dataclasses.replace(good, **bad), str(model), "sft")
    # Stage 2: the config an earlier stage's newest checkpoint keeps, which the workers would build.
    stage_one = tmp_path / "sft_zero"
    (stage_one / "hf").mkdir(parents=True)
    (stage_one / "hf" / "tokenizer.json").write_text("{}")
    (stage_one / "checkpoints").mkdir()
    with pytest.raises(MissingInput, match="stage sft cannot start: .*sft_zero: neither a Hugging Face folder nor a "
                                           "train stage folder with checkpoints"):
        check_inputs(good, str(stage_one), "sft")
    (stage_one / "checkpoints" / "step-4").mkdir()
    (stage_one / "checkpoints" / "step-4" / "hf_config.json").write_text(
        json.dumps({**QWEN25_CODER_32B, "num_attention_heads": 30}))
    with pytest.raises(InputError, match="^stage sft: bad parallel layout: tensor 4 does not divide num_attention_heads 30"):
        check_inputs(good, str(stage_one), "sft")
