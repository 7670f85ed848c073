"""Reading rows from local JSONL / JSON / Parquet files, each tagged with where it came from, and recording
rejects.

JSONL is read line by line here rather than through `datasets`, so that one malformed line becomes one reject
with its file:line instead of failing the whole file. Parquet is read with pyarrow a batch of rows at a time
(bounded memory); its rows are tagged `file:row`.
"""

from __future__ import annotations

import base64
import codecs
import datetime
import decimal
import json
from collections import Counter
from contextlib import contextmanager
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from swehero.data.trajectory import Reject, validate, without_nulls
from swehero.errors import InputError, MissingInput
from swehero.jsonio import PARTIAL, existing_file, partial_path

MAX_REJECT_FRACTION = 0.01
"""The share of the rows read that every data command (import, render, prepare, verifier data) may reject, by
default, before it fails: a few malformed rows are a dataset's noise, more mean the input is not what the command
was told it is."""

SUFFIXES = (".jsonl", ".json", ".traj", ".parquet")
STATS = "stats.json"
"""A packed dataset's summary (seq_length, samples per split, tokens, ...), which `prepare` writes last: a folder
with it is complete."""
REJECTS = ".rejects.jsonl"
"""The suffix of the file beside a command's output listing the rows it rejected (`checked_output`)."""


def expand(paths: list[str], suffixes: tuple[str, ...] = SUFFIXES) -> list[Path]:
    """Files named directly, plus the data files inside named folders (sorted, so runs are deterministic), each once
    however often it is named (a folder and a file in it, a path given twice): read twice, its trajectories would
    be trained twice. Hidden files, what swehero leaves half-written (`_is_data_file`) and the datasets `prepare`
    wrote (`_data_files`) are not data, nor in folders a file without one of `suffixes`. A folder without any is an
    error: an empty dataset from a mistyped folder would otherwise pass unnoticed."""
    files: dict[Path, Path] = {}  # resolved -> as named, in first-named order
    for p in map(Path, paths):
        if p.is_dir():
            found = _data_files(p, suffixes)
            if not found:
                raise MissingInput(f"{p}: a folder without data files ({', '.join(suffixes)})")
        elif p.is_file():
            found = [p]
        else:
            raise MissingInput(f"{p}: no such file or folder")
        for f in found:
            files.setdefault(f.resolve(), f)
    return list(files.values())


