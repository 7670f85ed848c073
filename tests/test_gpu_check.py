"""benchmarks/gpu_check.sh is ready for the day a GPU is lent: valid bash, and its dry run (every section on the
CPU at toy size: parity, FP8 state through a checkpoint, fused CE, a training step, a vLLM server with the tool
parser) passes, and a failing section says how it failed."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.sh"


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
