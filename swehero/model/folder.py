"""Model folders: where a model's Hugging Face config, weights and side files are.

Two kinds of folder hold a model here: a Hugging Face folder (`config.json`, safetensors weights, tokenizer and
chat template) and a Megatron checkpoint of ours (dist checkpoint files with the Hugging Face config it was built
from as `hf_config.json`). Exports write a Hugging Face folder that serves as is: the weights, the config they were
built with, and the side files of the folder the model came from.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from swehero.errors import InputError, MissingInput, few
from swehero.jsonio import read_json
from swehero.model import qwen2

CONFIG = "config.json"
CHECKPOINT_CONFIG = "hf_config.json"
"""The Hugging Face config a Megatron checkpoint keeps beside its weights."""
INDEX = "model.safetensors.index.json"
WEIGHT_FILES = ("*.safetensors.index.json", "pytorch_model*.bin.index.json", "*.safetensors", "pytorch_model*.bin")
"""What transformers and vLLM may load as a folder's weights, shard indexes first."""
BUNDLED_CONFIGS = Path(__file__).with_name("configs")
"""Published `config.json` shapes of known hub models, for planning without a download."""

SIDE_FILES = (
    # What transformers' AutoTokenizer and vLLM read besides the weights and config.json: the tokenizer (its
    # fast and slow forms: BPE vocab and merges, sentencepiece model, WordPiece vocab), its special and added
    # tokens, the chat template (current and legacy files) and the default sampling settings (vLLM applies
    # generation_config.json unless told otherwise).
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt", "tokenizer.model", "vocab.txt",
    "chat_template.jinja", "chat_template.json", "generation_config.json",
)
SIDE_DIRS = ("additional_chat_templates",)
"""Folders of extra named chat templates (transformers >= 4.54)."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")
"""A tokenizer in any of its forms: a folder with none of these has none."""


def is_hf_folder(path: str | Path) -> bool:
    return (Path(path) / CONFIG).is_file()


def config_file(path: str | Path) -> Path:
    """The file holding a model's Hugging Face config: a Hugging Face folder's `config.json` (or that file), or the
    one a Megatron checkpoint of ours keeps (`hf_config.json`)."""
    path = Path(path)
    found = path if path.is_file() else next((path / n for n in (CONFIG, CHECKPOINT_CONFIG) if (path / n).is_file()),
                                             None)
    if found is None:
        raise MissingInput(f"{path}: no {CONFIG} (Hugging Face folder) or {CHECKPOINT_CONFIG} (Megatron checkpoint)")
    return found


def read_config(path: str | Path) -> dict[str, Any]:
    """The Hugging Face config of a model (see `config_file`)."""
    return read_json(config_file(path), "a model config")


def known_config(ref: str) -> dict[str, Any] | None:
    """A model's config without downloading it: a local Hugging Face folder's, or the bundled copy of a known hub
    model's (`Qwen/Qwen2.5-Coder-32B-Instruct` -> `configs/qwen2.5-coder-32b-instruct.json`); None if neither."""
    if is_hf_folder(ref):
        return read_config(ref)
    bundled = BUNDLED_CONFIGS / f"{ref.split('/')[-1].lower()}.json"
    return json.loads(bundled.read_text()) if bundled.exists() else None


def weight_files(folder: str | Path) -> dict[str, str]:
    """Tensor name -> the safetensors file holding it: from the shard index, or the single `model.safetensors`."""
    folder = Path(folder)
    if (folder / INDEX).exists():
        weight_map = read_json(folder / INDEX, "a safetensors shard index").get("weight_map")
        if not isinstance(weight_map, dict):
            raise InputError(f"{folder / INDEX}: weight_map: missing or not an object (tensor name -> file); "
                             "download the model again")
        return weight_map
    if not (folder / "model.safetensors").exists():
        raise MissingInput(f"{folder}: no {INDEX} or model.safetensors (only safetensors weights are read)")
    return dict.fromkeys(_tensor_shapes(folder / "model.safetensors"), "model.safetensors")


def _tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of the tensors a safetensors file's header lists, failing in one line that names the file."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():  # also a dangling link, as a Hugging Face cache holds after an interrupted download
        raise MissingInput(f"{path}: listed in {INDEX} but missing; download the model again")
    try:
        with safe_open(path, "np") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except SafetensorError as e:
        raise InputError(f"{path}: unreadable safetensors file ({e}); download it again") from None