def _data_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The data files inside `folder` (`_is_data_file`), less those of the datasets `prepare` wrote into it
    (`_is_dataset`): its `stats.json` and `rejects.jsonl` are no trajectories, and reading them would make each rerun
    of that `prepare` see other inputs than the run that wrote the dataset."""
    datasets = {stats.parent for stats in folder.rglob(STATS) if _is_dataset(stats.parent)}
    return sorted(f for f in folder.rglob("*") if _is_data_file(f.relative_to(folder), suffixes) and f.is_file()
                  and datasets.isdisjoint(f.parents))


def _is_dataset(folder: Path) -> bool:
    """Whether `folder` holds a packed dataset `prepare` finished: its `stats.json` beside Megatron index files."""
    return (folder / STATS).is_file() and any(folder.glob("*.idx"))


def _is_data_file(path: Path, suffixes: tuple[str, ...]) -> bool:
    """Whether a path inside a folder read as input holds data: one with a data suffix, not hidden (an editor's
    or a writer's temporary file, `atomic_path`'s included), not inside a hidden folder and not inside a `.partial`
    one (a killed `prepare`'s): a half-written or excluded copy of the data would be trained on silently. Nor an
    import's list of the rows it rejected, which would be rejected again and count against the reject limit."""
    return path.suffix in suffixes and not path.name.endswith(REJECTS) \
        and not any(part.startswith(".") or part.endswith(PARTIAL) for part in path.parts)


def read_rows(path: Path, parse: bool = True) -> Iterator[tuple[str, Any]]:
    """Yield `(where, row)`; a row of JSON Lines that cannot be parsed (not UTF-8, not JSON) is yielded as a `Reject`
    instead of a dict. A byte order mark before the first row is no part of it (some Windows tools write one), as
    for task files. A `.json` file (or `.traj`) may hold JSON Lines, read as such; one that holds neither them nor
    one JSON document is an `InputError` naming it and the line (`json_document`), as is a Parquet file that cannot
    be read.

    With `parse=False`, JSON Lines come back as unparsed strings (so worker processes can parse them)."""
    path = existing_file(path)
    if path.suffix == ".parquet":
        yield from parquet_rows(path)
        return
    document = JSON_LINES if path.suffix == ".jsonl" else json_document(path)
    if document is JSON_LINES:
        yield from _json_lines(path, parse)
    elif isinstance(document, list):
        for i, row in enumerate(document, 1):
            yield f"{path}#{i}", row
    else:  # a single row (a SWE-agent .traj file)
        yield f"{path}", document


class UnparsedLine(str):
    """A JSON line as `read_rows(..., parse=False)` gives it: told apart from a row that is a JSON string (`"x"`,
    or a trajectory encoded twice), which is no object and must not be decoded again."""


def _json_lines(path: Path, parse: bool) -> Iterator[tuple[str, Any]]:
    with open(path, "rb") as f:  # lines end at b"\n" alone: JSON written raw may hold U+2028 or a lone \r
        for i, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                line = (raw.removeprefix(codecs.BOM_UTF8) if i == 1 else raw).decode("utf-8")
            except UnicodeDecodeError as e:
                yield f"{path}:{i}", Reject("not_utf8", f"not UTF-8: {e}")
                continue
            if not parse:
                yield f"{path}:{i}", UnparsedLine(line)
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as e:  # RecursionError: nested too deeply to parse
                row = Reject("malformed_json", str(e))
            yield f"{path}:{i}", row


JSON_LINES = object()
"""What `json_document` returns for a file holding one JSON value a line."""


def json_document(path: Path) -> Any:
    """The JSON document a `.json` file holds, less a byte order mark before it, or `JSON_LINES` where its second
    value starts a line of its own: `datasets.Dataset.to_json` writes JSON Lines whatever the file is called, as
    many files on the Hugging Face hub are. Anything else that is not one JSON document (a list cut off, bytes that
    are not UTF-8) is an `InputError` naming file:line: taken as one bad row, it would lose all the file's rows
    while staying under the reject limit. JSON Lines are told from the first two lines (`_starts_json_lines`): the
    file is read whole only where it may be one document."""
    if _starts_json_lines(path):
        return JSON_LINES
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    # bytes that are not UTF-8 are kept (as lone surrogates) until the file's shape is known: in JSON Lines they
    # spoil their own line only, which the line reader rejects
    text = raw.decode("utf-8", "surrogateescape")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and not text[e.pos - e.colno + 1:e.pos].strip():  # nothing before it on its line
            return JSON_LINES
        raise InputError(f"{path}:{e.lineno}: not JSON: {e}") from None
    except RecursionError as e:
        raise InputError(f"{path}: not JSON that can be read: {e}") from None
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise InputError(f"{path}:{line}: not UTF-8: {e}") from None
    return document


def _starts_json_lines(path: Path) -> bool:
    """Whether the first non-blank line of `path` holds one whole JSON value and another non-blank line follows: JSON
    Lines, which hold many gigabytes, told without reading them whole (their rows are read a line at a time). Any
    other start (a document spread over lines, a first line that is no JSON value) is for `json_document` to read."""
    with open(path, "rb") as f:
        lines = (line for line in f if line.strip())
        first, second = next(lines, b""), next(lines, None)
    text = first.removeprefix(codecs.BOM_UTF8).decode("utf-8", "surrogateescape").strip(JSON_WHITESPACE)
    try:
        _, end = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError:
        return False
    except RecursionError:  # a row nested too deeply to parse: the line reader rejects it, as in a `.jsonl` file
        return second is not None
    return second is not None and end == len(text)


JSON_WHITESPACE = " \t\n\r"
"""The characters JSON allows between values (`str.strip` would take more: a form feed is no JSON)."""


def parquet_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """`(file:row, row)` of a Parquet file, streamed by pyarrow; a file that is no Parquet, or a damaged one, is an
    `InputError` naming it (Arrow reports a bad footer as `ArrowInvalid`, a bad page as `OSError`). The file is
    opened by its name: `datasets` would take it for a pattern, and read `x1.parquet` for `x[1].parquet`."""
    import pyarrow.parquet

    try:
        with pyarrow.parquet.ParquetFile(path) as parquet:
            # a few rows as Python objects at a time (the default is 65536): a trajectory may run to megabytes
            rows = (row for batch in parquet.iter_batches(batch_size=256) for row in batch.to_pylist())
            for i, row in enumerate(rows, 1):
                yield f"{path}:{i}", _without_arrow_nulls(row)
    except (pyarrow.ArrowException, OSError) as e:
        raise InputError(f"{path}: cannot be read as Parquet ({' '.join(str(e).split())})") from None


def _without_arrow_nulls(row: dict) -> dict:
    """A Parquet row with `tools` and `messages` (the canonical record's lists of structs) less their null-valued
    keys (`without_nulls`): Arrow gives each tool the other tools' parameters as nulls, each message the other
    messages' keys (`tool_calls: null` on a user message), where the written rows had none. Parquet cannot say
    whether a null was written, so none is kept; JSON strings (arguments, a column of JSON) are kept as written.
    Values JSON has no type for are made JSON's (`_as_json`)."""
    return {k: without_nulls(_as_json(v)) if k in ("tools", "messages") else _as_json(v) for k, v in row.items()}


def _as_json(value: Any) -> Any:
    """A value of a Parquet row as JSON holds it: Arrow gives timestamp, date, time, duration, decimal and binary
    columns (a `created_at` beside the messages) as Python objects `json.dumps` refuses, which was a traceback in
    import, render and prepare. Times as ISO 8601 text, durations as seconds, decimals as numbers, binary as its
    UTF-8 text (else base64)."""
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):  # a map column's entries come as (key, value) tuples
        return [_as_json(v) for v in value]
    if isinstance(value, (datetime.date, datetime.time)):  # datetime.datetime is a date
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    return value


