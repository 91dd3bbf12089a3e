"""Anchors: the Stage-1 model's hidden states at the end of each CoT segment.

Anchor a_s is the final-layer, post-norm hidden state (the space of the latent states
h_t) at the last token of segment s, from one no-grad forward pass over `prompt + cot`.
The prompt ends with the special token `<bot>` and the CoT follows with no separator,
just as Stage 1 appends the SID completion to `<bot>`; the anchors therefore sit on the
`P <bot> ...` prefix the latent loop starts from, and an offset into `cot` is an offset
into the text after `len(prompt)`.

Anchors are extracted once per (model, SID map) and kept in an `AnchorStore`: a folder
of safetensors shards keyed by sample, so an interrupted or repeated run only computes
what is missing. Under several processes each extracts its own share of the samples into
its own shards (`anchors_for_samples(..., state=PartialState())`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from accelerate import PartialState
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl.trainer.utils import pad

from ..atomic import atomic_path, write_json_atomic
from ..modeling.backbone import position_ids_from_mask
from ..sid.sid_map import SidMap
from ..sid.tokenizer import BOT_TOKEN
from .segment import segment_end_offsets

logger = logging.getLogger(__name__)

META_FILE = "anchor_meta.json"
SHARD_RE = re.compile(r"anchors-p(\d+)-(\d{5,})\.safetensors")  # writer (process index), shard number
# Fingerprint field -> the words an AnchorMismatchError uses for it.
FINGERPRINT_FIELDS = {
    "hidden_size": "hidden size",
    "sid_map_sha256": "SID map",
    "weights_sha256": "model weights",
}
WEIGHT_SAMPLE = 256  # values read from each parameter for the weights hash


class AnchorMismatchError(ValueError):
    """An anchor store was made by another model or SID map than the one asking for it."""


def anchor_token_positions(
    tokenizer: PreTrainedTokenizerBase, prompt: str, cot: str, segments: Sequence[str]
) -> tuple[list[int], list[int]]:
    """Token ids of `prompt + cot`, and per segment the index of the token holding its last character.

    Tokenized as the prompts of Stage 1 and recommendation are (special tokens added by
    the tokenizer's default). Needs a fast tokenizer for the character offsets.
    """
    if not tokenizer.is_fast:
        raise ValueError("anchor_token_positions needs a fast tokenizer (character offsets)")
    if not cot.strip() or not segments:
        raise ValueError(f"the CoT is empty or has no segments: nothing to anchor (prompt {prompt[-60:]!r})")
    text = prompt + cot
    encoding = tokenizer(text, return_offsets_mapping=True)
    token_at = [-1] * len(text)  # character -> the last token whose span covers it
    for index, (start, end) in enumerate(encoding["offset_mapping"]):
        token_at[start:end] = [index] * (end - start)
    positions = []
    for index, end in enumerate(segment_end_offsets(cot, segments)):
        position = token_at[len(prompt) + end - 1]
        if position < 0:
            raise ValueError(f"segment {index} ({segments[index][-60:]!r}): its last character has no token")
        if positions and position == positions[-1]:
            raise ValueError(
                f"segments {index - 1} and {index} end on the same token "
                f"({tokenizer.convert_ids_to_tokens(encoding['input_ids'][position])!r}): merge them"
            )
        positions.append(position)
    return list(encoding["input_ids"]), positions


def _check_one_per_sample(prompts: Sequence, cots: Sequence, segments: Sequence) -> None:
    if not len(prompts) == len(cots) == len(segments):
        raise ValueError(
            f"{len(prompts)} prompts, {len(cots)} CoTs and {len(segments)} segment lists: one each per sample"
        )


@torch.inference_mode()
def _final_hidden_states(model: PreTrainedModel, token_ids: list[list[int]], pad_id: int) -> Tensor:
    """Decoder output (B, T, H) for right-padded rows of token ids.

    Causal attention keeps a real token from seeing the padding after it; the mask and
    positions from it (as in the latent loop) keep rows independent of padding anyway.
    """
    rows = [torch.tensor(ids, dtype=torch.long) for ids in token_ids]
    input_ids = pad(rows, padding_value=pad_id).to(model.device)
    attention_mask = pad([torch.ones_like(row) for row in rows]).to(model.device)
    # The decoder, not model.forward: TRL patches forward with a fused LM head during training.
    outputs = model.get_decoder()(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    return outputs.last_hidden_state


def extract_anchors(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    cots: Sequence[str],
    segments: Sequence[Sequence[str]],
    *,
    batch_size: int = 8,
    show_progress: bool = False,
) -> list[Tensor]:
    """Anchors per sample: an (S_i, H) float32 CPU tensor, row s = a_s.

    Samples are batched by similar length (less padding); every row gives what it gives
    alone. The model runs in eval mode and gets its mode back afterwards.
    """
    _check_one_per_sample(prompts, cots, segments)
    encoded = [anchor_token_positions(tokenizer, *sample) for sample in zip(prompts, cots, segments)]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # masked: any id will do
    anchors: list[Tensor] = [torch.empty(0)] * len(encoded)
    was_training = model.training
    model.eval()
    try:
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc="anchors", unit="batch", disable=not show_progress):
            rows = order[start : start + batch_size]
            hidden = _final_hidden_states(model, [encoded[i][0] for i in rows], pad_id)  # (B, T, H)
            for row, sample in enumerate(rows):
                # Indexed outside inference mode, so the anchors are ordinary tensors that a
                # training loss may use (inference tensors cannot be saved for backward).
                anchors[sample] = hidden[row, encoded[sample][1]].float().cpu()
    finally:
        model.train(was_training)
    return anchors


def sample_key(prompt: str, cot: str, segments: Sequence[str] | None = None) -> str:
    """sha256 hex naming a sample in an anchor store.

    With `segments`, the key also covers where they end in `cot`, so re-segmenting the
    same CoT (another merge threshold) never returns anchors of the old segmentation.
    """
    parts: list = [prompt, cot]
    if segments is not None:
        parts.append(segment_end_offsets(cot, segments))
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()


def _weights_sha256(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of the `<bot>` embedding row and, per parameter, its shape and up to 256 evenly spaced values.

    `<bot>` is a new row that only Stage 1 trains, and a full or LoRA fine-tune (merged
    or not) moves nearly every value of the tensors it touches, so this sample tells
    checkpoints apart while reading kilobytes, not the whole model.
    """
    if BOT_TOKEN not in tokenizer.get_vocab():
        raise ValueError(f"the tokenizer has no {BOT_TOKEN} token: run add_sid_tokens (Stage 1) first")
    bot_row = model.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids(BOT_TOKEN)]
    digest = hashlib.sha256()
    with torch.no_grad():
        for tensor in (bot_row, *model.parameters()):
            flat = tensor.detach().reshape(-1)
            count = min(flat.numel(), WEIGHT_SAMPLE)
            # integer spacing: float linspace rounds past the end of tensors this large
            index = torch.arange(count, device=flat.device) * (flat.numel() - 1) // max(count - 1, 1)
            picked = flat[index]
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(picked.float().cpu().numpy().tobytes())
    return digest.hexdigest()


