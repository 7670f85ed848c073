"""The paper's published resolution rates (arXiv 2604.01496, % resolved, pass@1), in one table."""

from __future__ import annotations

import re

SCAFFOLDS = {"exec": "execution-based", "zero": "execution-free"}
"""The agent's modes (`agent.mode`), by the name the paper gives the scaffold each one reproduces."""

# (model, scaffold, benchmark) -> % resolved. The scaffold is the agent's mode the model was evaluated in: the main
# table's SWE-Zero and SWE-Hero columns alike are execution-based (OpenHands CodeAct in the task's environment); the
# paper evaluates SWE-Hero-32B with the execution-free scaffold too. 100 turns, 128k context, temperature 0.7, top-p
# 0.8, top-k 20.
PAPER_RESULTS: dict[tuple[str, str, str], float] = {
    ("SWE-Zero-7B", "exec", "verified"): 46.8,
    ("SWE-Zero-14B", "exec", "verified"): 54.5,
    ("SWE-Zero-32B", "exec", "verified"): 57.5,
    ("SWE-Hero-7B", "exec", "verified"): 52.7,
    ("SWE-Hero-14B", "exec", "verified"): 60.8,
    ("SWE-Hero-32B", "exec", "verified"): 62.2,
    ("SWE-Hero-32B", "exec", "multilingual"): 44.1,
    ("SWE-Hero-32B", "zero", "verified"): 57.7,
    ("SWE-Hero-32B", "zero", "multilingual"): 42.2,
}


def paper_model(name: str) -> str | None:
    """The paper's model a name refers to (`swe-hero-32b`, `/ckpt/SWE_Zero_7B/hf`, ...), if any."""
    match = re.search(r"swe[-_ ]?(hero|zero)[-_ ]?(7|14|32)b", name, flags=re.IGNORECASE)
    return f"SWE-{match.group(1).capitalize()}-{match.group(2)}B" if match else None


def paper_figure(model: str, benchmark: str, mode: str) -> tuple[str, float] | None:
    """(paper model, % resolved) for the same model and benchmark evaluated with the scaffold of the agent's `mode`,
    when the paper reports one: a figure of the other scaffold is no target for this run."""
    canonical = paper_model(model)
    if canonical is None or (canonical, mode, benchmark) not in PAPER_RESULTS:
        return None
    return canonical, PAPER_RESULTS[canonical, mode, benchmark]


def markdown_table() -> str:
    """The paper's table as markdown (for docs and reports)."""
    rows = ["| model | scaffold | SWE-bench Verified | SWE-bench Multilingual |", "|---|---|---|---|"]
    for model, mode in dict.fromkeys((m, s) for m, s, _ in PAPER_RESULTS):
        cells = [f"{PAPER_RESULTS[model, mode, b]:.1f}" if (model, mode, b) in PAPER_RESULTS else "—"
                 for b in ("verified", "multilingual")]
        rows.append(f"| {model} | {SCAFFOLDS[mode]} | {' | '.join(cells)} |")
    return "\n".join(rows)
