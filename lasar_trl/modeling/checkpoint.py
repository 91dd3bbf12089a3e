"""Load a recommender checkpoint (model + tokenizer + the SID map it was trained with)."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from ..sid.sid_map import SidMap, SidMapMismatchError
from .lasar import get_lasar, has_lasar, load_lasar, save_lasar, split_lasar_state
from .loading import EMBEDDED_PREFIX

SID_MAP_FILE = "sid_map.json"
MAX_HISTORY_KEY = "max_history"  # where a model's config records the history items its prompts held in training
DEFAULT_MAX_HISTORY = 10  # the recipes' default: what a checkpoint that records no max_history is prompted with

logger = logging.getLogger(__name__)


def max_history_of(model: PreTrainedModel, requested: int | None = None, where: str = "the checkpoint") -> int:
    """`requested` when given, else the `max_history` the model was trained with (its config records
    it since Stage 1 does); a checkpoint from before that gets the recipes' default, with a warning,
    since prompts of another length than in training lower its quality without any error."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"max_history must be >= 1, got {requested}")
        return requested
    recorded = getattr(model.config, MAX_HISTORY_KEY, None)
    if recorded is not None:
        return recorded
    logger.warning(
        "%s records no max_history (trained before lasar-trl recorded it): prompting with the last %d items "
        "of each history; pass max_history (--max_history) if it was trained with another value",
        where,
        DEFAULT_MAX_HISTORY,
    )
    return DEFAULT_MAX_HISTORY


def check_same_sid_map(expected: SidMap, found: SidMap, where: str) -> None:
    """Raise, with the first differing item, unless both maps give every item the same SID."""
    if expected == found:
        return
    for item in sorted(set(expected.item_ids) | set(found.item_ids)):
        left = expected.sid(item) if item in expected else None
        right = found.sid(item) if item in found else None
        if left != right:
            raise SidMapMismatchError(
                f"{where} was trained with a different SID map: item {item!r} is {right} there but {left} in the "
                f"supplied map ({len(found)} vs {len(expected)} items). Use the checkpoint's own sid_map.json, "
                f"or retrain with this map."
            )
    raise SidMapMismatchError(f"{where} was trained with a different SID map than the one supplied.")


def require_recommender_folder(path: str, flag: str = "") -> None:
    """Refuse, before anything loads, what is not a recommender checkpoint folder (`flag`, e.g.
    "--checkpoint", starts the message). The embedded base model has no SIDs: it is what Stage 1
    starts from, so it is named as such instead of being converted and then refused."""
    label = f"{flag} {path}" if flag else path
    if path.startswith(EMBEDDED_PREFIX):
        raise ValueError(
            f"{label} is a base model without SIDs, not a recommender checkpoint: train Stage 1 from it "
            f"(recipes/sft_stage1.py --model_name_or_path {path}) and pass that run's output_dir"
        )
    if not os.path.isfile(os.path.join(path, SID_MAP_FILE)):
        raise FileNotFoundError(
            f"{label} has no {SID_MAP_FILE}: it is not a lasar-trl recommender checkpoint (the output_dir of a recipe)"
        )


def load_checkpoint_sid_map(path: str) -> SidMap:
    require_recommender_folder(path)
    return SidMap.load(os.path.join(path, SID_MAP_FILE))


ADAPTER_CONFIG_FILE = "adapter_config.json"


@contextmanager
def _zero3_init_disabled():
    """While a DeepSpeed ZeRO-3 config is active, transformers loads models straight into
    `zero.Init` shards that only a forward on every process can use. A recommender is loaded
    whole instead: for one process's evaluation, and for Stage 2's anchors before training,
    where DeepSpeed shards it when the Trainer wraps it."""
    from transformers.integrations import deepspeed as hf_deepspeed

    if not hf_deepspeed.is_deepspeed_zero3_enabled():
        yield
        return
    active = hf_deepspeed._hf_deepspeed_config_weak_ref()  # transformers has no public getter for it
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(active)


def _load_merged(path: str, dtype) -> PreTrainedModel:
    """A plain causal LM from a full checkpoint, or from a LoRA adapter folder: its base
    (`base_model_name_or_path` of adapter_config.json) with the adapter and trained SID rows
    merged in, so serving code never sees PEFT."""
    if not os.path.isfile(os.path.join(path, ADAPTER_CONFIG_FILE)):
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    from peft import PeftConfig, PeftModel

    base_path = PeftConfig.from_pretrained(path).base_model_name_or_path
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    return PeftModel.from_pretrained(base, path).merge_and_unload()


def load_recommender(
    path: str,
    sid_map: SidMap | None = None,
    *,
    dtype: torch.dtype | str = "auto",
    device: str | torch.device = "cpu",
):
    """(model, tokenizer, sid_map) from a checkpoint folder; `sid_map`, if given, must match its own.

    A LASAR checkpoint's Policy Head and latent projection are attached to the model. The
    weights are whole on this process, even during a ZeRO-3 run (see `_zero3_init_disabled`)."""
    checkpoint_map = load_checkpoint_sid_map(path)
    if sid_map is not None:
        check_same_sid_map(sid_map, checkpoint_map, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    vocabulary = tokenizer.get_vocab()  # a fresh dict per call: build it once
    unknown = [t for t in checkpoint_map.all_tokens() if t not in vocabulary]
    if unknown:
        raise SidMapMismatchError(f"{path}: the tokenizer lacks SID tokens of its sid_map.json, e.g. {unknown[:3]}")
    with _zero3_init_disabled():
        model = _load_merged(path, dtype).to(device)
    if has_lasar(path):
        load_lasar(model, path)
    model.eval()
    return model, tokenizer, checkpoint_map


def save_recommender(model: PreTrainedModel, tokenizer, sid_map: SidMap, directory: str) -> None:
    """Write a recommender checkpoint outside a Trainer (e.g. a merged LoRA run): the HF
    model without its LASAR parts, those beside it, the tokenizer, and the SID map last."""
    os.makedirs(directory, exist_ok=True)
    model_state, lasar_state = split_lasar_state(model.state_dict())
    model.save_pretrained(directory, state_dict=model_state)
    lasar = get_lasar(model)
    if lasar is not None:
        save_lasar(lasar_state, lasar.config, directory)
    tokenizer.save_pretrained(directory)
    sid_map.save(directory)