def model_fingerprint(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sid_map: SidMap) -> dict:
    """What an anchor store's contents depend on, beyond the sample text its keys cover.

    - hidden_size: the anchor width;
    - sid_map_sha256: the map's item -> SID content, because a rebuilt map may give the
      same SID strings (hence the same prompts and keys) to different items;
    - weights_sha256: the exact checkpoint (see `_weights_sha256`); the dtype counts too,
      as bf16 and float32 copies give slightly different anchors.
    """
    sids = {item: sid_map.sid(item) for item in sid_map.item_ids}
    sid_json = json.dumps(sids, sort_keys=True, ensure_ascii=False)
    return {
        "hidden_size": model.config.get_text_config().hidden_size,
        "sid_map_sha256": hashlib.sha256(sid_json.encode("utf-8")).hexdigest(),
        "weights_sha256": _weights_sha256(model, tokenizer),
    }


class AnchorStore:
    """A folder of anchors: `anchor_meta.json` (the fingerprint) and `anchors-pW-NNNNN.safetensors`
    shards (W: the writer), one (S, H) float32 tensor per sample key.

    Shards are written whole to a temp file and renamed into place, so a crash leaves
    only complete shards (stray temp files are ignored). Several processes may write at
    once, each under its own `writer` number; a store sees the shards that existed when
    it was opened plus its own. Only safetensors is read, never pickle.
    """

    def __init__(self, directory: str | os.PathLike, fingerprint: dict, writer: int = 0):
        self.directory = Path(directory)
        self.fingerprint = dict(fingerprint)
        self.writer = writer
        meta = self.directory / META_FILE
        shards = sorted(
            (int(match.group(1)), int(match.group(2)), path)
            for path in (self.directory.glob("anchors-*.safetensors") if self.directory.is_dir() else ())
            if (match := SHARD_RE.fullmatch(path.name))
        )
        if meta.exists():
            self._check_fingerprint(json.loads(meta.read_text(encoding="utf-8")))
        elif shards:
            raise AnchorMismatchError(
                f"{self.directory} holds anchor shards but no {META_FILE}: their model is unknown"
            )
        else:
            write_json_atomic(meta, self.fingerprint)
        self._shard_of: dict[str, Path] = {}
        for _, _, path in shards:
            with safe_open(path, framework="pt") as shard:
                self._shard_of.update(dict.fromkeys(shard.keys(), path))
        self._next_shard = 1 + max((number for owner, number, _ in shards if owner == writer), default=-1)

    def _check_fingerprint(self, stored: dict) -> None:
        for field, words in FINGERPRINT_FIELDS.items():
            if stored.get(field) != self.fingerprint.get(field):
                raise AnchorMismatchError(
                    f"{self.directory}: anchors were extracted with a different {words} "
                    f"({field} {stored.get(field)!r}, now {self.fingerprint.get(field)!r}); "
                    "use a new anchor directory or delete this one"
                )

    def __contains__(self, key: object) -> bool:
        return key in self._shard_of

    def __len__(self) -> int:
        return len(self._shard_of)

    def get(self, keys: Sequence[str]) -> list[Tensor]:
        """Anchors of `keys`, in order; each shard is opened once."""
        missing = [key for key in keys if key not in self._shard_of]
        if missing:
            raise KeyError(f"{len(missing)} keys are not in {self.directory}, e.g. {missing[0]}")
        found: dict[str, Tensor] = {}
        for path in dict.fromkeys(self._shard_of[key] for key in keys):
            with safe_open(path, framework="pt") as shard:
                found.update((key, shard.get_tensor(key)) for key in keys if self._shard_of[key] == path)
        return [found[key] for key in keys]

    def add(self, anchors: dict[str, Tensor]) -> None:
        """Write `anchors` (key -> (S, H) tensor) as one new shard."""
        if not anchors:
            return
        width = self.fingerprint["hidden_size"]
        for key, anchor in anchors.items():
            if key in self._shard_of:
                raise ValueError(f"{key} is already in {self.directory}")
            if anchor.ndim != 2 or anchor.shape[1] != width:
                raise ValueError(f"anchor {key} has shape {tuple(anchor.shape)}, expected (S, {width})")
        path = self.directory / f"anchors-p{self.writer}-{self._next_shard:05d}.safetensors"
        with atomic_path(path) as temp:
            save_file({key: anchor.float().cpu().contiguous() for key, anchor in anchors.items()}, temp)
        self._shard_of.update(dict.fromkeys(anchors, path))
        self._next_shard += 1


