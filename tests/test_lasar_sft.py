"""Stage 2 (latent SFT): collator, config and anchor checks, the loss, training, save/load, depth at inference."""

import json
import os
import subprocess
import sys

import datasets
import pytest
import torch
from safetensors import safe_open
from testing_utils import make_tiny_model
from transformers.trainer_utils import get_last_checkpoint

from lasar_trl.data.schema import Window
from lasar_trl.evaluation.evaluate import evaluate_recommender
from lasar_trl.evaluation.recommend import recommend
from lasar_trl.modeling.checkpoint import load_recommender
from lasar_trl.modeling.lasar import LASAR_CONFIG_FILE, LASAR_HEAD_FILE, get_lasar
from lasar_trl.modeling.latent import run_latent_loop
from lasar_trl.sid.tokenizer import BOT_TOKEN, add_sid_tokens
from lasar_trl.tasks import recommendation_dataset
from lasar_trl.trainers.lasar_sft_config import LasarSFTConfig
from lasar_trl.trainers.lasar_sft_trainer import LasarSFTTrainer, LatentSFTCollator

HIDDEN = 32  # make_tiny_model


def lasar_args(output_dir, **overrides) -> LasarSFTConfig:
    defaults = dict(
        output_dir=str(output_dir),
        max_steps=10,
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        bf16=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        seed=0,
        activation_checkpointing=False,
        use_cpu=True,
        dataloader_num_workers=0,
    )
    return LasarSFTConfig(**{**defaults, **overrides})


def latent_windows(sid_map, rows: int = 40, seed: int = 0) -> list[Window]:
    """Histories of 1-4 items (the length cycles with the row)."""
    generator = torch.Generator().manual_seed(seed)
    items = sid_map.item_ids
    windows = []
    for row in range(rows):
        picks = torch.randint(0, len(items), (2 + row % 4,), generator=generator).tolist()
        windows.append(Window(f"u{row}", tuple(items[i] for i in picks[:-1]), items[picks[-1]]))
    return windows


def latent_dataset(sid_map, windows: list[Window] | None = None, seed: int = 0) -> datasets.Dataset:
    """One CoT segment per history item, so the segment count (the depth target) is
    readable from the prompt. Anchors are random vectors: any fixed targets do here."""
    windows = windows or latent_windows(sid_map)
    generator = torch.Generator().manual_seed(seed)
    anchors = [torch.randn(len(w.history), HIDDEN, generator=generator).tolist() for w in windows]
    dataset = recommendation_dataset(windows, sid_map).select_columns(["prompt", "completion"])
    return dataset.add_column("anchors", anchors)


def save_stage1_checkpoint(tokenizer, sid_map, folder, tie_word_embeddings: bool = True):
    """A Stage-1 checkpoint folder (tiny random model with SID tokens, tokenizer, SID map)."""
    model = make_tiny_model(tokenizer, tie_word_embeddings=tie_word_embeddings)
    add_sid_tokens(model, tokenizer, sid_map)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    sid_map.save(folder)
    return folder


def make_trainer(tokenizer, sid_map, output_dir, dataset=None, **overrides) -> LasarSFTTrainer:
    model = make_tiny_model(tokenizer)
    add_sid_tokens(model, tokenizer, sid_map)
    dataset = dataset if dataset is not None else latent_dataset(sid_map)
    return LasarSFTTrainer(
        model=model,
        args=lasar_args(output_dir, **overrides),
        train_dataset=dataset,
        eval_dataset=dataset,
        processing_class=tokenizer,
        sid_map=sid_map,
    )


def test_collator_pads_prompts_left_completions_right_and_anchors_with_zeros():
    collator = LatentSFTCollator(pad_token_id=0, bot_token_id=9)
    examples = [
        {"input_ids": [5, 9, 7, 8, 2], "labels": [-100, -100, 7, 8, 2], "anchors": [[1.0, 2.0]]},
        {
            "input_ids": [4, 5, 6, 9, 7, 2],
            "labels": [-100, -100, -100, -100, 7, 2],
            "anchors": [[3.0, 4.0], [5.0, 6.0]],
        },
    ]
    batch = collator(examples)
    assert batch["prompt_ids"].tolist() == [[0, 0, 5, 9], [4, 5, 6, 9]]
    assert batch["prompt_mask"].tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert batch["completion_ids"].tolist() == [[7, 8, 2], [7, 2, 0]]
    assert batch["labels"].tolist() == [[7, 8, 2], [7, 2, -100]]
    assert batch["num_segments"].tolist() == [1, 2]
    assert batch["anchors"].tolist() == [[[1.0, 2.0], [0.0, 0.0]], [[3.0, 4.0], [5.0, 6.0]]]