def parse_row(row: Any) -> dict:
    """A row from `read_rows(..., parse=False)` as a dict, or raise `Reject`."""
    if isinstance(row, Reject):
        raise row
    if isinstance(row, UnparsedLine):
        try:
            row = json.loads(row)
        except (json.JSONDecodeError, RecursionError) as e:  # RecursionError: nested too deeply to parse
            raise Reject("malformed_json", str(e)) from None
    if not isinstance(row, dict):
        raise Reject("not_an_object", type(row).__name__)
    return row


def iter_trajectories(path: Path, check: Callable[[dict], dict] = validate) -> Iterator[dict]:
    """The canonical trajectories of a file, one at a time, as `check` (`validate`) returns them (defaults filled in,
    a null `content` made ""). A row that is not one stops the read with `InputError` naming its file:line and the
    field, where importing would have counted it a reject."""
    for where, row in read_rows(Path(path)):
        try:
            record = check(parse_row(row))
        except Reject as e:
            raise InputError(f"{where}: not a canonical trajectory: {e}") from None
        yield record


@contextmanager
def checked_output(out: Path, max_reject_fraction: float,
                   inputs: list[str]) -> Iterator[tuple[Path, Rejects, Counter]]:
    """For a command writing `out` from the rows it reads from `inputs`: where to write it, its rejects
    (`<out>.rejects.jsonl`, this run's only, kept whatever happens) and a counter the command counts the rows it
    read in (`read`). When the block ends, no row read (empty files: a truncated copy) or more than
    `max_reject_fraction` of them rejected is an InputError; `out` appears only then, and only whole:
    on an error, Ctrl-C or too many rejects nothing half-written is left beside it. It is written at
    `<out>.partial`, which a rerun replaces: a `kill -9` leaves only that, which a folder read as input skips.
    An `out` that is a folder is an InputError before any work, which could not be renamed over it."""
    if out.is_dir():
        raise InputError(f"{out}: a folder, where the command writes a file: name a file (OUT.jsonl)")
    with partial_path(out) as tmp:
        # under partial_path's lock: a second run into `out` meanwhile stops before it touches the first's rejects
        rejects, counts = Rejects(out.with_name(out.stem + REJECTS)), Counter()
        try:
            yield tmp, rejects, counts
            rejects.close()
            if not counts["read"]:
                raise InputError(f"{', '.join(map(str, inputs))}: no rows to read (empty files?)")
            rejects.check(counts["read"], max_reject_fraction)
        finally:
            rejects.close()


class Rejects:
    """Counts rejects by reason and writes each to a JSONL file with where it came from. The file is the run's own:
    one an earlier run left is removed at once, so that a run with none leaves none, not the earlier run's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counts: Counter[str] = Counter()
        self._file = None
        path.unlink(missing_ok=True)

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
