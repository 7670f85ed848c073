"""`prepare`: canonical trajectories -> packed Megatron-Core IndexedDataset files with loss masks and boundaries.

Data flow: the main process reads rows (unparsed JSONL lines) and hands batches to worker processes, which
parse, validate, render with the chat template, tokenize (one batched call) and fit each trajectory to the
sequence length. Results come back in submission order (deterministic) with a bounded number of batches in
flight (bounded memory); the main process splits by instance, packs best-fit and writes.

Output layout, per split (`train`, `valid`), two IndexedDatasets with identical structure:
  `<split>_tokens.{bin,idx}` (int32) and `<split>_loss_mask.{bin,idx}` (uint8).
Each Megatron *document* is one packed sample of exactly `seq_length` tokens; each *sequence* inside it is one
trajectory, plus a final padding sequence (pad token, loss 0) when the sample is not full. So
`sequence_lengths[document_indices[i]:document_indices[i+1]]` are the segment lengths of sample i, and their
cumulative sum (with a leading 0) is the `cu_seqlens` of Megatron's `PackedSeqParams` (qkv_format "thd"):
attention and positions restart at every trajectory. `loss_mask[t] = 1` means token t is a training target
(predicted from position t-1). Everything is written under `<out>.partial/` and renamed to `<out>` at the end,
`stats.json` last: a directory named `<out>` is always complete; a killed run restarts cleanly.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np

from swehero.data.pack import BestFitPacker
from swehero.data.render import ChatRenderer, fit_length, load_tokenizer
from swehero.data.sources import MAX_REJECT_FRACTION, STATS, Rejects, expand, parse_row, read_rows
from swehero.progress import progress
from swehero.data.trajectory import Reject, trained_digest, validate
from swehero.errors import InputError, MissingInput, ProcessFailed
from swehero.jsonio import differences, partial_folder
from swehero.model.folder import SIDE_FILES
from swehero.recipe.stage import Range

HIST_BUCKET = 256
"""Width in tokens of the length-histogram buckets (stats keep a count per bucket, not every length)."""


@dataclass(frozen=True)
class PrepareConfig:
    """How trajectories become packed training sequences."""

    seq_length: Annotated[int, Range(min=1)] = 32768
    """Tokens per packed sample."""
    mask: Literal["all", "last"] = "all"
    """Which assistant turns are trained: `all` or `last`."""
    too_long: Literal["truncate", "drop"] = "truncate"
    """Trajectories longer than `seq_length`: `truncate` after the last assistant turn that fits, or `drop`."""
    valid_fraction: Annotated[float, Range(min=0, lt=1)] = 0.01
    """Share of instances (not trajectories) held out for validation."""
    seed: int = 1234
    """Seeds the train/valid split."""
    workers: int = 0
    """Worker processes; 0 renders in the main process, -1 one per core this process may run on."""
    batch_size: Annotated[int, Range(min=1)] = 8
    """Trajectories per worker task (one batched tokenizer call); small tasks keep every worker busy."""
    max_open: Annotated[int, Range(min=1)] = 256
    """Packed samples kept open for best fit (bounds memory: max_open * seq_length tokens)."""
    sort_window: int = 256
    """Trajectories buffered and placed longest first (best-fit decreasing within a window: 1-2 points more
    packing efficiency than arrival order); bounds memory like `max_open`."""
    max_reject_fraction: Annotated[float, Range(min=0, max=1)] = MAX_REJECT_FRACTION
    """Fail when more than this share of rows is malformed."""


class PackedWriter:
    """Packs one split and writes its tokens and loss-mask IndexedDatasets."""

    def __init__(self, prefix: Path, cfg: PrepareConfig, pad_id: int) -> None:
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

        self.prefix, self.seq_length, self.pad_id = prefix, cfg.seq_length, pad_id
        self.tokens = IndexedDatasetBuilder(f"{prefix}_tokens.bin", dtype=np.int32)
        self.mask = IndexedDatasetBuilder(f"{prefix}_loss_mask.bin", dtype=np.uint8)
        self.packer = BestFitPacker(cfg.seq_length, cfg.max_open)
        self.window = cfg.sort_window
        self._buffer: list[tuple[np.ndarray, np.ndarray]] = []
        self.samples = self.real_tokens = 0

    def add(self, ids: np.ndarray, mask: np.ndarray) -> None:
        self._buffer.append((ids, mask))
        if len(self._buffer) >= self.window:
            self._drain()

    def _drain(self) -> None:
        for item in sorted(self._buffer, key=lambda item: -len(item[0])):  # stable: deterministic
            for b in self.packer.add(item, len(item[0])):
                self._write(b.items, b.used)
        self._buffer = []

    def _write(self, items: list, used: int) -> None:
        pad = self.seq_length - used
        lengths = [len(ids) for ids, _ in items] + ([pad] if pad else [])
        self.tokens.add_document(np.concatenate([i for i, _ in items] + [np.full(pad, self.pad_id, np.int32)]), lengths)
        self.mask.add_document(np.concatenate([m for _, m in items] + [np.zeros(pad, np.uint8)]), lengths)
        self.samples += 1
        self.real_tokens += used

    def close(self) -> None:
        self._drain()
        for b in self.packer.flush():
            self._write(b.items, b.used)
        self.tokens.finalize(f"{self.prefix}_tokens.idx")
        self.mask.finalize(f"{self.prefix}_loss_mask.idx")


def in_valid(instance_id: str, seed: int, fraction: float) -> bool:
    """Deterministic split by instance: every trajectory of a task lands on the same side."""
    h = hashlib.sha256(f"{seed}:{instance_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


# --- worker side -----------------------------------------------------------------------------------------

_renderer = None  # set in the main process before the workers fork, so they inherit it
_cfg: PrepareConfig | None = None


def _setup(tokenizer, cfg: PrepareConfig) -> None:
    global _renderer, _cfg
    _renderer, _cfg = ChatRenderer(tokenizer, mask=cfg.mask), cfg


def _process(batch: list[tuple[str, object]]) -> list[tuple]:
    """Rows -> ("reject", where, id, reason, detail) | ("drop", where, id, digest, reason, length) | ("keep", where,
    id, digest, instance_id, length, ids, mask, truncated), in input order; `digest`: what is trained of it
    (`trained_digest`)."""
    out: list = [None] * len(batch)
    good = []
    for k, (where, row) in enumerate(batch):
        try:
            row = parse_row(row)
            good.append((k, _renderer.trainable(validate(row))))
        except Reject as r:
            out[k] = ("reject", where, row.get("id") if isinstance(row, dict) else None, r.reason, r.detail)
    rendered = _renderer.render_batch([rec for _, rec in good])
    for (k, rec), r in zip(good, rendered):
        fitted = fit_length(r, _cfg.seq_length, _cfg.too_long)
        if fitted is None:
            out[k] = ("drop", batch[k][0], rec["id"], trained_digest(rec), "too_long", len(r.input_ids))
        else:
            out[k] = (
                "keep",
                batch[k][0],
                rec["id"],
                trained_digest(rec),
                rec["instance_id"],
                len(r.input_ids),
                fitted.input_ids,
                fitted.loss_mask,
                len(fitted.input_ids) < len(r.input_ids),
            )
    return out


def _batches(files: list[Path], size: int):
    batch = []
    for path in files:
        for where, row in read_rows(path, parse=False):
            batch.append((where, row))
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def usable_cpus() -> int:
    """The cores this process may run on: its affinity mask (`taskset`, a Slurm or cgroup allocation), not all
    of the host's, which `os.cpu_count` gives. One worker per host core on a big node would fork tens of workers
    (each holds a tokenizer) onto a few cores."""
    return len(os.sched_getaffinity(0))


def _worker_signals() -> None:
    """A worker ends on SIGTERM, whatever handler this process had when it forked, and leaves Ctrl-C (sent to the
    whole process group) to the main process, which stops it: else its KeyboardInterrupt would break the pool, and
    the run would say a worker died."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _results(cfg: PrepareConfig, batches):
    """Processed batches in submission order, with at most 2 * workers batches in flight (after `_setup`)."""
    if cfg.workers == 0:
        yield from map(_process, batches)
        return
    workers = usable_cpus() if cfg.workers < 0 else cfg.workers
    # Forked workers inherit the loaded tokenizer (no per-worker load); the tokenizer has not encoded anything
    # yet in this process, and within a worker parallelism comes from the processes, not from its thread pool.
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # Not multiprocessing.Pool: a worker killed (the OOM killer on a batch of 128k-token rows) is replaced there,
    # its batch never answered, and the run waited for it forever; this pool raises BrokenProcessPool.
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=_worker_signals)
    try:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.submit(_process, batch))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool:
        raise ProcessFailed("a worker process died while preparing (killed: out of memory? see `dmesg`); its batch "
                            "is lost: run again (fewer --workers take less memory)") from None
    except BaseException:
        # Stopped (Ctrl-C, SIGTERM, the caller's error): the batches already queued to the workers would run to
        # their end first. The workers go now, as Pool.terminate() had them go (Python 3.14: terminate_workers()).
        # The pool's own thread sees them end and reaps them; joined here too, a worker could be reaped by that
        # thread while this one's join returned, still listed as running in `multiprocessing.active_children()`.
        for process in list((pool._processes or {}).values()):
            process.terminate()
        raise
    finally:
        # Waits for the pool's thread, which joins the workers: their CPU time counts in the stats (`_cpu_seconds`).
        pool.shutdown(wait=True, cancel_futures=True)
        if previous is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