def test_collator_refuses_a_prompt_that_does_not_end_in_bot():
    collator = LatentSFTCollator(pad_token_id=0, bot_token_id=9)
    with pytest.raises(ValueError, match=f"row 0 .*{BOT_TOKEN}"):
        collator([{"input_ids": [5, 6, 7], "labels": [-100, -100, 7]}])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(depth_mode="fixed"), "fixed_depth"),
        (dict(depth_mode="fixed", fixed_depth=9), "fixed_depth"),
        (dict(depth_mode="cot", fixed_depth=2), "only used with depth_mode=fixed"),
        (dict(min_depth=3, n_max=2), "min_depth"),
        (dict(depth_mode="adaptive"), "depth_mode"),
        (dict(align_space="logits"), "align_space"),
        (dict(align_kind="l1"), "align_kind"),
        (dict(align_temperature=0.0), "align_temperature"),
        (dict(latent_projection="mlp"), "latent_projection"),
        (dict(policy_head_learning_rate=-1e-3), "policy_head_learning_rate"),
        (dict(packing=True), "packing"),
        (dict(padding_free=True), "padding_free"),
        (dict(completion_only_loss=False), "completion_only_loss"),
        (dict(truncation_mode="keep_end"), "keep_start"),
        (dict(loss_type="dft"), "loss_type"),
    ],
)
def test_invalid_configs_fail_with_the_field_named(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        lasar_args(tmp_path, **overrides)


def test_missing_or_wrong_size_anchors_fail_before_training(smol_tokenizer, tiny_sid_map, tmp_path):
    dataset = latent_dataset(tiny_sid_map)
    with pytest.raises(ValueError, match="no 'anchors' column"):
        make_trainer(smol_tokenizer, tiny_sid_map, tmp_path, dataset=dataset.remove_columns("anchors"))
    wrong = dataset.remove_columns("anchors").add_column(
        "anchors", [[[0.0] * HIDDEN] * (1 + row % 4) if row != 5 else [[0.0] * 16] for row in range(len(dataset))]
    )
    with pytest.raises(ValueError, match="row 5: anchors have width 16 .* hidden size is 32"):
        make_trainer(smol_tokenizer, tiny_sid_map, tmp_path, dataset=wrong)
    # a fixed-depth run without alignment needs no CoT at all
    make_trainer(
        smol_tokenizer,
        tiny_sid_map,
        tmp_path,
        dataset=dataset.remove_columns("anchors"),
        depth_mode="fixed",
        fixed_depth=2,
        align_weight=0.0,
    )


def one_batch(trainer):
    return trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))


def test_loss_is_ce_plus_weighted_alignment_and_depth_terms(smol_tokenizer, tiny_sid_map, tmp_path):
    trainer = make_trainer(smol_tokenizer, tiny_sid_map, tmp_path, align_weight=0.5, depth_loss_weight=0.25)
    inputs = one_batch(trainer)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, inputs)
    logged = {key: values[-1] for key, values in trainer._metrics["train"].items()}
    assert loss.item() == pytest.approx(logged["ce"] + 0.5 * logged["align_kl"] + 0.25 * logged["depth_ce"], rel=1e-5)
    assert logged["mean_depth"] == pytest.approx(inputs["num_segments"].float().mean().item())
    assert 0 <= logged["depth_accuracy"] <= 1 and logged["latent_norm_ratio"] > 0


def test_fixed_depth_trains_no_head_and_ignores_segment_counts(smol_tokenizer, tiny_sid_map, tmp_path):
    trainer = make_trainer(smol_tokenizer, tiny_sid_map, tmp_path, depth_mode="fixed", fixed_depth=3)
    with torch.no_grad():
        trainer.compute_loss(trainer.model, one_batch(trainer))
    logged = trainer._metrics["train"]
    assert logged["mean_depth"] == [3.0] and "depth_ce" not in logged and "align_kl" in logged
    assert not any(p.requires_grad for p in get_lasar(trainer.model).policy_head.parameters())


