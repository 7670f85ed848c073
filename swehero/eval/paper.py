"""The paper's published resolution rates (arXiv 2604.01496, % resolved, pass@1), in one table."""

from __future__ import annotations

import re

# (model, benchmark) -> % resolved. Evaluated with the execution-based (OpenHands CodeAct) scaffold, 100 turns,
# temperature 0.7, top-p 0.8, top-k 20.
PAPER_RESULTS: dict[tuple[str, str], float] = {
    ("SWE-Zero-7B", "verified"): 46.8,
    ("SWE-Zero-14B", "verified"): 54.5,
    ("SWE-Zero-32B", "verified"): 57.5,
    ("SWE-Hero-7B", "verified"): 52.7,
    ("SWE-Hero-14B", "verified"): 60.8,
    ("SWE-Hero-32B", "verified"): 62.2,
    ("SWE-Hero-32B", "multilingual"): 44.1,
}


def paper_model(name: str) -> str | None:
    """The paper's model a name refers to (`swe-hero-32b`, `/ckpt/SWE_Zero_7B/hf`, ...), if any."""
    match = re.search(r"swe[-_ ]?(hero|zero)[-_ ]?(7|14|32)b", name, flags=re.IGNORECASE)
    return f"SWE-{match.group(1).capitalize()}-{match.group(2)}B" if match else None


def paper_figure(model: str, benchmark: str) -> tuple[str, float] | None:
    """(paper model, % resolved) for the same model and benchmark, when the paper reports one."""
    canonical = paper_model(model)
    if canonical is None or (canonical, benchmark) not in PAPER_RESULTS:
        return None
    return canonical, PAPER_RESULTS[canonical, benchmark]


def markdown_table() -> str:
    """The paper's table as markdown (for docs and reports)."""
    rows = ["| model | SWE-bench Verified | SWE-bench Multilingual |", "|---|---|---|"]
    for model in dict.fromkeys(m for m, _ in PAPER_RESULTS):
        cells = [f"{PAPER_RESULTS[model, b]:.1f}" if (model, b) in PAPER_RESULTS else "—"
                 for b in ("verified", "multilingual")]
        rows.append(f"| {model} | {' | '.join(cells)} |")
    return "\n".join(rows)