# --- main side -------------------------------------------------------------------------------------------


def prepare(inputs: list[str], tokenizer_path: str, out: Path, cfg: PrepareConfig) -> dict:
    """Build the packed dataset at `out`; returns the stats. A complete `out` made from the same inputs and settings
    is left as is (its stats returned); one made otherwise, or anything else already at `out`, is an InputError, as
    is another run writing `out` meanwhile (`partial_folder`'s lock)."""
    out = Path(out)
    files = expand(inputs)
    made_from = _made_from(files, tokenizer_path, cfg)
    # the lock is taken before `out` is looked at: a run that held it may have finished `out` meanwhile
    with partial_folder(out) as tmp:
        stats = _finished(out, made_from)
        if stats is not None:
            return stats
        tok = load_tokenizer(tokenizer_path)  # before the partial folder: bad input leaves none
        shutil.rmtree(tmp, ignore_errors=True)  # a killed run's leftovers: restart cleanly
        tmp.mkdir(parents=True)
        stats = _build(files, inputs, tok, tmp, cfg)
        stats["made_from"] = made_from
        (tmp / STATS).write_text(json.dumps(stats, indent=2) + "\n")
        tmp.replace(out)
    return stats


def _finished(out: Path, made_from: dict) -> dict | None:
    """The stats of the complete dataset at `out` made from `made_from`, or None where there is nothing at `out`;
    anything else there is an InputError, before any work (the final rename could not replace it, and the work would
    be lost)."""
    if (out / STATS).exists():
        stats = read_stats(out)
        changed = _changes(stats["made_from"], made_from) if "made_from" in stats else \
            ["what it was made from is not recorded (an older swehero made it)"]
        if changed:
            raise InputError(f"{out} holds a dataset made from other inputs or settings ({'; '.join(changed)}): "
                             "choose another --out, or delete it to rebuild")
        return stats
    if out.is_file() or (out.is_dir() and any(out.iterdir())):
        raise InputError(f"{out}: already exists and is not a dataset `swehero data prepare` finished (no {STATS}): "
                         "choose another --out, or delete it")
    return None


