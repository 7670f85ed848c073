"""The PNG figures written beside reports and summaries: matplotlib without a display (cluster nodes have none),
each file written whole, so that a reader never sees half a picture and a killed run leaves the previous one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from swehero.jsonio import atomic_path


@contextmanager
def figure(path: Path, *grid: int, **options: Any) -> Iterator[Any]:
    """The axes of `plt.subplots(*grid, **options)` for the block to draw on; laid out and saved at `path` after it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*grid, **options)
    try:
        yield axes
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
