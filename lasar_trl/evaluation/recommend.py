"""Recommendations from a checkpoint: prompts in its template, an explicit-CoT checkpoint's
rationale, then the SID-constrained beam search of `lasar_trl.decoding`.

Decoding settings are arguments of these functions and nothing else: a
checkpoint's `generation_config.json` is never read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from ..decoding import sid_beam_search
from ..modeling.backbone import decoder_forward
from ..modeling.lasar import check_forced_depth, constant_depth, get_lasar
from ..sid.sid_map import SidMap
from ..sid.tokenizer import BOT_TOKEN, EOT_TOKEN
from ..sid.trie import SidTrie
from ..tasks import history_prompt, prompt_template_of

logger = logging.getLogger(__name__)


@dataclass
class Recommendations:
    items: list[list[str]]  # per request, top-k item ids, best first, distinct
    scores: list[list[float]]  # their SID log-probs
    generated_sids: list[str]  # per request, the top beam's tokens as one string (to audit validity)
    depths: list[int]  # per request, the latent steps it reasoned for
    rationale_tokens: list[int]  # per request, the explicit rationale's tokens (`<eot>` included; 0 without)


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], device) -> dict[str, torch.Tensor]:
    """Left-padded prompt batch, tokenized exactly as TRL's SFTTrainer tokenizes prompts.

    Every prompt must end in `<bot>` once tokenized: the latent steps and the SID start
    there (a tokenizer that appends EOS would silently shift them)."""
    batch = tokenizer(list(prompts), padding=True, padding_side="left", return_tensors="pt")
    bot_id = tokenizer.convert_tokens_to_ids(BOT_TOKEN)
    if not (batch["input_ids"][:, -1] == bot_id).all():
        row = int((batch["input_ids"][:, -1] != bot_id).nonzero()[0])
        raise ValueError(
            f"prompt {row} does not end in {BOT_TOKEN} once tokenized (last token "
            f"{tokenizer.convert_ids_to_tokens(int(batch['input_ids'][row, -1]))!r}); does the tokenizer append one?"
        )
    return {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}


@torch.inference_mode()
def write_rationales(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, eot_id: int, max_tokens: int
) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Explicit chain of thought: a greedy rationale after each left-padded prompt, ended by
    `<eot>` (appended when `max_tokens` run out). Returns the prompts with their rationales,
    left-padded again (the prompt of the SID search), and each rationale's token count."""
    config = GenerationConfig(
        max_new_tokens=max_tokens,
        min_new_tokens=0,
        do_sample=False,
        num_beams=1,
        eos_token_id=eot_id,
        pad_token_id=eot_id,
        bos_token_id=None,
        repetition_penalty=1.0,
    )
    generated = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    rows, lengths = [], []
    for prompt, mask, new in zip(input_ids, attention_mask, generated[:, input_ids.shape[1] :].tolist()):
        rationale = new[: new.index(eot_id) + 1] if eot_id in new else [*new, eot_id]
        rows.append([*prompt[mask.bool()].tolist(), *rationale])
        lengths.append(len(rationale))
    width = max(len(row) for row in rows)
    ids = input_ids.new_full((len(rows), width), eot_id)  # padding: masked, any id will do
    mask = attention_mask.new_zeros((len(rows), width))
    for index, row in enumerate(rows):
        ids[index, width - len(row) :] = torch.tensor(row)
        mask[index, width - len(row) :] = 1
    return {"input_ids": ids, "attention_mask": mask}, lengths


def prompt_batches(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sid_map: SidMap,
    histories: Sequence[Sequence[str]],
    batch_size: int,
    show_progress: bool = False,
):
    """(start index, encoded prompt batch) over `histories`, `batch_size` at a time, in the
    model's prompt template."""
    template = prompt_template_of(model)
    starts = range(0, len(histories), batch_size)
    for start in tqdm(starts, desc="recommend", unit="batch", disable=not show_progress):
        prompts = [history_prompt(h, sid_map, template) for h in histories[start : start + batch_size]]
        yield start, encode_prompts(tokenizer, prompts, model.device)


def check_depth(model: PreTrainedModel, depth: int | None) -> None:
    """`check_forced_depth` for a loaded model: its Policy Head's `n_max`, or none without one."""
    lasar = get_lasar(model)
    check_forced_depth(depth, lasar.config.n_max if lasar is not None else None, "this checkpoint")


