"""The latent reasoning loop: one implementation for training,
RL rollouts, log-prob recomputation and evaluation.

After the prompt `P <bot>` is prefilled (output h_0 at `<bot>`), slot t = 1..N takes the
previous final-layer hidden state h_{t-1} as its input embedding and outputs h_t, one
position at a time with the KV cache reused. The LM head on h_N predicts SID token 1.

Rows of a batch may have different N: the loop runs max(N) slots; slots past a row's
own N are padding (attention mask 0, zero input), so later positions never see them,
and position ids `cumsum(mask) - 1` continue from the row's last real slot. Each row
therefore behaves exactly as if it were run alone.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedModel

from .backbone import decoder_forward


@dataclass
class LatentTrajectory:
    cache: DynamicCache  # holds P, the latent slots, and whatever is decoded next
    attention_mask: torch.Tensor  # (B, P + T): prompt mask, then 1 on real slots, 0 on padding slots
    first_state: torch.Tensor  # (B, H) h_0, the output at <bot> (read by the Policy Head)
    latent_states: torch.Tensor  # (B, T, H) h_1..h_T; padding slots hold garbage, see step_mask
    step_mask: torch.Tensor  # (B, T) 1 where t <= N_i
    num_steps: torch.Tensor  # (B,) N_i
    answer_state: torch.Tensor  # (B, H) h_{N_i}: the state whose LM-head output is SID token 1


@contextmanager
def cache_kept_under_checkpointing(model: nn.Module):
    """Switch gradient checkpointing off while the latent loop runs.

    In train mode transformers 5 drops the KV cache of checkpointed layers, so a cached
    latent loop would silently run without its context. The loss is unchanged; memory
    for the loop's activations is what checkpointing would have saved.
    """
    # the layers and the decoder itself (which would otherwise force use_cache=False)
    modules = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]
    for module in modules:
        module.gradient_checkpointing = False
    try:
        yield
    finally:
        for module in modules:
            module.gradient_checkpointing = True


def run_latent_loop(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    num_steps: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
    *,
    max_steps: int | None = None,
    latent_projection: nn.Module | None = None,
    group_sizes: torch.Tensor | None = None,
) -> LatentTrajectory:
    """Prefill the left-padded prompts (B, P) ending in `<bot>`, then run N_i latent steps per row.

    num_steps: (B,) depths, or a function of h_0 (B, H) that returns them (the Policy
    Head's choice, made after the prefill). `max_steps` (>= max N_i) lets every process of
    a distributed run do the same number of forward calls.

    `group_sizes` (B,): prompt b stands for group_sizes[b] consecutive rows of the result
    (an RL group), so it is prefilled once and its KV cache repeated; the depths (one per
    result row) are chosen after that, so each row still draws its own.
    """
    cache = DynamicCache(config=model.config)
    with cache_kept_under_checkpointing(model):
        first_state = decoder_forward(model, attention_mask, cache, input_ids=input_ids)[:, -1]  # (B, H)
        if group_sizes is not None:
            rows = torch.arange(len(group_sizes), device=first_state.device).repeat_interleave(
                group_sizes.to(first_state.device)
            )
            cache.reorder_cache(rows)
            first_state, attention_mask = first_state[rows], attention_mask[rows]
        num_steps = (num_steps(first_state) if callable(num_steps) else num_steps).to(first_state.device)
        total_steps = int(num_steps.max()) if max_steps is None else max_steps
        if len(num_steps) and int(num_steps.max()) > total_steps:
            raise ValueError(f"max_steps={total_steps} is below the largest requested depth {int(num_steps.max())}")
        state, states, masks = first_state, [], []
        for step in range(1, total_steps + 1):
            active = num_steps >= step  # (B,)
            attention_mask = torch.cat([attention_mask, active.to(attention_mask.dtype).unsqueeze(1)], dim=1)
            slot_input = latent_projection(state) if latent_projection is not None else state
            slot_input = slot_input * active.unsqueeze(1).to(slot_input.dtype)
            output = decoder_forward(model, attention_mask, cache, inputs_embeds=slot_input.unsqueeze(1))[:, -1]
            state = torch.where(active.unsqueeze(1), output, state)  # finished rows keep h_{N_i}
            states.append(output)
            masks.append(active)
    hidden_size = first_state.shape[-1]
    return LatentTrajectory(
        cache=cache,
        attention_mask=attention_mask,
        first_state=first_state,
        latent_states=torch.stack(states, 1) if states else first_state.new_zeros(len(first_state), 0, hidden_size),
        step_mask=torch.stack(masks, 1) if masks else num_steps.new_zeros(len(num_steps), 0, dtype=torch.bool),
        answer_state=state,
        num_steps=num_steps,
    )


def sid_logits_after_latents(
    model: PreTrainedModel, trajectory: LatentTrajectory, sid_input_ids: torch.Tensor
) -> torch.Tensor:
    """Teacher-forced logits for SID tokens 1..L and <eos>: (B, L + 1, V).

    sid_input_ids (B, L) are the SID tokens fed after the latent slots; position 0 of the
    result comes from the LM head on h_{N_i}, position k from SID token k's output.
    """
    attention_mask = torch.cat([trajectory.attention_mask, trajectory.attention_mask.new_ones(sid_input_ids.shape)], 1)
    with cache_kept_under_checkpointing(model):
        sid_hidden = decoder_forward(model, attention_mask, trajectory.cache, input_ids=sid_input_ids)  # (B, L, H)
    hidden = torch.cat([trajectory.answer_state.unsqueeze(1), sid_hidden], dim=1)
    return model.get_output_embeddings()(hidden)
