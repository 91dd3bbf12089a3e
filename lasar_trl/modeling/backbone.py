"""Direct calls into a causal LM's decoder and LM head.

Our decoding (and, later, the latent loop) calls the decoder for hidden states
and the LM head for logits instead of `model.forward`, because TRL patches
`forward` with a fused LM head during training and because we need hidden
states and a KV cache under our control.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, PreTrainedModel


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that make a left-padded row behave exactly as if run alone."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def decoder_forward(
    model: PreTrainedModel,
    attention_mask: torch.Tensor,
    cache: DynamicCache,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the new positions (the last columns of `attention_mask`) through the decoder.

    attention_mask: (B, past + T); input_ids (B, T) or inputs_embeds (B, T, H).
    Returns the final-layer, post-norm hidden states (B, T, H); `cache` grows by T.
    """
    new_positions = (input_ids if input_ids is not None else inputs_embeds).shape[1]
    position_ids = position_ids_from_mask(attention_mask)[:, -new_positions:]
    outputs = model.get_decoder()(
        input_ids=input_ids,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        cache=cache,
        use_cache=True,
    )
    return outputs.last_hidden_state


def next_token_logits(model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    """LM-head logits of the last position, in float32. hidden: (B, T, H) -> (B, V)."""
    return model.get_output_embeddings()(hidden[:, -1]).float()