def anchors_for_samples(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sid_map: SidMap,
    prompts: Sequence[str],
    cots: Sequence[str],
    segments: Sequence[Sequence[str]],
    store_dir: str | os.PathLike,
    *,
    batch_size: int = 8,
    shard_size: int = 512,
    show_progress: bool = False,
    state: PartialState | None = None,
) -> list[Tensor]:
    """Anchors of every sample, in order, extracting only those not yet in the store at `store_dir`.

    Missing samples are extracted `shard_size` at a time and each chunk is saved as a
    shard at once, so a crash loses at most one chunk and a rerun resumes. With `state`
    (accelerate's `PartialState`, every process calling), process k extracts the k-th of
    every `num_processes` distinct samples, then all wait and read every sample's anchors.
    """
    _check_one_per_sample(prompts, cots, segments)
    fingerprint = model_fingerprint(model, tokenizer, sid_map)
    writer, writers = (state.process_index, state.num_processes) if state is not None else (0, 1)
    store = AnchorStore(store_dir, fingerprint, writer)
    keys = [sample_key(*sample) for sample in zip(prompts, cots, segments)]
    first_of_key = list({key: index for index, key in enumerate(keys)}.values())
    # A share fixed by position, not by what is missing: it cannot depend on when each process looked.
    missing = [index for index in first_of_key[writer::writers] if keys[index] not in store]
    logger.info(
        "anchors: %d distinct samples of %d, this process extracts %d of its %d into %s",
        len(first_of_key),
        len(keys),
        len(missing),
        len(first_of_key[writer::writers]),
        store_dir,
    )
    for start in range(0, len(missing), shard_size):
        chunk = missing[start : start + shard_size]
        anchors = extract_anchors(
            model,
            tokenizer,
            [prompts[i] for i in chunk],
            [cots[i] for i in chunk],
            [segments[i] for i in chunk],
            batch_size=batch_size,
            show_progress=show_progress,
        )
        store.add({keys[i]: anchor for i, anchor in zip(chunk, anchors)})
    if writers > 1:
        state.wait_for_everyone()
        store = AnchorStore(store_dir, fingerprint, writer)  # now with every process's shards
    anchors = store.get(keys)
    for index, anchor in enumerate(anchors):
        if anchor.shape != (len(segments[index]), fingerprint["hidden_size"]):
            raise ValueError(
                f"sample {index}: stored anchors have shape {tuple(anchor.shape)}, expected "
                f"({len(segments[index])} segments, hidden size {fingerprint['hidden_size']})"
            )
    return anchors
