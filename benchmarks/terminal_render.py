"""Seconds to render one long output line as OpenHands' pane shows it (`swehero.agent.terminal.as_terminal_shows`),
with tabs against the same line with spaces (a benchmark, not a test).

`seq 1 N | paste -s` prints one line of N numbers between tabs; a tab moves the cursor to the next multiple of 8
columns, so the renderer places text beyond what it has written. The same numbers between single spaces are the
baseline: plain text, placed where the line ends. Rendering should grow with the line's length in both.

    python benchmarks/terminal_render.py --numbers 25000 100000 400000
"""

from __future__ import annotations

import argparse
import statistics
import time


def seconds(render, text: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        render(text)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, nargs="+", default=[25_000, 100_000, 400_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from swehero.agent.terminal import as_terminal_shows

    print(f"{'numbers':>8} {'MB':>6} {'tabs s':>8} {'spaces s':>9} {'ratio':>6}  (medians of {args.repeats})")
    for n in args.numbers:
        numbers = [str(i) for i in range(1, n + 1)]
        tabbed, spaced = "\t".join(numbers) + "\n", " ".join(numbers) + "\n"
        tabs, spaces = seconds(as_terminal_shows, tabbed, args.repeats), seconds(as_terminal_shows, spaced, args.repeats)
        print(f"{n:>8} {len(tabbed) / 1e6:>6.2f} {tabs:>8.3f} {spaces:>9.3f} {tabs / spaces:>6.1f}")


if __name__ == "__main__":
    main()
