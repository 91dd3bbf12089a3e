"""The real embedded SmolLM2-135M: conversion, SID vocabulary, constrained recommendation."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lasar_trl.evaluation.recommend import recommend
from lasar_trl.sid.tokenizer import BOT_TOKEN, add_sid_tokens

pytestmark = [pytest.mark.real_model, pytest.mark.slow]


def test_embedded_model_recommends_valid_items(smol_path, tiny_sid_map):
    tokenizer = AutoTokenizer.from_pretrained(smol_path)
    model = AutoModelForCausalLM.from_pretrained(smol_path)
    assert "quantization_config" not in model.config.to_dict()  # a plain, saveable HF model
    old_rows = model.get_input_embeddings().weight.detach().clone()
    add_sid_tokens(model, tokenizer, tiny_sid_map)
    new_rows = model.get_input_embeddings().weight.detach()[len(old_rows) :]
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


def test_stage2_loss_on_the_real_model_is_unchanged_by_activation_checkpointing(
    smol_path, tiny_sid_map, tmp_path, caplog
):
    """Real SmolLM2 layers: anchors from real CoT text, one Stage-2 loss with activation
    checkpointing on and off. Also shows two pitfalls the trainer reports on this backbone:
    latent states far larger than embeddings, and a one-hot hidden-space softmax."""
    import datasets

    from lasar_trl.cot.anchors import extract_anchors
    from lasar_trl.cot.segment import split_sentences
    from lasar_trl.tasks import history_prompt
    from lasar_trl.trainers.lasar_sft_config import LasarSFTConfig
    from lasar_trl.trainers.lasar_sft_trainer import LasarSFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(smol_path)
    model = AutoModelForCausalLM.from_pretrained(smol_path)
    add_sid_tokens(model, tokenizer, tiny_sid_map)
    prompts = [history_prompt(["1", "2", "3"], tiny_sid_map), history_prompt(["4"], tiny_sid_map)]
    cots = [
        "The user keeps coming back to one kind of item. The last two agree. Expect more of it.",
        "Only one item so far. Guess a neighbour of it.",
    ]
    segments = [split_sentences(cot) for cot in cots]
    anchors = extract_anchors(model, tokenizer, prompts, cots, segments)
    dataset = datasets.Dataset.from_dict(
        {
            "prompt": prompts,
            "completion": [tiny_sid_map.sid("5"), tiny_sid_map.sid("6")],
            "anchors": [a.tolist() for a in anchors],
        }
    )
    args = LasarSFTConfig(
        output_dir=str(tmp_path),
        bf16=False,
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=2,
        activation_checkpointing=False,
    )
    trainer = LasarSFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, sid_map=tiny_sid_map
    )
    inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    model.train()
    plain = trainer.compute_loss(model, inputs).item()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert trainer.compute_loss(model, inputs).item() == pytest.approx(plain, rel=1e-5)
    assert trainer._metrics["train"]["mean_depth"][-1] == 2.5  # 3 and 2 segments
    assert trainer._metrics["train"]["latent_norm_ratio"][-1] > 5  # final hidden states dwarf embeddings
    assert trainer._metrics["train"]["align_kl"][-1] < 1e-4 and "aligns nothing" in caplog.text  # vocab space: ~0.3