def test_depth_zero_latent_sft_is_exactly_stage1_sft(smol_tokenizer, tiny_sid_map, tmp_path):
    """N = 0 is the Stage-1 layout: the latent trainer's CE equals SFTTrainer's loss on the same rows."""
    import dataclasses

    from trl import SFTConfig

    from lasar_trl.trainers.sft import SidSFTTrainer

    dataset = latent_dataset(tiny_sid_map)
    latent = make_trainer(
        smol_tokenizer,
        tiny_sid_map,
        tmp_path,
        dataset=dataset,
        depth_mode="fixed",
        fixed_depth=0,
        min_depth=0,
        align_weight=0.0,
    )
    stage1 = SidSFTTrainer(
        model=latent.model,
        args=SFTConfig(**{f.name: getattr(latent.args, f.name) for f in dataclasses.fields(SFTConfig) if f.init}),
        train_dataset=dataset.remove_columns("anchors"),
        processing_class=smol_tokenizer,
        sid_map=tiny_sid_map,
    )
    rows = [latent.train_dataset[i] for i in range(8)]
    with torch.no_grad():
        latent_loss = latent.compute_loss(latent.model, latent._prepare_inputs(latent.data_collator(rows)))
        batch = stage1._prepare_inputs(stage1.data_collator([stage1.train_dataset[i] for i in range(8)]))
        stage1_loss = stage1.compute_loss(stage1.model, batch)
    assert latent_loss.item() == pytest.approx(stage1_loss.item(), rel=1e-5)


def test_alignment_pairs_each_step_with_its_anchor_by_hand(smol_tokenizer, tiny_sid_map, tmp_path):
    """fixed depth 2; S = 1 -> anchors (0, 0); S = 3 -> m(t) = ceil(3t/2) = (2, 3) -> (1, 2)."""
    from lasar_trl.losses import symmetric_kl

    trainer = make_trainer(smol_tokenizer, tiny_sid_map, tmp_path, depth_mode="fixed", fixed_depth=2)
    generator = torch.Generator().manual_seed(1)
    anchors = [torch.randn(1, HIDDEN, generator=generator), torch.randn(3, HIDDEN, generator=generator)]
    rows = [dict(trainer.train_dataset[i], anchors=a.tolist()) for i, a in enumerate(anchors)]
    inputs = trainer._prepare_inputs(trainer.data_collator(rows))
    with torch.no_grad():
        trajectory = run_latent_loop(trainer.model, inputs["prompt_ids"], inputs["prompt_mask"], torch.tensor([2, 2]))
        got = trainer._alignment(trajectory, torch.tensor([2, 2]), inputs).item()
    h = trajectory.latent_states
    per_row = [
        (symmetric_kl(h[0, 0], anchors[0][0]) + symmetric_kl(h[0, 1], anchors[0][0])) / 2,
        (symmetric_kl(h[1, 0], anchors[1][1]) + symmetric_kl(h[1, 1], anchors[1][2])) / 2,
    ]
    assert got == pytest.approx(((per_row[0] + per_row[1]) / 2).item(), rel=1e-5)


def test_segment_counts_above_n_max_are_clipped(smol_tokenizer, tiny_sid_map, tmp_path):
    trainer = make_trainer(smol_tokenizer, tiny_sid_map, tmp_path, n_max=2)
    inputs = one_batch(trainer)
    assert inputs["num_segments"].max() > 2
    with torch.no_grad():
        trainer.compute_loss(trainer.model, inputs)
    expected = inputs["num_segments"].clamp(1, 2).float().mean().item()
    assert trainer._metrics["train"]["mean_depth"][-1] == pytest.approx(expected)


def test_loss_with_activation_checkpointing_equals_loss_without(smol_tokenizer, tiny_sid_map, tmp_path):
    trainer = make_trainer(smol_tokenizer, tiny_sid_map, tmp_path)
    inputs = one_batch(trainer)
    model = trainer.model
    model.train()
    plain = trainer.compute_loss(model, inputs).item()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    assert trainer.compute_loss(model, inputs).item() == pytest.approx(plain, rel=1e-6)