@torch.inference_mode()
def policy_depths(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sid_map: SidMap,
    histories: Sequence[Sequence[str]],
    batch_size: int = 8,
) -> list[int]:
    """The depth a LASAR checkpoint would reason for on each history (its Policy Head's
    argmax on h_0, or its fixed depth), from the prefill alone: no latent step, no search."""
    lasar = get_lasar(model)
    if lasar is None:
        raise ValueError("policy_depths needs a LASAR checkpoint (a model with a Policy Head)")
    choose, depths = lasar.depth_policy(), []
    for _, batch in prompt_batches(model, tokenizer, sid_map, histories, batch_size):
        cache = DynamicCache(config=model.config)
        first_state = decoder_forward(model, batch["attention_mask"], cache, input_ids=batch["input_ids"])[:, -1]
        depths += choose(first_state).tolist()
    return depths


def recommend(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sid_map: SidMap,
    histories: Sequence[Sequence[str]],
    *,
    top_k: int = 10,
    num_beams: int = 20,
    batch_size: int = 8,
    exclude_items: Sequence[Sequence[str]] | None = None,
    trie: SidTrie | None = None,
    depth: int | None = None,
    max_rationale_tokens: int = 128,
    show_progress: bool = False,
) -> Recommendations:
    """Top-k distinct item ids per history, from SID-constrained beam search after the
    latent steps.

    The depth per history is `depth` when given; otherwise a LASAR checkpoint's own
    choice (its Policy Head's argmax, or its fixed depth) and 0 for a plain model.
    An explicit-CoT checkpoint (a tokenizer with `<eot>`, no Policy Head) first writes
    its rationale greedily (at most `max_rationale_tokens`), then searches the same way.
    `exclude_items` bans, per request, items from that request's trie (e.g. the
    user's history, as full-ranking evaluators such as RecBole do). A forced `depth` is
    checked by `check_depth`.
    """
    if num_beams < top_k:
        raise ValueError(f"num_beams ({num_beams}) must be >= top_k ({top_k})")
    trie = trie or SidTrie.from_sid_map(sid_map, tokenizer).to(model.device)
    item_ids = sid_map.item_ids
    item_index = {item: i for i, item in enumerate(item_ids)}
    lasar = get_lasar(model)
    if lasar is not None:
        num_steps, projection = lasar.depth_policy(depth), lasar.latent_projection
    else:
        num_steps, projection = (None if depth is None else constant_depth(depth)), None
    eot_id = tokenizer.convert_tokens_to_ids(EOT_TOKEN) if EOT_TOKEN in tokenizer.get_vocab() else None
    if eot_id is not None and (lasar is not None or depth):
        raise ValueError("an explicit-CoT checkpoint reasons in text: it has no latent steps to run")
    check_depth(model, depth)
    was_training = model.training
    model.eval()
    items, scores, generated_sids, depths, rationale_tokens = [], [], [], [], []
    try:
        for start, batch in prompt_batches(model, tokenizer, sid_map, histories, batch_size, show_progress):
            lengths = [0] * len(batch["input_ids"])
            if eot_id is not None:
                batch, lengths = write_rationales(model, **batch, eot_id=eot_id, max_tokens=max_rationale_tokens)
            rationale_tokens += lengths
            banned = None
            if exclude_items is not None:
                banned = [[item_index[i] for i in items] for items in exclude_items[start : start + batch_size]]
            output = sid_beam_search(
                model,
                **batch,
                trie=trie,
                num_beams=num_beams,
                banned_items=banned,
                num_steps=num_steps,
                latent_projection=projection,
            )
            depths += output.depths.tolist()
            leaf_items = trie.items_of(output.leaf_nodes).tolist()
            generated_sids += ["".join(tokenizer.convert_ids_to_tokens(row)) for row in output.sequences[:, 0].tolist()]
            for row_items, row_scores in zip(leaf_items, output.scores.tolist()):
                kept = [(item_ids[i], s) for i, s in zip(row_items, row_scores) if s > float("-inf")][:top_k]
                items.append([item for item, _ in kept])
                scores.append([s for _, s in kept])
    finally:
        model.train(was_training)
    return Recommendations(
        items=items, scores=scores, generated_sids=generated_sids, depths=depths, rationale_tokens=rationale_tokens
    )
