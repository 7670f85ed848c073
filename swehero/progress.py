"""Progress on stderr for work that runs for hours at the paper's scale (reading rows, attempts, mirrors).

On a terminal a tqdm bar redraws in place. Elsewhere (a log file, Slurm's output), where its redraws' carriage
returns would pile up on one line (22 KB of one line for 300 attempts), it writes a line every `LOG_EVERY`
seconds, the first one that late, so that a short run's output holds only its result."""

from __future__ import annotations

import sys
from typing import Any, TextIO

LOG_EVERY = 60.0
"""Seconds between the progress lines written where stderr is not a terminal."""


def progress(desc: str, unit: str, total: int | None = None, **tqdm_options: Any):
    """A tqdm bar (a counter without `total`), as the module says."""
    from tqdm import tqdm

    if sys.stderr.isatty():
        return tqdm(desc=desc, unit=unit, total=total, dynamic_ncols=True, **tqdm_options)
    return tqdm(desc=desc, unit=unit, total=total, file=_Lines(sys.stderr), delay=LOG_EVERY, mininterval=LOG_EVERY,
                maxinterval=LOG_EVERY, **tqdm_options)


class _Lines:
    """A stream that writes each of tqdm's redraws as a line of its own."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        if text := text.strip():
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()
