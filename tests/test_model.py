"""Megatron-Core Qwen2 against transformers, as real gloo multi-process jobs on CPU (fp32, tiny random models).

One 4-rank job runs every layout (TP=1 runs as 4 data-parallel replicas), so the processes start once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from model_jobs import YARN, hf_logits, make_hf, param_count_job, parity_job  # noqa: E402

from swehero.model import cpu_backend  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # every test runs Megatron in spawned processes

TOL = 1e-5
LAYOUTS = [(1, 1), (2, 1), (1, 2), (2, 2)]
DOCS = [30, 45, 25]
YARN_DOCS = [90, 20, 40]  # the first document runs past the original 64 positions


def _packed_case(name: str, hf_dir: Path, docs: list[int], layouts: list, seed: int) -> dict:
    torch.manual_seed(seed)
    pieces = [torch.randint(0, 300, (1, n)) for n in docs]
    ref = torch.cat([hf_logits(hf_dir, p) for p in pieces], dim=1)
    whole = hf_logits(hf_dir, torch.cat(pieces, dim=1))
    # Without document masking the later documents' logits would differ: the check can fail.
    assert (whole - ref).abs().max() > 1e-2
    return dict(name=name, hf_dir=hf_dir, layouts=layouts, tokens=torch.cat(pieces, dim=1), ref=ref, docs=docs)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, float]:
    root = tmp_path_factory.mktemp("model")
    plain = make_hf(root / "plain", seed=1)
    yarn = make_hf(root / "yarn", seed=1, rope_scaling=YARN)  # the same weights
    tied = make_hf(root / "tied", seed=3, tie_word_embeddings=True)
    tokens = torch.randint(0, 300, (2, 100), generator=torch.Generator().manual_seed(0))
    plain_ref, yarn_ref = hf_logits(plain, tokens), hf_logits(yarn, tokens)
    cases = [
        dict(name="plain", hf_dir=plain, layouts=LAYOUTS, tokens=tokens, ref=plain_ref),
        dict(name="yarn", hf_dir=yarn, layouts=LAYOUTS, tokens=tokens, ref=yarn_ref),
        dict(name="tied", hf_dir=tied, layouts=[(1, 1), (2, 2)], tokens=tokens, ref=hf_logits(tied, tokens)),
        _packed_case("packed", plain, DOCS, [(1, 1), (2, 2), (1, 4)], seed=4),
        _packed_case("packed-yarn", yarn, YARN_DOCS, [(2, 2), (1, 4)], seed=5),
        {**_packed_case("middle-stages-unpacked", plain, DOCS, [(1, 4)], seed=4), "drop_middle_boundaries": True},
        # Conversion: save a dist checkpoint at TP=2xPP=2, reload at PP=4 and TP=1, export each to HF.
        dict(name="ckpt", hf_dir=plain, layouts=[(2, 2), (1, 4), (1, 1)], tokens=tokens,
             ref=hf_logits(plain, tokens), ckpt=root / "ckpt-plain" / "ckpt"),
        dict(name="ckpt-tied", hf_dir=tied, layouts=[(2, 2), (1, 1)], tokens=tokens,
             ref=hf_logits(tied, tokens), ckpt=root / "ckpt-tied" / "ckpt"),
    ]
    out = root / "results.json"
    cpu_backend.launch(parity_job, 4, cases, out)
    found = json.loads(out.read_text())
    found["_root"] = str(root)
    found["_yarn_vs_plain"] = (yarn_ref - plain_ref).abs().max().item()
    return found


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: f"tp{layout[0]}pp{layout[1]}")
@pytest.mark.parametrize("name", ["plain", "yarn"])
def test_logits_match_transformers(results, name, layout):
    assert results[f"{name}@tp{layout[0]}pp{layout[1]}"] < TOL


def test_yarn_changes_the_logits_of_the_same_weights(results):
    # So Megatron matching transformers' YaRN logits (above) shows it applies YaRN: without it, it would give the
    # plain logits, this far from them.
    root = Path(results["_root"])
    plain, yarn = (load_file(root / name / "model.safetensors") for name in ("plain", "yarn"))
    assert plain.keys() == yarn.keys() and all(torch.equal(plain[k], yarn[k]) for k in plain)
    assert results["_yarn_vs_plain"] > 1e-2


@pytest.mark.parametrize("key", ["tied@tp1pp1", "tied@tp2pp2"])
def test_tied_embeddings(results, key):
    assert results[key] < TOL


@pytest.mark.parametrize("key", ["packed@tp1pp1", "packed@tp2pp2", "packed@tp1pp4",
                                 "packed-yarn@tp2pp2", "packed-yarn@tp1pp4"])
def test_packed_documents_equal_separate_documents(results, key):
    assert results[key] < TOL


def test_packed_documents_at_tp2_pp4_and_tied_embeddings_at_pp4(tmp_path):
    """8 ranks: every layer on its own pipeline stage, so two middle stages get neither the embedding nor the
    head, and with tied embeddings the head's copy of the embedding lives three stages after it."""
    plain = make_hf(tmp_path / "plain", seed=1)
    tied = make_hf(tmp_path / "tied", seed=3, tie_word_embeddings=True)
    cases = [_packed_case("packed", plain, DOCS, [(2, 4)], seed=4),
             _packed_case("packed-tied", tied, DOCS, [(1, 4), (2, 4)], seed=4)]
    cpu_backend.launch(parity_job, 8, cases, tmp_path / "out.json")
    found = json.loads((tmp_path / "out.json").read_text())
    assert found.keys() == {"packed@tp2pp4", "packed-tied@tp1pp4", "packed-tied@tp2pp4"}
    assert all(diff < TOL for diff in found.values()), found


