"""Context parallelism's batch path (per-document padding, TE's load-balanced split) and its loss reduction.

The attention itself needs Transformer Engine (not on this machine): what runs here is everything around it.
"""

from dataclasses import replace

import pytest
import torch

from swehero.train.context import pad_documents, partition_indices, shard
from swehero.train.data import PackedBatch


def row(doc_lengths: list[int], seed: int = 0) -> PackedBatch:
    g = torch.Generator().manual_seed(seed)
    n = sum(doc_lengths)
    return PackedBatch(tokens=torch.randint(1, 100, (1, n), generator=g), labels=torch.randint(1, 100, (1, n), generator=g),
                       loss_mask=(torch.rand(1, n, generator=g) < 0.6).float(),
                       position_ids=torch.cat([torch.arange(d) for d in doc_lengths])[None], doc_lengths=doc_lengths)


def test_split_follows_te_order():
    # Documents padded to multiples of 2 x cp = 4: [8, 12, 4]; chunks of 2, 3 and 1 tokens.
    # TE's thd_get_partitioned_indices: rank r takes chunks r and 2cp-1-r of every document.
    assert partition_indices([8, 12, 4], cp=2, rank=0).tolist() == [0, 1, 6, 7, 8, 9, 10, 17, 18, 19, 20, 23]
    assert partition_indices([8, 12, 4], cp=2, rank=1).tolist() == [2, 3, 4, 5, 11, 12, 13, 14, 15, 16, 21, 22]
    assert partition_indices([8], cp=4, rank=1).tolist() == [1, 6]


def test_padding_adds_untrained_tokens_at_each_document_end():
    batch = row([5, 9, 2])
    padded = pad_documents(batch, 4)
    assert padded.padded_lengths == [8, 12, 4] and padded.doc_lengths == [5, 9, 2]
    assert padded.tokens.shape == (1, 24)
    for start, new_start, n, target in ((0, 0, 5, 8), (5, 8, 9, 12), (14, 20, 2, 4)):
        for name in ("tokens", "labels", "loss_mask", "position_ids"):
            assert torch.equal(getattr(padded, name)[:, new_start:new_start + n], getattr(batch, name)[:, start:start + n])
        assert padded.loss_mask[0, new_start + n:new_start + target].sum() == 0
    assert pad_documents(batch, 1).tokens.equal(batch.tokens)


def test_the_row_is_padded_at_its_last_document_to_a_multiple():
    padded = pad_documents(row([5, 9, 2]), 4, row_multiple=16)
    assert padded.padded_lengths == [8, 12, 12] and padded.tokens.shape == (1, 32)
    assert padded.loss_mask[0, 20 + 2:].sum() == 0


