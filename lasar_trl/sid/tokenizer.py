"""Teach a tokenizer and model the SID vocabulary."""

from __future__ import annotations

from tokenizers import AddedToken

from .sid_map import SidMap

BOT_TOKEN = "<bot>"


def add_sid_tokens(model, tokenizer, sid_map: SidMap) -> int:
    """Add SID tokens (ordinary) and `<bot>` (special); resize embeddings. Returns tokens added.

    SID tokens are not special so that `batch_decode(skip_special_tokens=True)`
    (used by TRL) keeps them. New embedding and LM-head rows are drawn from the
    mean and covariance of the existing rows (`mean_resizing`), so they start
    in the region the model already knows instead of at random init.
    """
    vocab = tokenizer.get_vocab()
    new_tokens = [token for token in sid_map.all_tokens() if token not in vocab]
    added = tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in new_tokens])
    if BOT_TOKEN not in vocab:
        added += tokenizer.add_tokens([AddedToken(BOT_TOKEN, normalized=False, special=True)], special_tokens=True)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return added
