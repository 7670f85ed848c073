"""The CPU backend: CUDA placements redirected, and Megatron-Core training (not just inference) running on gloo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from model_jobs import make_hf, train_job  # noqa: E402

from swehero.model import cpu_backend  # noqa: E402

pytestmark = pytest.mark.slow  # Megatron in spawned processes

CPU_BACKEND_CHECK = """
import torch
from swehero.model import cpu_backend
cpu_backend.enable()
t = torch.zeros(3, device="cuda")
assert t.device.type == "cpu"
assert t.cuda() is t
assert t.to(torch.cuda.current_device()).device.type == "cpu"
assert t.type() == "torch.cuda.FloatTensor" and t.bfloat16().type() == "torch.cuda.BFloat16Tensor"
torch.cuda.manual_seed(1); torch.cuda.synchronize()
state = torch.cuda.get_rng_state(); a = torch.rand(2); torch.cuda.set_rng_state(state)
assert torch.equal(a, torch.rand(2))
print("ok")
"""


def test_cpu_backend_redirects_cuda():
    # A fresh interpreter: enable() changes the process for good.
    repo = Path(__file__).parents[1]
    done = subprocess.run([sys.executable, "-c", CPU_BACKEND_CHECK], cwd=repo, capture_output=True, text=True,
                          env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert done.stdout.strip() == "ok", done.stderr


def test_megatron_trains_on_cpu(tmp_path):
    hf_dir = make_hf(tmp_path / "hf", seed=1)
    cpu_backend.launch(train_job, 4, hf_dir, tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(4)]
    losses = [r["losses"] for r in ranks if r["losses"]]
    assert len(losses) == 2 and losses[0] == losses[1]  # the two last-stage TP ranks
    assert losses[0][2] < losses[0][1] < losses[0][0]
    assert all(r["grad_norms"] == ranks[0]["grad_norms"] for r in ranks) and ranks[0]["grad_norms"][0] > 0
