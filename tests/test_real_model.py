"""The real embedded SmolLM2-135M: conversion, SID vocabulary, constrained recommendation."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lasar_trl.evaluation.recommend import recommend
from lasar_trl.sid.tokenizer import BOT_TOKEN, add_sid_tokens

pytestmark = pytest.mark.real_model


def test_embedded_model_recommends_valid_items(smol_path, tiny_sid_map):
    tokenizer = AutoTokenizer.from_pretrained(smol_path)
    model = AutoModelForCausalLM.from_pretrained(smol_path)
    assert "quantization_config" not in model.config.to_dict()  # a plain, saveable HF model
    old_rows = model.get_input_embeddings().weight.detach().clone()
    add_sid_tokens(model, tokenizer, tiny_sid_map)
    new_rows = model.get_input_embeddings().weight.detach()[len(old_rows):]
    assert len(new_rows) == len(tiny_sid_map.all_tokens()) + 1  # SID codes and <bot>
    # New rows start from the existing embedding statistics, not a random init (std 0.02 would give norm ~0.5)
    assert new_rows.norm(dim=-1).mean() == pytest.approx(old_rows.norm(dim=-1).mean(), rel=0.25)
    assert torch.allclose(new_rows.mean(0), old_rows.mean(0), atol=0.25)
    assert torch.cdist(new_rows, new_rows).fill_diagonal_(1e9).min() > 1.0  # distinct rows
    assert tokenizer.added_tokens_decoder[tokenizer.convert_tokens_to_ids(BOT_TOKEN)].special

    histories = [["1", "2", "3"], ["4", "5"], ["6"]]
    recs = recommend(model, tokenizer, tiny_sid_map, histories, top_k=10, num_beams=10, exclude_items=histories)
    for history, items, sid in zip(histories, recs.items, recs.generated_sids):
        assert len(items) == 10 and len(set(items)) == 10
        assert not set(items) & set(history)
        assert sid in tiny_sid_map.items_by_sid
