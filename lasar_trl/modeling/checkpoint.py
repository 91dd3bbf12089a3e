"""Load a recommender checkpoint (model + tokenizer + the SID map it was trained with)."""

from __future__ import annotations

import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..sid.sid_map import SidMap
from .lasar import has_lasar, load_lasar
from .loading import resolve_model_path

SID_MAP_FILE = "sid_map.json"


class SidMapMismatchError(ValueError):
    """A checkpoint was trained with a different SID map than the one supplied."""


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


def load_checkpoint_sid_map(path: str) -> SidMap:
    file = os.path.join(path, SID_MAP_FILE)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{path} has no {SID_MAP_FILE}: it is not a lasar-trl recommender checkpoint")
    return SidMap.load(file)


def load_recommender(
    path: str,
    sid_map: SidMap | None = None,
    *,
    dtype: torch.dtype | str = "auto",
    device: str | torch.device = "cpu",
):
    """(model, tokenizer, sid_map) from a checkpoint folder; `sid_map`, if given, must match its own.

    A LASAR checkpoint's Policy Head and latent projection are attached to the model."""
    path = resolve_model_path(path)
    checkpoint_map = load_checkpoint_sid_map(path)
    if sid_map is not None:
        check_same_sid_map(sid_map, checkpoint_map, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    vocabulary = tokenizer.get_vocab()  # a fresh dict per call: build it once
    unknown = [t for t in checkpoint_map.all_tokens() if t not in vocabulary]
    if unknown:
        raise SidMapMismatchError(f"{path}: the tokenizer lacks SID tokens of its sid_map.json, e.g. {unknown[:3]}")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    if has_lasar(path):
        load_lasar(model, path)
    model.eval()
    return model, tokenizer, checkpoint_map
