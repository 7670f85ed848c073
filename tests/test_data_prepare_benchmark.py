"""benchmarks/data_prepare.py runs with a scaled corpus (distinct trajectories, which `prepare` keeps), says why
`prepare` failed when it does, and leaves no temporary folder behind."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests_paths import qwen

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "data_prepare.py"


def _data_prepare_module():
    spec = importlib.util.spec_from_file_location("data_prepare_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_failed_prepare_shows_its_reason(tmp_path):
    bench = _data_prepare_module()
    corpus = tmp_path / "corpus.jsonl"
    bench.write_corpus(corpus, 2)
    corpus.write_text(corpus.read_text() + "{not json\n" * 2)  # more than 1% of the rows rejected
    with pytest.raises(RuntimeError, match="malformed_json: 2"):
        bench.run_prepare(corpus, str(qwen()), tmp_path / "out", 32768, 1)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_scaled_run_completes_and_removes_its_temporary_folder(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path),
           "PYTHONPATH": f"{Path(__file__).parents[1]}:{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--tokenizer", str(qwen()), "--trajectories", "3", "--scale", "2",
                           "--repeats", "1", "--workers", "1"], capture_output=True, text=True, timeout=580, env=env)
    assert done.returncode == 0 and "2x corpus" in done.stdout, done.stdout + done.stderr[-3000:]
    assert not list(tmp_path.glob("swehero-bench-*"))
