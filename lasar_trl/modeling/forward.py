"""The latent trajectory, and the LM head on labelled positions only, as `model(...)` calls.

Trainers must call the model they were handed (DDP's wrapper, Accelerate's autocast
wrapper, PEFT's wrapper), not the bare HF model inside it: DDP only averages gradients
after its own forward ran, and mixed precision lives in the wrapped forward. So, as TRL
does for its fused LM head, `add_latent_forward` patches the HF model's `forward`:
`model(latent={...})` runs `latent_forward`, `model(labelled={...})` runs
`labelled_forward`, any other call the original forward.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .lasar import get_lasar
from .latent import run_latent_loop, sid_logits_after_latents


@dataclass
class LatentOutput(ModelOutput):
    """What a training loss needs from one pass through prompt, latent slots and SID tokens."""

    logits: torch.Tensor | None = None  # (B, L + 1, V): SID tokens 1..L and <eos>, from h_N and the SID tokens
    first_state: torch.Tensor | None = None  # (B, H) h_0
    latent_states: torch.Tensor | None = None  # (B, T, H) h_1..h_T
    step_mask: torch.Tensor | None = None  # (B, T) real latent steps
    answer_state: torch.Tensor | None = None  # (B, H) h_{N_i}
    depth_logits: torch.Tensor | None = None  # (B, K) the Policy Head's, when asked for


def latent_forward(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    num_steps: torch.Tensor,
    sid_input_ids: torch.Tensor,
    *,
    max_steps: int | None = None,
    depth_logits: bool = False,
    detach_head_input: bool = True,
) -> LatentOutput:
    """Prompt -> N_i latent steps (the model's latent projection, if any) -> teacher-forced
    SID logits; with `depth_logits`, the Policy Head's logits on h_0 (detached by default,
    so only the head learns from them)."""
    lasar = get_lasar(model)
    projection = lasar.latent_projection if lasar is not None else None
    trajectory = run_latent_loop(
        model, prompt_ids, prompt_mask, num_steps, max_steps=max_steps, latent_projection=projection
    )
    head_logits = None
    if depth_logits:
        if lasar is None:
            raise ValueError("depth_logits needs a model with a Policy Head (attach_lasar / load_lasar)")
        first_state = trajectory.first_state.detach() if detach_head_input else trajectory.first_state
        head_logits = lasar.policy_head(first_state)
    return LatentOutput(
        logits=sid_logits_after_latents(model, trajectory, sid_input_ids),
        first_state=trajectory.first_state,
        latent_states=trajectory.latent_states,
        step_mask=trajectory.step_mask,
        answer_state=trajectory.answer_state,
        depth_logits=head_logits,
    )


@dataclass
class LabelledOutput(ModelOutput):
    """Logits of the positions that have a label, and those labels."""

    logits: torch.Tensor | None = None  # (n, V), float32
    labels: torch.Tensor | None = None  # (n,)


def labelled_forward(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> LabelledOutput:
    """Decoder over the whole batch, LM head only where the next token has a label (!= -100).

    A small model's LM head costs more than its layers, and most positions of a prompt
    carry no loss: scoring only the labelled ones is the same loss for a fraction of the
    cost. (TRL's fused LM head scores every position on devices without Triton.)"""
    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    next_labels = labels[:, 1:]
    keep = next_labels != -100
    logits = model.get_output_embeddings()(hidden[:, :-1][keep]).float()
    return LabelledOutput(logits=logits, labels=next_labels[keep])


def add_latent_forward(model: PreTrainedModel) -> None:
    """Patch `model.forward` so that `model(latent=dict(...))` returns `latent_forward(model, **latent)`
    and `model(labelled=dict(...))` returns `labelled_forward(model, **labelled)`."""
    if getattr(model, "_lasar_latent_forward", False):
        return
    original_forward = model.forward

    def forward(self, *args, latent: dict | None = None, labelled: dict | None = None, **kwargs):
        if labelled is not None:
            return labelled_forward(self, **labelled)
        if latent is None:
            return original_forward(*args, **kwargs)
        return latent_forward(self, **latent)

    model.forward = types.MethodType(forward, model)
    model._lasar_latent_forward = True
