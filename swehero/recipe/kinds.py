"""The one place stage kinds are registered: kind name -> module path (imported lazily).

Adding a stage kind means adding a line here; the engine never changes.
"""

from __future__ import annotations

import importlib
from types import ModuleType

KINDS: dict[str, str] = {
    "command": "swehero.recipe.command",
    "compare": "swehero.eval.compare_stage",
    "convert": "swehero.model.stage",
    "distill": "swehero.distill.stage",
    "download": "swehero.recipe.download",
    "eval": "swehero.eval.stage",
    "filter": "swehero.distill.filter_stage",
    "import": "swehero.data.import_stage",
    "prepare": "swehero.data.stage",
    "prompts": "swehero.agent.prompts_stage",
    "tiny": "swehero.tiny.stage",
    "train": "swehero.train.stage",
    "verifier_data": "swehero.eval.verifier_stage",
}


def load_kind(kind: str) -> ModuleType:
    return importlib.import_module(KINDS[kind])
