"""One training step's gradient against plain PyTorch, on a global batch whose micro-batches and data-parallel
ranks hold very different numbers of trained tokens.

The reference (`train_jobs.reference_step`) runs the same weights in transformers, each trajectory alone, scores
position t on token t + 1 exactly where token t + 1 is an assistant token (found from the token ids, not from
the data plane's mask), and divides the sum of those token losses by their count over the whole global batch.
Megatron's side is the training code itself on 2 gloo processes: the prepared dataset, its loss mask and label
shift, the loss, the pipeline schedule and Megatron's gradient finalisation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_jobs import (  # noqa: E402
    assert_gradients_close, assistant_tokens, gradient_job, hf_weights, packed_documents, reference_step, settings,
    trajectory,
)

from swehero.train.config import ParallelConfig  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SEQ = 1024
LAYOUTS = ["dp2", "pp2-vpp2"]


@pytest.fixture(scope="module")
def uneven(tmp_path_factory, four_layer_model_dir) -> tuple[Path, list[int]]:
    """A prepared dataset and a global batch of 4 of its packed samples: the first rich in trained tokens (long
    replies), the others poor (long tool outputs, which are not trained). Split over 2 data-parallel ranks, one
    rank's micro-batches differ tenfold and the ranks' totals sevenfold."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from swehero.data.prepare import PrepareConfig, prepare

    folder = tmp_path_factory.mktemp("uneven")
    rows = [trajectory(i, reply_words=150 if i % 3 == 0 else 0, tool_output_lines=30 if i % 3 == 1 else 1)
            for i in range(9)]
    (folder / "trajectories.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    prepare([str(folder / "trajectories.jsonl")], str(four_layer_model_dir), folder / "dataset",
            PrepareConfig(seq_length=SEQ, valid_fraction=0.0, workers=0, seed=0))
    mask = IndexedDataset(str(folder / "dataset" / "train_loss_mask"))
    bounds = mask.document_indices
    trained = [sum(int(mask[j].sum()) for j in range(bounds[i], bounds[i + 1])) for i in range(len(bounds) - 1)]
    order = sorted(range(len(trained)), key=trained.__getitem__)
    samples = [order[-1], *order[:3]]
    assert trained[samples[0]] > 10 * trained[samples[1]], trained
    return folder / "dataset", samples


@pytest.fixture(scope="module")
def step(tmp_path_factory, uneven, four_layer_model_dir) -> dict:
    from swehero.model import cpu_backend

    dataset, samples = uneven
    base = settings(dataset, seq_length=SEQ, gpus_per_node=2, distributed_optimizer=False)
    layouts = {"dp2": base, "pp2-vpp2": settings(dataset, seq_length=SEQ, gpus_per_node=2, distributed_optimizer=False,
                                                parallel=ParallelConfig(pipeline=2, virtual_pipeline=2))}
    out = tmp_path_factory.mktemp("gradients")
    cpu_backend.launch(gradient_job, 2, layouts, four_layer_model_dir, samples, out)
    loss_sum, tokens, gradients = reference_step(four_layer_model_dir, dataset, samples)
    found = {}
    for name in layouts:
        ranks = [json.loads((out / name / f"rank{r}.json").read_text()) for r in range(2)]
        found[name] = {"loss_sum": sum(r["loss_sum"] for r in ranks), "tokens": sum(r["tokens"] for r in ranks),
                       "gradients": hf_weights(out / name)}
    return {"found": found, "loss_sum": loss_sum, "tokens": tokens, "gradients": gradients}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradient_is_the_token_loss_sum_over_the_global_token_count(step, layout):
    # Normalising per micro-batch (or per rank) weights the poor micro-batches' few tokens like the rich one's many.
    assert_gradients_close(step["found"][layout]["gradients"], step["gradients"])


def test_position_t_is_trained_on_token_t_plus_1_where_that_is_an_assistant_token(uneven, four_layer_model_dir,
                                                                                    step):
    from transformers import AutoTokenizer

    from swehero.train.data import PackedSequences

    dataset, samples = uneven
    tokenizer = AutoTokenizer.from_pretrained(four_layer_model_dir)
    data = PackedSequences(dataset, "train")
    for sample in samples:
        batch, start = data[sample], 0
        for ids in packed_documents(dataset, sample):
            end = start + len(ids)
            assert batch.tokens[0, start:end].tolist() == ids
            assert batch.labels[0, start:end - 1].tolist() == ids[1:]
            # The mask the loss applies at position t is whether token t + 1 is the assistant's.
            assert batch.loss_mask[0, start:end - 1].tolist() == [float(a) for a in assistant_tokens(ids, tokenizer)[1:]]
            assert batch.loss_mask[0, end - 1] == 0  # its label is the next trajectory's first token
            start = end
    # End to end: Megatron's loss over the global batch is the reference's, token for token.
    for layout in LAYOUTS:
        assert step["found"][layout]["tokens"] == step["tokens"]
        assert step["found"][layout]["loss_sum"] == pytest.approx(step["loss_sum"], rel=1e-5)
    assert step["tokens"] > 0 and torch.isfinite(torch.tensor(step["loss_sum"]))
