"""Seconds the local runtime spends making a rollout's checkout, with and without the task's shared history copy
(a benchmark, not a test).

Builds a synthetic repository with `git fast-import` (`--commits` commits over `--files` files of ~120 lines, a few
files changed per commit, then `git gc --aggressive`), and times `prepare_checkout` at a commit 100 commits back:
cold, when the task's history is not copied yet (fetch of the history into a bare repository, then a clone of it),
and warm, when an earlier attempt of the task copied it (the clone alone). The attempts of one task share the copy,
so `--rollouts` attempts cost one cold and R-1 warm checkouts instead of R cold ones.

    python benchmarks/checkout_history.py --commits 6000 --files 1000 --rollouts 4
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path


def synthetic_repository(path: Path, commits: int, files: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    text = {f"pkg/mod{i // 25}/file{i % 25}.py": "".join(f"def f{k}(x):\n    return x * {rng.randint(0, 999)}\n"
                                                        for k in range(60)) for i in range(files)}
    stream = []
    for c in range(commits):
        message = f"commit {c}\n"
        stream.append(f"commit refs/heads/main\ncommitter A <a@b> {1600000000 + 60 * c} +0000\n"
                      f"data {len(message)}\n{message}")
        for name in (list(text) if c == 0 else rng.sample(list(text), 8)):
            lines = text[name].split("\n")
            i = rng.randrange(len(lines))
            lines[i] += f"  # {c} " + "y" * rng.randint(0, 80)
            text[name] = "\n".join(lines)
            stream.append(f"M 100644 inline {name}\ndata {len(text[name])}\n{text[name]}\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run(["git", "fast-import", "--quiet"], input="".join(stream).encode(), cwd=path, check=True)
    subprocess.run(["git", "gc", "-q", "--aggressive"], cwd=path, check=True)
    subprocess.run(["git", "checkout", "-q", "main"], cwd=path, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=6000)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rollouts", type=int, default=4, help="Attempts per task (SWE-Zero: 3-5).")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from swehero.agent.runtime import git, prepare_checkout

    with tempfile.TemporaryDirectory(prefix="swehero-checkout-bench-") as tmp:
        source = Path(tmp) / "source"
        synthetic_repository(source, args.commits, args.files)
        pack = sum(p.stat().st_size for p in (source / ".git" / "objects" / "pack").glob("*.pack"))
        base = git("rev-parse", "HEAD~100", cwd=source).strip()
        cold, warm = [], []
        for i in range(args.repeats):
            work = Path(tmp) / f"run{i}"
            began = time.perf_counter()
            prepare_checkout(source, base, work / "first", work / "history")
            cold.append(time.perf_counter() - began)
            began = time.perf_counter()
            prepare_checkout(source, base, work / "second", work / "history")
            warm.append(time.perf_counter() - began)
            shutil.rmtree(work)
        c, w = statistics.median(cold), statistics.median(warm)
        r = args.rollouts
        print(f"repository: {args.commits} commits, {args.files} files, {pack / 2**20:.1f} MiB packed")
        print(f"checkout, median of {args.repeats}: cold {c:.2f}s (history copied), warm {w:.2f}s (clone of the copy),"
              f" ratio {c / w:.1f}")
        print(f"{r} attempts of one task: {r * c:.1f}s with a copy each, {c + (r - 1) * w:.1f}s sharing one "
              f"({r * c / (c + (r - 1) * w):.1f}x less)")


if __name__ == "__main__":
    main()