@pytest.mark.parametrize("align_space, align_kind", [("vocab", "kl"), ("hidden", "cosine"), ("hidden", "mse")])
def test_other_alignment_spaces_and_kinds_give_a_finite_loss_with_gradients(
    smol_tokenizer, tiny_sid_map, tmp_path, align_space, align_kind
):
    trainer = make_trainer(smol_tokenizer, tiny_sid_map, tmp_path, align_space=align_space, align_kind=align_kind)
    loss = trainer.compute_loss(trainer.model, one_batch(trainer))
    loss.backward()
    assert torch.isfinite(loss) and trainer.model.get_input_embeddings().weight.grad.abs().sum() > 0
    assert trainer._metrics["train"][f"align_{align_kind}"][-1] >= 0


@pytest.mark.slow  # over 10 s on 2 cores
def test_training_lowers_the_loss_learns_depth_and_round_trips(smol_tokenizer, tiny_sid_map, tmp_path):
    """A few steps lower the loss; the Policy Head beats the majority depth; the saved
    checkpoint reloads with head, config and SID map, and recommend uses the head's depth."""
    windows = latent_windows(tiny_sid_map, rows=64)
    dataset = latent_dataset(tiny_sid_map, windows)
    trainer = make_trainer(
        smol_tokenizer,
        tiny_sid_map,
        tmp_path,
        dataset=dataset,
        max_steps=40,
        learning_rate=3e-3,
        policy_head_learning_rate=3e-2,
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_loss"] < before - 0.5
    majority = max(torch.bincount(torch.tensor([len(a) for a in dataset["anchors"]]))).item() / len(dataset)
    assert after["eval_depth_accuracy"] > majority + 0.2

    trainer.save_model(str(tmp_path / "final"))
    final = tmp_path / "final"
    assert json.loads((final / LASAR_CONFIG_FILE).read_text())["depth_mode"] == "cot"
    with safe_open(str(final / "model.safetensors"), "pt") as weights:
        assert not [key for key in weights.keys() if "lasar" in key]  # the head lives in its own file
    model, tokenizer, sid_map = load_recommender(str(final))
    assert sid_map == tiny_sid_map
    trained_head = get_lasar(trainer.model).policy_head.state_dict()
    for key, value in get_lasar(model).policy_head.state_dict().items():
        torch.testing.assert_close(value, trained_head[key])

    windows = windows[:8]
    recs = recommend(model, tokenizer, sid_map, [w.history for w in windows], top_k=5, num_beams=5)
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(8)]))
    with torch.no_grad():
        first = run_latent_loop(model, batch["prompt_ids"], batch["prompt_mask"], torch.zeros(8, dtype=torch.long))
        expected = get_lasar(model).policy_head.argmax_depth(first.first_state)
    assert recs.depths == expected.tolist()
    forced = evaluate_recommender(model, tokenizer, sid_map, windows, num_beams=5, depth=2)
    assert forced["depth_histogram"] == {"2": 8} and forced["mean_depth"] == 2.0


def test_fixed_depth_checkpoint_recommends_at_its_depth(smol_tokenizer, tiny_sid_map, tmp_path):
    trainer = make_trainer(smol_tokenizer, tiny_sid_map, tmp_path, depth_mode="fixed", fixed_depth=3, max_steps=2)
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    model, tokenizer, sid_map = load_recommender(str(tmp_path / "final"))
    items = sid_map.item_ids
    recs = recommend(model, tokenizer, sid_map, [items[:3], items[3:5]], top_k=5, num_beams=5)
    assert recs.depths == [3, 3]
    assert recommend(model, tokenizer, sid_map, [items[:3]], top_k=5, num_beams=5, depth=0).depths == [0]


@pytest.mark.slow  # over 10 s on 2 cores
def test_resume_restores_the_policy_head(smol_tokenizer, tiny_sid_map, tmp_path):
    trainer = make_trainer(smol_tokenizer, tiny_sid_map, tmp_path, max_steps=4, save_strategy="steps", save_steps=2)
    trainer.train()
    checkpoint = get_last_checkpoint(str(tmp_path))
    assert os.path.isfile(os.path.join(checkpoint, LASAR_HEAD_FILE))
    head = {k: v.clone() for k, v in get_lasar(trainer.model).state_dict().items()}

    resumed = make_trainer(smol_tokenizer, tiny_sid_map, tmp_path, max_steps=4, save_strategy="steps", save_steps=2)
    resumed._load_from_checkpoint(checkpoint)
    for key, value in get_lasar(resumed.model).state_dict().items():
        torch.testing.assert_close(value, head[key])


