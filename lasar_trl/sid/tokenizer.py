"""Teach a tokenizer and model the SID vocabulary."""

from __future__ import annotations

import torch
from transformers import AddedToken

from .sid_map import SidMap

BOT_TOKEN = "<bot>"
EOT_TOKEN = "<eot>"  # ends an explicit rationale before the SID (the explicit-CoT baseline only)


def add_sid_tokens(model, tokenizer, sid_map: SidMap, seed: int = 0) -> int:
    """Add SID tokens (ordinary) and `<bot>` (special); resize embeddings. Returns tokens added.

    SID tokens are not special so that `batch_decode(skip_special_tokens=True)`
    (used by TRL) keeps them. New embedding and (untied) LM-head rows are drawn
    from a Gaussian with the per-dimension mean and std of the existing rows:
    they look like ordinary token embeddings yet differ from each other.
    (transformers' `mean_resizing` samples with a 1e-9-scaled covariance, which
    makes every new row nearly the mean row.)
    """
    vocab = tokenizer.get_vocab()
    new_tokens = [token for token in sid_map.all_tokens() if token not in vocab]
    added = tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in new_tokens])
    if BOT_TOKEN not in vocab:
        added += tokenizer.add_tokens([AddedToken(BOT_TOKEN, normalized=False, special=True)], special_tokens=True)
    _grow_embeddings(model, tokenizer, seed)
    return added


def add_eot_token(model, tokenizer, seed: int = 0) -> int:
    """Add `<eot>` (special), which ends an explicit rationale; new rows as in `add_sid_tokens`."""
    if EOT_TOKEN in tokenizer.get_vocab():
        return 0
    added = tokenizer.add_tokens([AddedToken(EOT_TOKEN, normalized=False, special=True)], special_tokens=True)
    _grow_embeddings(model, tokenizer, seed)
    return added


def _grow_embeddings(model, tokenizer, seed: int) -> None:
    """Resize the embeddings to the tokenizer; draw the new rows (see `add_sid_tokens`)."""
    old_size = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > old_size:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        generator = torch.Generator().manual_seed(seed)
        embeddings = [model.get_input_embeddings()]
        if not model.config.get_text_config().tie_word_embeddings:
            embeddings.append(model.get_output_embeddings())
        for module in embeddings:
            _init_like_existing_rows(module.weight, old_size, generator)


@torch.no_grad()
def _init_like_existing_rows(weight: torch.Tensor, old_size: int, generator: torch.Generator) -> None:
    """Rows old_size.. ~ N(mean, diag(std^2)) of rows ..old_size. weight: (V, H)."""
    old = weight[:old_size].float()
    noise = torch.randn(weight.shape[0] - old_size, weight.shape[1], generator=generator)
    weight[old_size:] = (old.mean(0) + old.std(0) * noise.to(old.device)).to(weight.dtype)
