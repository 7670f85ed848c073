"""benchmarks/gpu_check.sh is ready for the day a GPU is lent: valid bash, and its dry run (every section on the
CPU at toy size: parity, FP8 state through a checkpoint, fused CE, a training step, a vLLM server with the tool
parser) passes, a failing section says how it failed, a section not run says so, and the sections can fail:
parity on a wrong model, fused CE when the fused version runs out of memory."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "gpu_check.sh"


def test_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_failed_section_reports_its_exit_status():
    run_section = f'source "{SCRIPT}" && section failing 5 bash -c "exit 3"; echo "${{RESULTS[0]}}"'
    done = subprocess.run(["bash", "-c", run_section], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines()[-1].startswith("FAIL  failing") and "(exit 3)" in done.stdout, done.stdout


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_dry_run_passes_every_section():
    pytest.importorskip("vllm")
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=1150,
                          env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHON": sys.executable,
                               "HOME": str(Path.home())})
    summary = done.stdout[done.stdout.index("=== summary"):]
    assert done.returncode == 0, summary + done.stderr[-3000:]
    for section in ("parity", "fp8 resume", "fused CE", "train step", "vLLM serve"):
        assert f"PASS  {section}" in summary, summary
    assert "-> PASS" in done.stdout and "tokens/s" in done.stdout


def _fake_gpu_machine(bin_dir: Path, has_te: bool) -> dict:
    """PATH and PYTHON of a machine whose nvidia-smi answers and whose Python runs every section successfully:
    what the script itself decides (which sections, what the summary says) is then all that is seen."""
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text('#!/bin/sh\necho "NVIDIA H100 80GB HBM3, 81559 MiB, 550.00"\n')
    (bin_dir / "python").write_text(f'#!/bin/sh\ncase "$*" in *find_spec*) echo {int(has_te)};; esac\nexit 0\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHON": str(bin_dir / "python")}


def test_without_transformer_engine_the_summary_names_the_skipped_fp8_sections(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          env=_fake_gpu_machine(tmp_path / "bin", has_te=False))
    summary = done.stdout[done.stdout.index("=== summary"):]
    assert "SKIP  train step fp8 (7B, 4 layers, 8k)  (no transformer_engine)" in summary, summary
    assert "SKIP  fp8 resume (TE scaling state)  (no transformer_engine)" in summary, summary
    assert "PASS  parity (bf16, 7B layers, Megatron local layers)" in summary, summary


def test_with_transformer_engine_the_fp8_sections_run_and_parity_names_te_layers(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          env=_fake_gpu_machine(tmp_path / "bin", has_te=True))
    summary = done.stdout[done.stdout.index("=== summary"):]
    assert "SKIP" not in summary and "PASS  fp8 resume (TE scaling state)" in summary, summary
    assert "PASS  parity (bf16, 7B layers, Transformer Engine layers)" in summary, summary


def _benchmark(script: str, *args: str, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{Path(__file__).parents[1]}:{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_parity_passes_a_correct_bf16_model_and_fails_a_wrong_one():
    """bf16 against fp32 of the same weights, as on the GPU: a correct Megatron model is within the tolerance of
    transformers' own bf16 error, one whose logits are 5% off is not."""
    correct = _benchmark("gpu_check.py", "parity", "--dry-run", timeout=140)
    assert correct.returncode == 0 and "bf16" in correct.stdout and "-> PASS" in correct.stdout, correct.stdout
    wrong = _benchmark("gpu_check.py", "parity", "--dry-run", "--perturb", "0.05", timeout=140)
    assert wrong.returncode == 1 and "final norm x1.05" in wrong.stdout and "-> FAIL" in wrong.stdout, \
        wrong.stdout + wrong.stderr[-2000:]


def test_fp8_states_are_compared_by_what_they_hold_not_their_bytes():
    """Transformer Engine's extra state is a pickled dict in a uint8 tensor; restored, it may pickle its keys in
    another order. Same values in another order are equal, another value or dtype is not."""
    import io
    import pickle

    import torch

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from gpu_check import _equal
    finally:
        sys.path.remove(str(BENCHMARKS))

    def te(state: dict) -> torch.Tensor:
        return torch.frombuffer(bytearray(pickle.dumps(state)), dtype=torch.uint8)

    def te1(state: dict) -> torch.Tensor:  # TE 1.x: torch.save into bytes
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)

    scale, history = torch.tensor([448.0, 1.0]), torch.arange(16.0)
    saved = te({"scale_fwd": scale, "amax_history_fwd": history, "global_fp8_buffer_pos_fwd": 3})
    reordered = te({"global_fp8_buffer_pos_fwd": 3, "amax_history_fwd": history.clone(), "scale_fwd": scale.clone()})
    assert not torch.equal(saved, reordered) and _equal(saved, reordered)
    assert _equal(te1({"scale": scale}), te1({"scale": scale.clone()}))
    assert not _equal(saved, te({"scale_fwd": scale * 2, "amax_history_fwd": history, "global_fp8_buffer_pos_fwd": 3}))
    assert not _equal(saved, te({"scale_fwd": scale.half(), "amax_history_fwd": history, "global_fp8_buffer_pos_fwd": 3}))
    assert not _equal(saved, te({"scale_fwd": scale, "amax_history_fwd": history}))
    assert _equal(torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([1, 2], dtype=torch.uint8))
    assert not _equal(torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([1, 3], dtype=torch.uint8))
    assert _equal(None, None) and not _equal(None, torch.zeros(0))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fused_ce_fails_when_the_fused_version_runs_out_of_memory():
    """A weight of 2**48 elements cannot be allocated anywhere: unfused running out of memory is reported, the
    chunked reference (ours) running out of memory fails the run, after the other shapes are measured."""
    done = _benchmark("fused_ce.py", "--shapes", f"1x{2**24}x{2**24}", "256x32x1024", "--repeats", "1", timeout=280)
    assert done.returncode == 1, done.stdout + done.stderr[-2000:]
    assert "unfused out of memory" in done.stdout and "256x32x1024  reference" in done.stdout, done.stdout
    assert f"FAIL: the fused linear + cross-entropy did not run: reference at 1x{2**24}x{2**24}" in done.stderr, \
        done.stderr[-2000:]


@pytest.mark.timeout(300)
@pytest.mark.slow  # a second or more: the fast tier stays under 2 minutes
def test_train_step_refuses_fewer_steps_than_the_warm_up_before_training():
    done = _benchmark("train_step.py", "--layers", "1", "--seq", "128", "--global-batch", "1", "--steps", "2",
                      timeout=280)
    assert done.returncode == 2 and "--steps 2: at least 3" in done.stderr, done.stderr[-2000:]