def test_middle_stages_without_boundaries_would_be_caught(results):
    assert results["middle-stages-unpacked@tp1pp4"] > 1e-2


@pytest.mark.parametrize("key", ["ckpt@tp1pp4", "ckpt@tp1pp1", "ckpt-tied@tp1pp1"])
def test_checkpoint_loads_at_another_layout(results, key):
    assert results[key] < TOL


@pytest.mark.parametrize("case,source,layouts", [
    ("ckpt-plain", "plain", ["tp2pp2", "tp1pp4", "tp1pp1"]),
    ("ckpt-tied", "tied", ["tp2pp2", "tp1pp1"]),
])
def test_round_trip_is_bit_exact(results, case, source, layouts):
    from transformers import Qwen2ForCausalLM

    root = Path(results["_root"])
    original = load_file(root / source / "model.safetensors")
    for layout in layouts:
        export = root / case / "export" / layout
        index = json.loads((export / "model.safetensors.index.json").read_text())
        exported = {}
        for file in sorted(set(index["weight_map"].values())):
            exported.update(load_file(export / file))
        assert exported.keys() == original.keys()
        # one data-parallel replica wrote it (tp1pp1 ran on 4 ranks): counted once, as transformers' index counts
        assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in exported.values())
        for name, tensor in original.items():
            assert torch.equal(exported[name], tensor), f"{layout}: {name}"
    # transformers loads the export (config copied from the source, as `mcore-to-hf --like` does).
    (export / "config.json").write_text((root / source / "config.json").read_text())
    Qwen2ForCausalLM.from_pretrained(export)


def test_qwen25_coder_7b_layer_shapes(tmp_path):
    """Exact 7B layer shapes, 2 layers (vocabulary cut to 1024 to spare RAM; its shape is covered below)."""
    shapes = json.loads((Path(__file__).parents[1] / "swehero/model/configs/qwen2.5-coder-7b-instruct.json").read_text())
    keep = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "rope_theta",
            "rms_norm_eps", "max_position_embeddings")
    hf_dir = make_hf(tmp_path / "hf", seed=6, num_hidden_layers=2, vocab_size=1024, head_dim=128,
                     **{k: shapes[k] for k in keep})
    tokens = torch.randint(0, 1024, (1, 48), generator=torch.Generator().manual_seed(0))
    case = dict(name="7b-shapes", hf_dir=hf_dir, layouts=[(1, 1)], tokens=tokens, ref=hf_logits(hf_dir, tokens))
    cpu_backend.launch(parity_job, 1, [case], tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text())["7b-shapes@tp1pp1"] < TOL


# Parameter totals of the published safetensors checkpoints (the model cards round them to 7.61B / 14.7B /
# 32.5B; the 32B card's figure is low, its safetensors hold 32.76B).
PUBLISHED = {
    "qwen2.5-coder-7b-instruct.json": 7_615_616_512,
    "qwen2.5-coder-14b-instruct.json": 14_770_033_664,
    "qwen2.5-coder-32b-instruct.json": 32_763_876_352,
}


def test_real_configs_build_on_meta_with_published_sizes(tmp_path):
    configs = Path(__file__).parents[1] / "swehero/model/configs"
    cpu_backend.launch(param_count_job, 1, [configs / name for name in PUBLISHED], tmp_path / "counts.json")
    assert json.loads((tmp_path / "counts.json").read_text()) == PUBLISHED
