"""Constrained beam search over SIDs: the one decoder used by evaluation and benchmarks.

The prompt is prefilled and the latent steps are run once per request (the same loop
as training), and the KV cache is then expanded per beam (`batch_repeat_interleave`),
instead of copying the prompt `num_beams` times before prefill as `model.generate`
does. Every SID has the same length L, so the search is exactly L steps with no
finished-beam bookkeeping, and the scores are SID log-probabilities.

Decoding settings are arguments of these functions and nothing else: a
checkpoint's `generation_config.json` is never read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from torch import nn
from transformers import DynamicCache, GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from ..modeling.backbone import decoder_forward, next_token_logits
from ..modeling.lasar import constant_depth, get_lasar
from ..modeling.latent import LatentTrajectory, run_latent_loop
from ..sid.sid_map import SidMap
from ..sid.tokenizer import BOT_TOKEN, EOT_TOKEN
from ..sid.trie import SidTrie
from ..tasks import history_prompt, prompt_template_of


@dataclass
class BeamSearchOutput:
    sequences: torch.Tensor  # (B, num_beams, L) token ids, best first
    scores: torch.Tensor  # (B, num_beams) summed log-probs; -inf for beams that could not be filled
    leaf_nodes: torch.Tensor  # (B, num_beams) trie nodes at depth L (-1 when unconstrained / unfilled)
    depths: torch.Tensor  # (B,) latent steps run before decoding


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


def reason(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    num_steps: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None,
    latent_projection: nn.Module | None,
    max_steps: int | None = None,
    group_sizes: torch.Tensor | None = None,
) -> tuple[LatentTrajectory, torch.Tensor]:
    """Prefill and latent steps (none when `num_steps` is None; `max_steps` forward calls
    when given; each prompt once for `group_sizes` rows when given, see `run_latent_loop`),
    then the float32 logits of SID token 1 (rows, V): where both decoders start."""
    trajectory = run_latent_loop(
        model, input_ids, attention_mask, constant_depth(0) if num_steps is None else num_steps,
        max_steps=max_steps, latent_projection=latent_projection, group_sizes=group_sizes,
    )
    return trajectory, next_token_logits(model, trajectory.answer_state.unsqueeze(1))


@torch.inference_mode()
def sid_beam_search(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: SidTrie,
    num_beams: int,
    banned_items: Sequence[Sequence[int]] | None = None,
    constrained: bool = True,
    num_steps: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
    latent_projection: nn.Module | None = None,
    max_steps: int | None = None,
    group_sizes: torch.Tensor | None = None,
) -> BeamSearchOutput:
    """Beam search for L = trie.sid_length tokens after the prompt and its latent steps.

    `num_steps`: latent depths (B,), or a function of h_0 choosing them (the Policy Head);
    None means no latent steps. `constrained=False` searches the whole vocabulary (for
    measuring the cost of the constraint); `banned_items` removes, per request, item
    indices of the trie (e.g. the user's history). `group_sizes` (see `reason`) makes each
    prompt group_sizes[b] requests, each with its own depth and search; B then counts requests.
    """
    trajectory, logits = reason(model, input_ids, attention_mask, num_steps, latent_projection, max_steps, group_sizes)
    batch_size, length = len(trajectory.num_steps), trie.sid_length
    cache, attention_mask = trajectory.cache, trajectory.attention_mask
    log_probs = torch.log_softmax(logits, dim=-1)  # (B, V)
    vocab_size = log_probs.shape[-1]
    dead = trie.dead_nodes(banned_items) if (constrained and banned_items is not None) else None

    nodes = trie.root(batch_size)
    if constrained:
        log_probs = trie.mask_scores(log_probs, nodes, 0, dead)
    scores, tokens = log_probs.topk(num_beams, dim=-1)  # (B, K)
    sequences = tokens.reshape(-1, 1)  # (B*K, 1)
    nodes = trie.advance(trie.root(batch_size * num_beams), 0, sequences[:, 0])
    cache.batch_repeat_interleave(num_beams)
    attention_mask = attention_mask.repeat_interleave(num_beams, dim=0)
    if dead is not None:
        dead = dead.repeat_interleave(num_beams, dim=0)
    beam_offsets = (torch.arange(batch_size, device=input_ids.device) * num_beams).unsqueeze(1)

    for depth in range(1, length):
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(attention_mask), 1)], dim=1)
        hidden = decoder_forward(model, attention_mask, cache, input_ids=sequences[:, -1:])
        log_probs = torch.log_softmax(next_token_logits(model, hidden), dim=-1)  # (B*K, V)
        if constrained:  # beams with -inf score may hold an invalid node: any node of this depth will do
            log_probs = trie.mask_scores(log_probs, nodes.clamp(min=trie.depth_offset[depth]), depth, dead)
        candidates = (scores.reshape(-1, 1) + log_probs).reshape(batch_size, num_beams * vocab_size)
        scores, flat_index = candidates.topk(num_beams, dim=-1)  # (B, K)
        beam_index = (beam_offsets + flat_index // vocab_size).reshape(-1)
        tokens = (flat_index % vocab_size).reshape(-1, 1)
        cache.reorder_cache(beam_index)
        sequences = torch.cat([sequences[beam_index], tokens], dim=1)
        nodes = trie.advance(nodes[beam_index], depth, tokens[:, 0])

    return BeamSearchOutput(
        sequences=sequences.reshape(batch_size, num_beams, length),
        scores=scores,
        leaf_nodes=nodes.reshape(batch_size, num_beams),
        depths=trajectory.num_steps,
    )


@dataclass
class SampleOutput:
    sequences: torch.Tensor  # (B, L) SID token ids, always a real item's
    log_probs: torch.Tensor  # (B,) summed full-vocabulary log-probs at temperature 1 (as beam scores are)
    leaf_nodes: torch.Tensor  # (B,) trie nodes at depth L
    depths: torch.Tensor  # (B,) latent steps run before decoding


@torch.inference_mode()
def sid_sample(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: SidTrie,
    *,
    temperature: float = 1.0,
    num_steps: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
    latent_projection: nn.Module | None = None,
    max_steps: int | None = None,
    generator: torch.Generator | None = None,
    group_sizes: torch.Tensor | None = None,
) -> SampleOutput:
    """One SID per row, token by token under the trie after the latent steps: sampled from
    softmax(logits / temperature) over the valid next tokens, or greedy at temperature 0.
    What RL rollouts decode with; `group_sizes` (see `reason`) prefills each prompt once for
    the group_sizes[b] rows that sample from it."""
    trajectory, logits = reason(model, input_ids, attention_mask, num_steps, latent_projection, max_steps, group_sizes)
    batch_size = len(trajectory.num_steps)
    cache, attention_mask = trajectory.cache, trajectory.attention_mask
    nodes, tokens, total = trie.root(batch_size), [], logits.new_zeros(batch_size)
    for depth in range(trie.sid_length):
        if depth:
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch_size, 1)], dim=1)
            logits = next_token_logits(model, decoder_forward(model, attention_mask, cache, input_ids=tokens[-1]))
        if temperature == 0:
            token = trie.mask_scores(logits, nodes, depth).argmax(-1)
        else:
            probs = torch.softmax(trie.mask_scores(logits / temperature, nodes, depth), dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        total += torch.log_softmax(logits, dim=-1).gather(-1, token.unsqueeze(-1)).squeeze(-1)
        nodes = trie.advance(nodes, depth, token)
        tokens.append(token.unsqueeze(-1))
    return SampleOutput(torch.cat(tokens, dim=1), total, nodes, trajectory.num_steps)


@torch.inference_mode()
def write_rationales(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, eot_id: int, max_tokens: int
) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Explicit chain of thought: a greedy rationale after each left-padded prompt, ended by
    `<eot>` (appended when `max_tokens` run out). Returns the prompts with their rationales,
    left-padded again (the prompt of the SID search), and each rationale's token count."""
    config = GenerationConfig(
        max_new_tokens=max_tokens, min_new_tokens=0, do_sample=False, num_beams=1, eos_token_id=eot_id,
        pad_token_id=eot_id, bos_token_id=None, repetition_penalty=1.0,
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
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sid_map: SidMap, histories: Sequence[Sequence[str]],
    batch_size: int, show_progress: bool = False,
):
    """(start index, encoded prompt batch) over `histories`, `batch_size` at a time, in the
    model's prompt template."""
    template = prompt_template_of(model)
    starts = range(0, len(histories), batch_size)
    for start in tqdm(starts, desc="recommend", unit="batch", disable=not show_progress):
        prompts = [history_prompt(h, sid_map, template) for h in histories[start : start + batch_size]]
        yield start, encode_prompts(tokenizer, prompts, model.device)


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
    user's history, as full-ranking evaluators such as RecBole do).
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
                model, **batch, trie=trie, num_beams=num_beams, banned_items=banned,
                num_steps=num_steps, latent_projection=projection,
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
