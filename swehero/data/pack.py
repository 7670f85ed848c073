"""Streaming best-fit packing of variable-length documents into fixed-length sequences.

A document goes into the open sequence with the least room that still fits it (best fit), or opens a new one.
At most `max_open` sequences are open at once, so memory stays bounded however long the corpus is: when one
more would be needed, the fullest open sequence is closed. Output order depends only on input order, so
packing is deterministic.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass
class Bin:
    """One packed sequence being filled."""

    used: int = 0
    """Tokens placed so far."""
    items: list = field(default_factory=list)
    """The packed documents, in placement order."""
    serial: int = 0
    """Opening order, the tie-breaker that keeps packing deterministic."""


class BestFitPacker:
    def __init__(self, capacity: int, max_open: int = 256) -> None:
        self.capacity = capacity
        self.max_open = max_open
        self._open: list[tuple[int, int, Bin]] = []  # sorted by (room left, serial)
        self._serial = 0

    def add(self, item, length: int) -> list[Bin]:
        """Place one document of `length` tokens (<= capacity); returns the sequences this closed."""
        if not 0 < length <= self.capacity:
            raise ValueError(f"document of {length} tokens does not fit sequences of {self.capacity}")
        closed: list[Bin] = []
        i = bisect.bisect_left(self._open, (length, -1))
        if i < len(self._open):
            _, _, b = self._open.pop(i)
        else:
            if len(self._open) >= self.max_open:
                closed.append(self._open.pop(0)[2])  # the fullest: least room left
            b = Bin(serial=self._serial)
            self._serial += 1
        b.items.append(item)
        b.used += length
        room = self.capacity - b.used
        if room == 0:
            closed.append(b)
        else:
            bisect.insort(self._open, (room, b.serial, b))
        return closed

    def flush(self) -> list[Bin]:
        """Close every open sequence, in opening order."""
        bins = sorted((b for _, _, b in self._open), key=lambda b: b.serial)
        self._open = []
        return bins
