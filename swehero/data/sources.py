"""Reading rows from local JSONL / JSON / Parquet files, each tagged with where it came from, and recording
rejects.

JSONL is read line by line here rather than through `datasets`, so that one malformed line becomes one reject
with its file:line instead of failing the whole file. Parquet goes through `datasets` in streaming mode (bounded
memory); its rows are tagged `file:row`.
"""

from __future__ import annotations

import json
from collections import Counter
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from swehero.data.trajectory import Reject, validate
from swehero.errors import InputError, MissingInput
from swehero.jsonio import atomic_path, existing_file

MAX_REJECT_FRACTION = 0.01
"""The share of the rows read that every data command (import, render, prepare, verifier data) may reject, by
default, before it fails: a few malformed rows are a dataset's noise, more mean the input is not what the command
was told it is."""

SUFFIXES = (".jsonl", ".json", ".traj", ".parquet")


def expand(paths: list[str]) -> list[Path]:
    """Files named directly, plus the data files inside named folders (sorted, so runs are deterministic), each once
    however often it is named (a folder and a file in it, a path given twice): read twice, its trajectories would
    be trained twice. A folder without any is an error: an empty dataset from a mistyped folder would otherwise pass
    unnoticed."""
    files: dict[Path, Path] = {}  # resolved -> as named, in first-named order
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix in SUFFIXES and f.is_file())
            if not found:
                raise MissingInput(f"{p}: a folder without data files ({', '.join(SUFFIXES)})")
        elif p.is_file():
            found = [p]
        else:
            raise MissingInput(f"{p}: no such file or folder")
        for f in found:
            files.setdefault(f.resolve(), f)
    return list(files.values())


def read_rows(path: Path, parse: bool = True) -> Iterator[tuple[str, Any]]:
    """Yield `(where, row)`; a row that cannot be parsed is yielded as a `Reject` instead of a dict.

    With `parse=False`, JSONL lines come back as unparsed strings (so worker processes can parse them)."""
    path = existing_file(path)
    if path.suffix == ".parquet":
        from datasets import load_dataset

        rows = load_dataset("parquet", data_files=str(path), split="train", streaming=True)
        for i, row in enumerate(rows, 1):
            yield f"{path}:{i}", row
    elif path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                if not parse:
                    yield f"{path}:{i}", line
                    continue
                try:
                    yield f"{path}:{i}", json.loads(line)
                except json.JSONDecodeError as e:
                    yield f"{path}:{i}", Reject("malformed_json", str(e))
    else:  # one JSON document: a list of rows, or a single row (a SWE-agent .traj file)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            yield f"{path}:{e.lineno}", Reject("malformed_json", str(e))
            return
        if isinstance(data, list):
            for i, row in enumerate(data, 1):
                yield f"{path}#{i}", row
        else:
            yield f"{path}", data


def parse_row(row: Any) -> dict:
    """A row from `read_rows(..., parse=False)` as a dict, or raise `Reject`."""
    if isinstance(row, Reject):
        raise row
    if isinstance(row, str):
        try:
            row = json.loads(row)
        except json.JSONDecodeError as e:
            raise Reject("malformed_json", str(e)) from None
    if not isinstance(row, dict):
        raise Reject("not_an_object", type(row).__name__)
    return row


def iter_trajectories(path: Path) -> Iterator[dict]:
    """The canonical trajectories of a file, one at a time, as `validate` returns them (defaults filled in, a null
    `content` made ""). A row that is not one stops the read with `InputError` naming its file:line and the field,
    where importing would have counted it a reject."""
    for where, row in read_rows(Path(path)):
        try:
            record = validate(parse_row(row))
        except Reject as e:
            raise InputError(f"{where}: not a canonical trajectory: {e}") from None
        yield record


@contextmanager
def checked_output(out: Path, max_reject_fraction: float) -> Iterator[tuple[Path, Rejects, Counter]]:
    """For a command writing `out` from the rows it reads: where to write it, its rejects (`<out>.rejects.jsonl`,
    kept whatever happens) and a counter the command counts the rows it read in (`read`). When the block ends,
    more than `max_reject_fraction` of them rejected is an InputError; `out` appears only then, and only whole:
    on an error, Ctrl-C or too many rejects nothing half-written is left beside it."""
    rejects, counts = Rejects(out.with_name(out.stem + ".rejects.jsonl")), Counter()
    try:
        with atomic_path(out) as tmp:
            yield tmp, rejects, counts
            rejects.close()
            rejects.check(counts["read"], max_reject_fraction)
    finally:
        rejects.close()


class Rejects:
    """Counts rejects by reason and writes each to a JSONL file with where it came from."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counts: Counter[str] = Counter()
        self._file = None

    def add(self, where: str, reject: Reject, record_id: str | None = None) -> None:
        if self._file is None:
            self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - kept open across add(), closed by close()
        self.counts[reject.reason] += 1
        row = {"where": where, "reason": reject.reason, "detail": reject.detail, "id": record_id}
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def check(self, n_read: int, max_fraction: float) -> None:
        """Raise with a summary when more than `max_fraction` of the rows read were rejected: the input is not what
        the command was told it is (another format, another stage), so it is the input's error."""
        if n_read and self.total / n_read > max_fraction:
            reasons = ", ".join(f"{r}: {n}" for r, n in self.counts.most_common())
            raise InputError(
                f"{self.total} of {n_read} rows rejected ({self.total / n_read:.1%} > --max-reject-fraction "
                f"{max_fraction:.1%}); reasons: {reasons}; details in {self.path}"
            )