@pytest.mark.slow  # over 10 s on 2 cores
def test_recipe_trains_from_a_stage1_checkpoint_reuses_its_anchors_and_evaluates(
    smol_tokenizer, tiny_recbole_dir, tmp_path
):
    """sft_latent.py (YAML + flags) from a Stage-1 folder, run twice (the second run
    reuses CoT anchors), then evaluate.py at the head's depths and at a forced depth."""
    from test_stage1 import run_recipe

    from lasar_trl.data import load_dataset_spec
    from lasar_trl.sid.build import build_sid_map

    dataset = f"recbole:{tiny_recbole_dir}"
    sid_map = build_sid_map(load_dataset_spec(dataset), codebook_size=4)
    stage1 = save_stage1_checkpoint(smol_tokenizer, sid_map, tmp_path / "stage1")

    out = tmp_path / "stage2"
    flags = (
        "recipes/sft_latent.py",
        "--config",
        "recipes/sft_latent.yaml",
        "--model_name_or_path",
        str(stage1),
        "--dataset",
        dataset,
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--max_train_samples",
        "12",
        "--per_device_train_batch_size",
        "4",
        "--eval_max_samples",
        "6",
        "--use_cpu",
        "true",
    )
    result = run_recipe(*flags)
    assert "lasar stage2 (cot)" in result.stdout and "most-popular" in result.stdout
    for name in ("sid_map.json", LASAR_HEAD_FILE, LASAR_CONFIG_FILE, "model.safetensors"):
        assert (out / name).is_file(), name
    shards = sorted((out / "cot" / "anchors").glob("anchors-*.safetensors"))
    assert shards
    stamps = [shard.stat().st_mtime_ns for shard in shards]
    results = json.loads((out / "eval_results.json").read_text())
    assert results["num_samples"] == 6 and sum(results["depth_histogram"].values()) == 6
    assert results["invalid_rate"] == 0.0

    run_recipe(*flags, "--output_dir", str(tmp_path / "again"), "--cot_cache_dir", str(out / "cot"))
    assert sorted((out / "cot" / "anchors").glob("anchors-*.safetensors")) == shards
    assert [shard.stat().st_mtime_ns for shard in shards] == stamps  # nothing re-extracted

    report = tmp_path / "forced.json"
    run_recipe(
        "recipes/evaluate.py",
        "--checkpoint",
        str(out),
        "--dataset",
        dataset,
        "--max_samples",
        "4",
        "--depth",
        "3",
        "--output_json",
        str(report),
        "--device",
        "cpu",
    )
    forced = json.loads(report.read_text())
    assert forced["depth_histogram"] == {"3": 4} and forced["forced_depth"] == 3


@pytest.mark.slow  # over 10 s on 2 cores
def test_drop_in_for_an_sft_trainer_script(smol_tokenizer, tiny_sid_map, tmp_path):
    """An SFTTrainer script (model given by path, no processing_class, no extras) runs on a
    Stage-1 checkpoint by swapping in LasarSFTTrainer and LasarSFTConfig; the SID map
    comes from the checkpoint folder and is saved with the result."""
    stage1 = save_stage1_checkpoint(smol_tokenizer, tiny_sid_map, tmp_path / "stage1")

    trainer = LasarSFTTrainer(
        model=str(stage1), args=lasar_args(tmp_path / "out", max_steps=2), train_dataset=latent_dataset(tiny_sid_map)
    )
    trainer.train()
    trainer.save_model()
    model, _, sid_map = load_recommender(str(tmp_path / "out"))
    assert sid_map == tiny_sid_map and get_lasar(model) is not None