def check_hf_weights(folder: str | Path, config: dict[str, Any]) -> None:
    """Fail in one line unless `folder` holds, in files that open, every tensor a model of `config` is built from,
    each in the file its index names and of the shape the config gives it; warn (stderr) about tensors that would
    be left out."""
    folder = Path(folder)
    if config.get("quantization_config"):
        method = config["quantization_config"].get("quant_method", "?")
        raise InputError(f"{folder / CONFIG}: quantization_config ({method}): quantized weights are not converted; "
                         "use the unquantized release")
    mapping = weight_files(folder)
    shapes = {file: _tensor_shapes(folder / file) for file in sorted(set(mapping.values()))}
    present = {name for held in shapes.values() for name in held}
    needed = qwen2.hf_weight_shapes(config)
    missing = sorted(needed.keys() - present)
    if missing:
        why = " (tie_word_embeddings is false, so the LM head is a tensor of its own)" \
            if "lm_head.weight" in missing else ""
        raise MissingInput(f"{folder}: {len(missing)} tensor(s) its {CONFIG} needs are not in its weights: "
                           f"{few(missing)}{why}")
    if misplaced := sorted(name for name in needed if name not in shapes.get(mapping.get(name), {})):
        raise InputError(f"{folder / INDEX}: {len(misplaced)} tensor(s) are not in the file it names for them: "
                         f"{few(misplaced)}; download the model again")
    wrong = [f"{name} is {list(shapes[mapping[name]][name])}, the config makes it {list(shape)}"
             for name, shape in sorted(needed.items()) if shapes[mapping[name]][name] != shape]
    if wrong:
        raise InputError(f"{folder / CONFIG}: its sizes do not fit the weights ({len(wrong)} tensor(s): "
                         f"{few(wrong, sep='; ')}): the config of another model?")
    unused = sorted(n for n in present - needed.keys() if not qwen2.is_harmless_unused(n, config))
    if unused:
        print(f"warning: {folder}: {len(unused)} tensor(s) its {CONFIG} does not use are left out: {few(unused)}",
              file=sys.stderr)


def weight_paths(folder: str | Path) -> list[Path]:
    """The files of a folder's weights, shard indexes first."""
    return [path for pattern in WEIGHT_FILES for path in sorted(Path(folder).glob(pattern))]


def remove_weights(folder: str | Path) -> None:
    """Remove the weights a folder holds (shard indexes first), so that new ones written there are all a loader
    finds: transformers prefers an old `model.safetensors` to a new index. The side files stay."""
    for path in weight_paths(folder):
        path.unlink()


WEIGHT_SAMPLES, WEIGHT_SAMPLE_BYTES = 16, 1 << 16
"""`folder_fingerprint` reads 16 windows of 64 KiB of each weight file: 1 MiB, where a 32B model's shards hold 4 GB."""


def folder_fingerprint(folder: str | Path) -> str:
    """sha256 (16 hex digits) of a Hugging Face folder's `config.json` and, for each weight file, its name, size and
    `WEIGHT_SAMPLES` windows of its bytes spread evenly over it (the first holds a safetensors header): another model
    written into the same folder (retrained, exported again) changes it, a copy of the same model does not, whatever
    its files' times (staged to a node's disk, downloaded again). Sampled, not read whole: hashing tens of GB on
    every use would cost minutes, and weights trained any further differ in nearly every window (a change confined
    to a few small tensors between the windows goes unseen)."""
    folder = Path(folder)
    digest = hashlib.sha256((folder / CONFIG).read_bytes() if (folder / CONFIG).is_file() else b"")
    for path in weight_paths(folder):
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            digest.update(f"\0{path.name}\0{size}\0".encode())
            last = max(size - WEIGHT_SAMPLE_BYTES, 0)
            for offset in sorted({last * i // (WEIGHT_SAMPLES - 1) for i in range(WEIGHT_SAMPLES)}):
                file.seek(offset)
                digest.update(file.read(WEIGHT_SAMPLE_BYTES))
    return digest.hexdigest()[:16]


def side_files_fingerprint(folder: str | Path) -> str:
    """sha256 (16 hex digits) of the `side_files` of a Hugging Face folder, read whole (megabytes): the tokenizer
    and chat template a server renders its prompts with, which an export with another `like` replaces beside the
    same weights."""
    digest = hashlib.sha256()
    for path in side_files(folder):
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                digest.update(f"\0{file.relative_to(folder)}\0".encode() + file.read_bytes())
    return digest.hexdigest()[:16]


def side_files(folder: str | Path) -> list[Path]:
    """The side files (tokenizer, chat templates, generation config) a folder has."""
    folder = Path(folder)
    return [folder / name for name in (*SIDE_FILES, *SIDE_DIRS) if (folder / name).exists()]


def has_tokenizer(folder: str | Path) -> bool:
    return any((Path(folder) / name).exists() for name in TOKENIZER_FILES)


def side_files_from(init: str | Path) -> Path:
    """The Hugging Face folder an export takes its tokenizer and chat template from: `init` itself, or the export
    of the train stage `init` names."""
    return Path(init) if is_hf_folder(init) else Path(init) / "hf"


def write_folder_files(out: str | Path, config: dict[str, Any], like: str | Path) -> None:
    """Complete exported weights in `out` into a Hugging Face folder: `config` (what the weights were built with,
    e.g. with a `rope_scaling` override) as config.json, and `like`'s side files, which replace those `out` held
    (`like` may be `out` itself: an export over the folder the model came from keeps them)."""
    out = Path(out)
    if not out.samefile(like):
        # A side file of an earlier export that `like` lacks would be read instead of `like`'s: chat_template.jinja
        # before tokenizer_config.json's template, tokenizer.json before vocab.json + merges.txt.
        for path in side_files(out):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        for path in side_files(like):
            if path.is_dir():
                shutil.copytree(path, out / path.name)
            else:
                shutil.copy2(path, out / path.name)
    (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