def _build(files: list[Path], inputs: list[str], tok, tmp: Path, cfg: PrepareConfig) -> dict:
    """Pack the trajectories of `files` into the folder `tmp`, with its rejects and length plot; returns the stats
    (`stats.json` is the caller's to write, last)."""
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    writers = {s: PackedWriter(tmp / s, cfg, pad_id) for s in ("train", "valid")}
    rejects = Rejects(tmp / "rejects.jsonl")
    dropped: Counter[str] = Counter()
    buckets: Counter[int] = Counter()  # length // HIST_BUCKET -> trajectories: as long as the longest, no cap
    n = Counter()
    seen: set[str] = set()  # trained_digest of each trajectory read
    _setup(tok, cfg)
    start, start_cpu = time.perf_counter(), _cpu_seconds()
    try:
        for results in _shown(_results(cfg, _batches(files, cfg.batch_size)), n, start):
            for res in results:
                n["read"] += 1
                kind, where, record_id = res[:3]
                if kind == "reject":
                    rejects.add(where, Reject(res[3], res[4]), record_id)
                    continue
                # the same conversation again (another copy of a file): trained once. By content, not by `id`: a
                # source's ids need not be unique, and two copies need not share one. Dropped, not rejected: a
                # copy is no malformed row, and a folder holding a copy of a file would exceed any reject limit
                digest = res[3]
                if digest in seen:
                    dropped["duplicate"] += 1
                    continue
                seen.add(digest)
                length = res[5]
                buckets[length // HIST_BUCKET] += 1
                n["rendered_tokens"] += length
                if kind == "drop":
                    dropped[res[4]] += 1
                    continue
                instance_id, _, ids, mask, truncated = res[4:]
                split = "valid" if in_valid(instance_id, cfg.seed, cfg.valid_fraction) else "train"
                writers[split].add(ids, mask)
                n["kept"] += 1
                n["truncated"] += truncated
                n["tokens"] += len(ids)
                n["trained_tokens"] += int(mask.sum())
        for w in writers.values():
            w.close()
    finally:
        rejects.close()
    seconds, cpu_seconds = time.perf_counter() - start, _cpu_seconds() - start_cpu
    hist = np.zeros(max(buckets, default=0) + 1, dtype=np.int64)
    hist[list(buckets)] = list(buckets.values())
    rejects.check(n["read"], cfg.max_reject_fraction)
    if not n["kept"]:  # an empty dataset would fail only in training, far from the cause
        raise InputError(f"{', '.join(inputs)}: none of the {n['read']} trajectories was kept (dropped: "
                         f"{dict(dropped) or 'none'}, rejected: {dict(rejects.counts) or 'none'}); their median "
                         f"length is {_percentile(hist, 50)} tokens, seq_length {cfg.seq_length}")
    stats = _stats(n, rejects, dropped, hist, writers, cfg, seconds, pad_id)
    stats["cpu_seconds"] = round(cpu_seconds, 3)
    _plot_lengths(hist, cfg.seq_length, tmp / "lengths.png")
    return stats


def _shown(batches, n: Counter, start: float):
    """The processed `batches`, counted on a progress bar as the caller handles them: trajectories read, kept, and
    rendered tokens per second (from the counts `n` the caller keeps)."""
    with progress("prepare", " trajectories") as bar:
        for results in batches:
            yield results
            rate = n["rendered_tokens"] / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix_str(f"{n['kept']} kept, {rate:,.0f} tokens/s", refresh=False)
            bar.update(len(results))


NOT_IN_OUTPUT = ("workers", "batch_size")
"""Settings of how the work is split among processes: the dataset is byte for byte the same with any of them."""


def _made_from(files: list[Path], tokenizer_path: str, cfg: PrepareConfig) -> dict:
    """What decides a dataset's content, recorded in its stats so that a rerun can tell whether the dataset at
    `--out` is the one asked for: each input file's size and mtime (stat only, as the recipe engine does), the
    tokenizer (a local folder's path and the digests of its tokenizer files: another tokenizer saved into the same
    folder makes other tokens) and the settings, less `workers` and `batch_size` (the output is identical with any
    of them)."""
    tokenizer = Path(tokenizer_path)
    settings = {k: v for k, v in cfg.__dict__.items() if k not in NOT_IN_OUTPUT}
    made_from = {"inputs": {str(f.resolve()): f"{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files},
                 "tokenizer": str(tokenizer.resolve()) if tokenizer.exists() else tokenizer_path,
                 "settings": settings}
    if tokenizer.is_dir():
        made_from["tokenizer_files"] = tokenizer_digests(tokenizer)
    return made_from


def tokenizer_digests(folder: Path) -> dict[str, str]:
    """sha256 (16 hex digits) of each file of the folder that decides how a conversation renders and tokenizes
    (the tokenizer and chat template files, megabytes: not the sampling defaults), by name. By content, so a copy of
    the same tokenizer, or its files touched, still reuses the dataset."""
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()[:16]
            for name in SIDE_FILES if name != "generation_config.json" and (folder / name).is_file()}


def _changes(recorded: dict, made_from: dict) -> list[str]:
    """What differs between the `made_from` a dataset records and the one asked for. A field it lacks (an older
    swehero recorded no `tokenizer_files`) is not recorded, not a change: that dataset is reused as before."""
    return differences(recorded, {k: v for k, v in made_from.items() if k in recorded})


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished workers (the pool is joined when `_results` ends)."""
    import resource

    return sum(
        getattr(resource.getrusage(who), f)
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        for f in ("ru_utime", "ru_stime")
    )


def _percentile(hist: np.ndarray, q: float) -> int:
    """Upper edge of the bucket holding the q-th percentile (exact to HIST_BUCKET tokens)."""
    c = np.cumsum(hist)
    return int((np.searchsorted(c, q / 100 * c[-1]) + 1) * HIST_BUCKET) if c[-1] else 0


def read_stats(dataset: str | Path) -> dict:
    """The stats of a finished dataset; MissingInput for a folder a `prepare` stage did not finish."""
    path = Path(dataset) / STATS
    if not path.is_file():
        raise MissingInput(f"{dataset}: no {STATS}, so not a dataset `swehero data prepare` finished")
    return json.loads(path.read_text())


def _stats(n, rejects, dropped, hist, writers, cfg, seconds, pad_id) -> dict:
    samples = sum(w.samples for w in writers.values())
    return {
        "trajectories": {
            "read": n["read"],
            "kept": n["kept"],
            "truncated": n["truncated"],
            "rejected": dict(rejects.counts),
            "dropped": dict(dropped),
        },
        "tokens": n["tokens"],
        "trained_tokens": n["trained_tokens"],
        "samples": {s: w.samples for s, w in writers.items()},
        "seq_length": cfg.seq_length,
        "pad_token_id": pad_id,
        "packing_efficiency": n["tokens"] / (samples * cfg.seq_length) if samples else 0.0,
        "length_percentiles": {f"p{q}": _percentile(hist, q) for q in (50, 90, 99)},
        "length_histogram": {"bucket": HIST_BUCKET, "counts": hist.tolist()},
        "seconds": round(seconds, 3),
        "rendered_tokens_per_second": round(n["rendered_tokens"] / seconds) if seconds else 0,
        "config": cfg.__dict__,
    }


def _plot_lengths(hist: np.ndarray, seq_length: int, path: Path) -> None:
    from swehero.plots import figure

    last = max(int(np.flatnonzero(hist)[-1]) + 1 if hist.any() else 1, 1)
    with figure(path, figsize=(7, 3.5)) as ax:
        ax.bar(np.arange(last) * HIST_BUCKET, hist[:last], width=HIST_BUCKET, align="edge")
        ax.axvline(seq_length, color="red", linestyle="--", label=f"seq_length {seq_length}")
        ax.set_xlabel("rendered trajectory length (tokens)")
        ax.set_ylabel("trajectories")
        ax.legend()