def test_with_lora_the_policy_head_still_trains_and_is_saved_beside_the_adapter(smol_tokenizer, tiny_sid_map, tmp_path):
    from peft import LoraConfig

    model = make_tiny_model(smol_tokenizer)
    add_sid_tokens(model, smol_tokenizer, tiny_sid_map)
    trainer = LasarSFTTrainer(
        model=model,
        args=lasar_args(tmp_path, max_steps=3),
        train_dataset=latent_dataset(tiny_sid_map),
        processing_class=smol_tokenizer,
        sid_map=tiny_sid_map,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    head = {key: value.clone() for key, value in get_lasar(trainer.model).state_dict().items()}
    trainer.train()
    assert any(not torch.equal(value, head[key]) for key, value in get_lasar(trainer.model).state_dict().items())
    trainer.save_model(str(tmp_path / "final"))
    with safe_open(str(tmp_path / "final" / "adapter_model.safetensors"), "pt") as adapter:
        keys = list(adapter.keys())
    assert keys and not [key for key in keys if "lasar" in key]
    assert (tmp_path / "final" / LASAR_HEAD_FILE).is_file()


@pytest.mark.slow  # over 10 s on 2 cores
def test_latent_projections_linear_starts_as_identity_and_rescale_matches_embedding_norm(
    smol_tokenizer, tiny_sid_map, tmp_path
):
    plain = make_trainer(smol_tokenizer, tiny_sid_map, tmp_path / "none")
    inputs = one_batch(plain)
    with torch.no_grad():
        plain_loss = plain.compute_loss(plain.model, inputs).item()
    linear = make_trainer(smol_tokenizer, tiny_sid_map, tmp_path / "linear", latent_projection="linear")
    linear.model.load_state_dict(plain.model.state_dict(), strict=False)
    with torch.no_grad():
        assert linear.compute_loss(linear.model, inputs).item() == pytest.approx(plain_loss, rel=1e-5)

    rescale = make_trainer(smol_tokenizer, tiny_sid_map, tmp_path / "rescale", latent_projection="rescale", max_steps=1)
    lasar = get_lasar(rescale.model)
    embedding_norm = rescale.model.get_input_embeddings().weight.norm(dim=-1).mean().item()
    assert lasar.config.embedding_norm == pytest.approx(embedding_norm, rel=1e-5)
    assert lasar.latent_projection(torch.randn(3, HIDDEN) * 50).norm(dim=-1).tolist() == pytest.approx(
        [embedding_norm] * 3, rel=1e-4
    )
    rescale.train()
    rescale.save_model(str(tmp_path / "rescaled"))
    model, _, _ = load_recommender(str(tmp_path / "rescaled"))
    assert get_lasar(model).config == lasar.config


@pytest.mark.slow  # over 10 s on 2 cores
def test_gradient_accumulation_matches_one_large_batch(smol_tokenizer, tiny_sid_map, tmp_path):
    """One SGD step on 8 rows as 1 x 8 or 2 x 4 (accumulated) moves every weight the same:
    compute_loss is a per-batch mean that Trainer divides by the accumulation steps."""
    dataset = latent_dataset(tiny_sid_map)
    add_sid_tokens(make_tiny_model(smol_tokenizer), smol_tokenizer, tiny_sid_map)  # grow the shared tokenizer first,
    # so that every model below starts from the same weights
    initial = make_trainer(smol_tokenizer, tiny_sid_map, tmp_path / "init", dataset=dataset).model.state_dict()
    weights = []
    for batch_size, accumulation in ((8, 1), (4, 2)):
        trainer = make_trainer(
            smol_tokenizer,
            tiny_sid_map,
            tmp_path / str(batch_size),
            dataset=dataset,
            max_steps=1,
            optim="sgd",
            learning_rate=0.5,
            lr_scheduler_type="constant",
            max_grad_norm=0.0,
            shuffle_dataset=False,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
        )
        trainer.get_train_dataloader = lambda t=trainer: torch.utils.data.DataLoader(  # the same rows, in order
            t.train_dataset.select(range(8)), batch_size=t.args.per_device_train_batch_size, collate_fn=t.data_collator
        )
        trainer.train()
        weights.append({k: v.detach().clone() for k, v in trainer.model.named_parameters()})
    for key in ("lasar.policy_head.mlp.0.weight", "model.layers.0.self_attn.q_proj.weight"):
        assert not torch.equal(initial[key], weights[0][key])  # the step moved the head and the backbone
    for key in weights[0]:
        torch.testing.assert_close(weights[1][key], weights[0][key], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("tied", [True, False], ids=["tied-head", "untied-head"])
def test_lora_trains_the_sid_rows_and_nothing_else_of_the_base(smol_tokenizer, tiny_sid_map, tmp_path, tied):
    """Without trainable SID rows a LoRA run generates stale items: the
    trainer adds them as PEFT trainable tokens; a tied LM head follows, an untied one gets its
    own SID rows trained (Qwen3-1.7B and larger are untied); the base stays frozen."""
    from peft import LoraConfig

    folder = save_stage1_checkpoint(smol_tokenizer, tiny_sid_map, tmp_path / "stage1", tie_word_embeddings=tied)
    model, tokenizer, _ = load_recommender(str(folder))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = LasarSFTTrainer(
        model=model,
        args=lasar_args(tmp_path / "run", max_steps=3),
        train_dataset=latent_dataset(tiny_sid_map),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    trainer.train()
    sid_ids = torch.tensor(tokenizer.convert_tokens_to_ids([*tiny_sid_map.all_tokens(), BOT_TOKEN]))
    other_ids = torch.tensor([0, 1, 100, 1000])
    embed = trainer.model.get_input_embeddings()
    head = trainer.model.get_output_embeddings()
    head_before = before["model.embed_tokens.weight" if tied else "lm_head.weight"]
    with torch.no_grad():
        moved = (embed(sid_ids) - before["model.embed_tokens.weight"][sid_ids]).norm(dim=-1)
        assert (moved > 0).all()  # every SID row (and <bot>) trained
        assert torch.equal(embed(other_ids), before["model.embed_tokens.weight"][other_ids])
        hidden = torch.randn(1, 1, HIDDEN)
        logits = head(hidden)[0, 0]
        if tied:
            assert torch.allclose(logits[sid_ids], embed(sid_ids) @ hidden[0, 0], atol=1e-5)  # the head follows
        else:
            assert ((logits[sid_ids] - head_before[sid_ids] @ hidden[0, 0]).abs() > 0).all()  # its own SID rows
        torch.testing.assert_close(logits[other_ids], head_before[other_ids] @ hidden[0, 0])
    base = trainer.model.get_base_model()
    for name, param in base.named_parameters():
        if "lora_" not in name and "lasar" not in name and "trainable_tokens" not in name:
            key = name.replace(".base_layer", "").replace(".token_adapter", "")
            assert torch.equal(param, before[key]), name  # the frozen base did not move

    trainer.save_model(str(tmp_path / "adapter"))
    merge = os.path.join(os.path.dirname(__file__), os.pardir, "recipes", "merge_lora.py")
    subprocess.run(
        [sys.executable, merge, "--adapter", str(tmp_path / "adapter"), "--output_dir", str(tmp_path / "merged")],
        check=True,
        timeout=300,
    )
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    card = (tmp_path / "merged" / "README.md").read_text()
    assert "- Stage: a LoRA run merged into its base" in card and f"`{tmp_path / 'adapter'}`" in card
    assert f'Recommender.from_pretrained("{tmp_path / "merged"}")' in card
    merged, merged_tokenizer, sid_map = load_recommender(str(tmp_path / "merged"))  # a plain HF folder
    assert not hasattr(merged, "peft_config") and get_lasar(merged) is not None
    histories = [list(w.history) for w in latent_windows(tiny_sid_map, rows=6)]
    ours = recommend(trainer.model, tokenizer, sid_map, histories, num_beams=5, top_k=5)
    again = recommend(merged, merged_tokenizer, sid_map, histories, num_beams=5, top_k=5)
    assert ours.items == again.items and ours.depths == again.depths
    assert torch.allclose(torch.tensor(ours.scores), torch.tensor(again.scores), atol=1e-4)
    assert all(set(items) <= set(sid_map.item_ids) for items in again.items)


@pytest.mark.parametrize("tied", [True, False], ids=["tied-head", "untied-head"])
def test_lora_sid_rows_for_a_model_given_by_path(smol_tokenizer, tiny_sid_map, tmp_path, tied):
    """A trainer given a path (TRL loads the model) gets the same trainable rows as one given the model."""
    from peft import LoraConfig

    folder = save_stage1_checkpoint(smol_tokenizer, tiny_sid_map, tmp_path / "stage1", tie_word_embeddings=tied)
    config = LasarSFTTrainer._with_trainable_sid_rows(LoraConfig(r=4), str(folder), None, None)
    ids = smol_tokenizer.convert_tokens_to_ids([*tiny_sid_map.all_tokens(), BOT_TOKEN])
    assert config.trainable_token_indices == (ids if tied else {"model.embed_tokens": ids, "lm_head": ids})
