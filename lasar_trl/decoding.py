"""Constrained decoding over SIDs: the beam search that evaluation recommends with, and the
sampler and beam search that GRPO rollouts decode with (both import this module, so
training imports no evaluation code).

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
from torch import nn
from transformers import PreTrainedModel

from .modeling.backbone import decoder_forward, next_token_logits
from .modeling.lasar import constant_depth
from .modeling.latent import LatentTrajectory, run_latent_loop
from .sid.trie import SidTrie


@dataclass
class BeamSearchOutput:
    sequences: torch.Tensor  # (B, num_beams, L) token ids, best first
    scores: torch.Tensor  # (B, num_beams) summed log-probs; -inf for beams that could not be filled
    leaf_nodes: torch.Tensor  # (B, num_beams) trie nodes at depth L (-1 when unconstrained / unfilled)
    depths: torch.Tensor  # (B,) latent steps run before decoding


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
        model,
        input_ids,
        attention_mask,
        constant_depth(0) if num_steps is None else num_steps,
        max_steps=max_steps,
        latent_projection=latent_projection,
        group_sizes=group_sizes,
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
