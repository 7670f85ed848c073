"""The files a selection writes (`select.json`, `.md`, `.png`), without a verifier: scores given by hand."""

from pathlib import Path

from swehero.eval.attempts import Attempt
from swehero.eval.select import write_selection


def _write(out: Path, scores: tuple[float, float]) -> dict[str, str]:
    attempts = {"i": [Attempt(run, "i", out / f"t{run}.json", f"diff {run}", run == 1) for run in (0, 1)]}
    return write_selection(["i"], attempts, {(run, "i"): {"score": s} for run, s in enumerate(scores)},
                           {"model": "v", "seq_length": 8, "format": "f"}, ["f"], out, progress=lambda _: None)


def test_selection_files_are_replaced_whole_under_a_reader(tmp_path):
    """A reader that opened them before a selection rewrote them reads the old ones whole, not the new ones half
    written."""
    paths = _write(tmp_path, (0.9, 0.1))
    readers = {name: open(path, "rb") for name, path in paths.items()}
    old = {name: Path(path).read_bytes() for name, path in paths.items()}
    _write(tmp_path, (0.1, 0.9))  # now the other attempt is selected
    for name, reader in readers.items():
        with reader:
            assert reader.read() == old[name], name
        assert Path(paths[name]).read_bytes() != old[name], name
    assert not list(tmp_path.glob(".*.tmp*"))