@pytest.mark.parametrize("cp,tp", [(2, 1), (4, 1), (2, 4), (4, 8)])
def test_ranks_together_hold_the_padded_row_once(cp, tp):
    batch = row([37, 100, 3, 116])
    padded = pad_documents(batch, 2 * cp, row_multiple=16 * cp * tp)
    shards = [shard(batch, cp, r, tp) for r in range(cp)]
    assert all(s.tokens.shape[1] == padded.tokens.shape[1] // cp for s in shards)
    order = torch.cat([partition_indices(padded.padded_lengths, cp, r) for r in range(cp)])
    assert sorted(order.tolist()) == list(range(padded.tokens.shape[1]))
    for name in ("tokens", "labels", "loss_mask", "position_ids"):
        rebuilt = torch.empty_like(getattr(padded, name))
        rebuilt[:, order] = torch.cat([getattr(s, name) for s in shards], dim=1)
        assert torch.equal(rebuilt, getattr(padded, name)), name
    # Every rank keeps the whole row's boundaries: attention needs them.
    assert all(s.doc_lengths == batch.doc_lengths and s.padded_lengths == padded.padded_lengths for s in shards)


@pytest.mark.parametrize("docs", [[1001, 3000, 4191], [1, 2, 3, 4, 5, 6, 7, 8191], [8192]])
@pytest.mark.parametrize("cp,tp", [(2, 2), (2, 4), (4, 8), (8, 8)])
def test_each_rank_share_splits_again_over_the_tensor_ranks_in_multiples_of_16(docs, cp, tp):
    """With sequence parallelism Megatron splits each context-parallel rank's tokens over the tensor-parallel ranks
    and asserts they divide them; FP8 matrix products want multiples of 16. Documents padded only to 2 x cp gave
    [1001, 3000, 4191] at cp 2 shares of 4098 tokens, which 4 ranks do not divide."""
    for r in range(cp):
        mine = shard(row(docs), cp, r, tp)
        assert mine.tokens.shape[1] % (16 * tp) == 0
        assert all(n % (2 * cp) == 0 for n in mine.padded_lengths) and mine.doc_lengths == docs
        assert mine.loss_mask.sum() > 0 or r > 0 or sum(docs) < 2 * cp


@pytest.mark.parametrize("tensor,pipeline,context", [(1, 2, 2), (4, 2, 2), (8, 4, 2)])
def test_layouts_with_context_and_pipeline_parallelism_build_megatrons_config(tensor, pipeline, context):
    """A pipeline of context-parallel ranks sends rows of varying length (their padding differs), which megatron-core
    0.19 refused beside its default MoE dispatcher, in a model with no experts too: the run died on every rank."""
    from swehero.model.provider import transformer_config
    from swehero.train.config import ParallelConfig, Settings
    from swehero.train.model_setup import model_overrides

    from model_jobs import TINY

    hf = {**TINY, "num_attention_heads": 8, "num_key_value_heads": 8, "model_type": "qwen2"}
    layout = ParallelConfig(tensor=tensor, pipeline=pipeline, context=context, sequence_parallel=tensor > 1)
    config = transformer_config(hf, layout, torch.bfloat16,
                                **model_overrides(Settings(data="d", parallel=layout), cuda=True))
    assert config.variable_seq_lengths and config.context_parallel_size == context


def _token_losses(batch: PackedBatch) -> torch.Tensor:
    """A stand-in per-token loss that depends on the token and its label."""
    return (batch.tokens.float() * 0.01 + batch.labels.float() * 0.001) * batch.loss_mask


def loss_reduction_job(rank: int, out: str) -> None:
    from megatron.core import parallel_state

    from swehero.train.step import global_mean_loss

    parallel_state.initialize_model_parallel(context_parallel_size=2)
    cp_rank, dp_rank = parallel_state.get_context_parallel_rank(), parallel_state.get_data_parallel_rank()
    batches = [row([29, 70, 29], seed=dp) for dp in range(2)]  # one row per data-parallel rank
    mine = shard(batches[dp_rank], 2, cp_rank)
    mean = global_mean_loss(float(_token_losses(mine).sum()), float(mine.loss_mask.sum()), torch.device("cpu"))
    torch.save(mean, f"{out}/rank{rank}.pt")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_loss_is_the_mean_over_the_whole_global_batch_across_context_and_data_ranks(tmp_path):
    from swehero.model.cpu_backend import launch

    launch(loss_reduction_job, 4, str(tmp_path))
    batches = [row([29, 70, 29], seed=dp) for dp in range(2)]
    expected = sum(float(_token_losses(b).sum()) for b in batches) / sum(float(b.loss_mask.sum()) for b in batches)
    means = [torch.load(tmp_path / f"rank{r}.pt") for r in range(4)]
    assert means == pytest.approx([expected] * 4, rel=1e-6)  # float32 sums per rank


DOCS = [29, 70, 29]


def front_loaded(seed: int, rate: float) -> PackedBatch:
    """A row whose trained tokens (about `rate` of them) lie mostly in each document's first quarter, which
    context-parallel rank 0 of 2 holds: the ranks' token counts differ, not only the micro-batches'."""
    batch = row(DOCS, seed)
    lengths = torch.tensor(DOCS).repeat_interleave(torch.tensor(DOCS))
    early = batch.position_ids[0] < lengths / 4
    chance = torch.where(early, min(4 * rate, 1.0), rate / 4)
    return replace(batch, loss_mask=(torch.rand(chance.shape, generator=torch.Generator().manual_seed(seed))
                                     < chance).float()[None])


# Two micro-batches per data-parallel rank, of 53 and 13 trained tokens on one, 6 and 7 on the other; context-parallel
# rank 0 holds 41 of the 53, 12 of the 13, all 7 of the last.
ROWS = [[front_loaded(0, 0.8), front_loaded(1, 0.08)], [front_loaded(2, 0.04), front_loaded(3, 0.02)]]


class TokenLossModel(torch.nn.Module):
    """Stands in for the GPT model where the training step calls it: per-token losses of a token, its label and
    two weight tables. No attention (context parallelism's needs Transformer Engine), so a token's loss does not
    depend on which rank holds its neighbours and the whole rows give the reference."""

    def __init__(self, config) -> None:
        from megatron.core.enums import ModelType

        super().__init__()
        self.config, self.model_type = config, ModelType.encoder_or_decoder  # what the schedules read
        g = torch.Generator().manual_seed(0)
        self.inputs, self.outputs = (torch.nn.Parameter(torch.randn(100, 8, generator=g)) for _ in range(2))

    def set_input_tensor(self, tensor) -> None:
        """Where a pipeline stage receives the previous one's activations; this model is one stage."""

    def forward(self, tokens, position_ids, attention_mask, labels, packed_seq_params):
        return token_losses(self.inputs, self.outputs, tokens, labels)


def token_losses(inputs: torch.Tensor, outputs: torch.Tensor, tokens: torch.Tensor, labels: torch.Tensor):
    return torch.nn.functional.softplus((inputs[tokens] * outputs[labels]).sum(-1))


def gradient_reduction_job(rank: int, out: str) -> None:
    from megatron.core.transformer import TransformerConfig

    from swehero.train import model_setup
    from swehero.train.config import ParallelConfig, Settings
    from swehero.train.step import run_batches

    s = Settings(data="", precision="fp32", gpus_per_node=4, distributed_optimizer=False, device="cpu",
                 parallel=ParallelConfig(context=2))
    env = model_setup.initialize(s, seed=0)
    config = TransformerConfig(num_layers=1, hidden_size=8, num_attention_heads=1,
                               **model_setup.model_overrides(s, cuda=False))
    model = model_setup.wrap([TokenLossModel(config)], s, cuda=False)
    run_batches(model, ROWS[env.dp_rank], sum(DOCS), env.device, forward_only=False, fused_ce=False)
    torch.save({name: p.main_grad for name, p in model_setup.model_chunks(model)[0].named_parameters()}, f"{out}/rank{rank}.pt")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_gradient_is_the_mean_over_the_whole_global_batch_across_context_and_data_ranks(tmp_path):
    from swehero.model.cpu_backend import launch

    launch(gradient_reduction_job, 4, str(tmp_path))
    reference = TokenLossModel(config=None)
    rows = [r for rank in ROWS for r in rank]
    total = sum((token_losses(reference.inputs, reference.outputs, r.tokens, r.labels) * r.loss_mask).sum() for r in rows)
    (total / sum(r.loss_mask.sum() for r in rows)).backward()
    for rank in range(4):
        found = torch.load(tmp_path / f"rank{rank}.pt")
        for name, param in reference.named_parameters():
            torch.testing.assert_close(found[name], param.grad, rtol=1e-5, atol=1e-7 * param.grad.abs().max())
