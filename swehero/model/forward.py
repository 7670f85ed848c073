"""Forward-only logits through Megatron's pipeline schedule (parity checks, evaluation)."""

from __future__ import annotations

import torch
from megatron.core import parallel_state, tensor_parallel
from megatron.core.models.gpt import GPTModel
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.pipeline_parallel import get_forward_backward_func


def forward_logits(model: GPTModel, tokens: torch.Tensor, position_ids: torch.Tensor | None = None,
                   packed: PackedSeqParams | None = None) -> torch.Tensor | None:
    """Full-vocabulary (padded) logits [batch, seq, vocab] on the last pipeline stage, None on the others.

    Every rank passes the same `tokens` and `packed`: middle stages need the document boundaries too. Packed rows
    are one row ([1, total tokens]), with `packed_seq_params(doc_lengths)` on the tokens' device.
    """
    batch, seq = tokens.shape
    if position_ids is None:
        position_ids = torch.arange(seq, device=tokens.device).unsqueeze(0).expand(batch, seq)

    def step(data_iterator, chunk):
        output = chunk(tokens, position_ids, None, packed_seq_params=packed)

        def gather(output_tensor, non_loss_data=True):
            return tensor_parallel.gather_from_tensor_model_parallel_region(output_tensor)

        return output, gather

    model.eval()
    with torch.no_grad():
        outputs = get_forward_backward_func()(
            forward_step_func=step, data_iterator=iter([None]), model=[model], num_microbatches=1,
            seq_length=seq, micro_batch_size=batch, forward_only=True, collect_non_loss_data=True,
        )
    return outputs[0] if parallel_state.is_pipeline_last_stage() else None
