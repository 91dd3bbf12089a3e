"""Stage 1 (SID grounding SFT): training, atomic checkpoints, resume, SID-map checks, recipes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from testing_utils import make_tiny_model
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig, SFTTrainer

from lasar_trl.configs import RecScriptArguments
from lasar_trl.data import load_dataset_spec
from lasar_trl.data.schema import Window
from lasar_trl.modeling.checkpoint import SidMapMismatchError, load_recommender
from lasar_trl.sid import SidMap
from lasar_trl.sid.tokenizer import add_sid_tokens
from lasar_trl.stages.stage1 import prepare_sid_map
from lasar_trl.tasks import recommendation_dataset
from lasar_trl.trainers.sft import SidSFTTrainer

REPO = Path(__file__).resolve().parents[1]
REQUIRED_EVAL_KEYS = {
    "hr@1",
    "hr@5",
    "hr@10",
    "hr@20",
    "ndcg@1",
    "ndcg@5",
    "ndcg@10",
    "ndcg@20",
    "invalid_rate",
    "num_samples",
    "latency_ms_per_request",
    "exclude_history",
    "mean_depth",
}


def sft_args(output_dir, **overrides) -> SFTConfig:
    defaults = dict(
        output_dir=str(output_dir),
        max_steps=12,
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
    return SFTConfig(**{**defaults, **overrides})


def make_trainer(smol_tokenizer, sid_map, output_dir, **overrides) -> SidSFTTrainer:
    model = make_tiny_model(smol_tokenizer)
    add_sid_tokens(model, smol_tokenizer, sid_map)
    items = sid_map.item_ids
    windows = [Window("u", tuple(items[i : i + 3]), items[(i + 3) % len(items)]) for i in range(len(items))]
    dataset = recommendation_dataset(windows, sid_map).select_columns(["prompt", "completion"])
    return SidSFTTrainer(
        model=model,
        args=sft_args(output_dir, **overrides),
        train_dataset=dataset,
        eval_dataset=dataset,
        processing_class=smol_tokenizer,
        sid_map=sid_map,
    )


@pytest.mark.slow  # over 10 s on 2 cores
def test_a_few_steps_lower_the_loss_and_save_keeps_the_sid_map(smol_tokenizer, tiny_sid_map, tmp_path):
    trainer = make_trainer(smol_tokenizer, tiny_sid_map, tmp_path)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < before - 0.5
    trainer.save_model(str(tmp_path / "final"))
    model, tokenizer, sid_map = load_recommender(str(tmp_path / "final"))
    assert sid_map == tiny_sid_map
    assert json.loads((tmp_path / "final" / "sid_map.json").read_text())["0"] == tiny_sid_map.sid("0")
    assert not [p for p in (tmp_path / "final").iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.slow  # over 10 s on 2 cores
def test_checkpoints_are_atomic_and_training_resumes(smol_tokenizer, tiny_sid_map, tmp_path, monkeypatch):
    trainer = make_trainer(smol_tokenizer, tiny_sid_map, tmp_path, max_steps=4, save_strategy="steps", save_steps=2)
    trainer.train()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint")) == [
        "checkpoint-2",
        "checkpoint-4",
    ]
    assert SidMap.load(tmp_path / "checkpoint-4") == tiny_sid_map
    assert not (tmp_path / ".staging").exists()

    # A crash in the middle of writing checkpoint-6 must leave checkpoint-4 as the last complete one.
    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    crashing = make_trainer(smol_tokenizer, tiny_sid_map, tmp_path, max_steps=6, save_strategy="steps", save_steps=2)
    monkeypatch.setattr(SFTTrainer, "_save_rng_state", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        crashing.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    monkeypatch.undo()
    assert get_last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-4")

    resumed = make_trainer(smol_tokenizer, tiny_sid_map, tmp_path, max_steps=6, save_strategy="steps", save_steps=2)
    resumed.train(resume_from_checkpoint=get_last_checkpoint(str(tmp_path)))
    assert resumed.state.global_step == 6
    assert get_last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-6")


def test_starting_checkpoint_with_another_sid_map_is_refused(tiny_recommender, tiny_recbole_dir, tmp_path):
    model, tokenizer, sid_map = tiny_recommender
    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    sid_map.save(tmp_path / "ckpt")
    other = SidMap({item: sid_map[item] for item in sid_map.item_ids[:-1]})
    other.save(tmp_path / "other")
    data = load_dataset_spec(f"recbole:{tiny_recbole_dir}")
    args = RecScriptArguments(dataset="x", sid_map=str(tmp_path / "other" / "sid_map.json"))
    with pytest.raises(SidMapMismatchError, match="different SID map"):
        prepare_sid_map(args, data, str(tmp_path / "ckpt"), str(tmp_path / "out"))
    assert prepare_sid_map(RecScriptArguments(), data, str(tmp_path / "ckpt"), str(tmp_path / "out")) == sid_map


def run_recipe(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.mark.slow
def test_recipes_build_sids_train_and_evaluate(smol_tokenizer, tiny_recbole_dir, tmp_path):
    """build_sids.py -> sft_stage1.py (YAML + flags, via TrlParser) -> evaluate.py, on a tiny model."""
    base = tmp_path / "base"
    make_tiny_model(smol_tokenizer).save_pretrained(base)
    smol_tokenizer.save_pretrained(base)
    dataset = f"recbole:{tiny_recbole_dir}"
    run_recipe(
        "recipes/build_sids.py", "--dataset", dataset, "--output_dir", str(tmp_path / "sids"), "--codebook_size", "4"
    )
    out = tmp_path / "stage1"
    result = run_recipe(
        "recipes/sft_stage1.py",
        "--config",
        "recipes/sft_stage1.yaml",
        "--model_name_or_path",
        str(base),
        "--dataset",
        dataset,
        "--sid_map",
        str(tmp_path / "sids" / "sid_map.json"),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--max_train_samples",
        "16",
        "--per_device_train_batch_size",
        "4",
        "--eval_max_samples",
        "6",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
        "--use_cpu",
        "true",
    )
    assert "most-popular" in result.stdout
    assert SidMap.load(out) == SidMap.load(tmp_path / "sids")
    assert (out / "checkpoint-2" / "sid_map.json").is_file()
    stage1_json = json.loads((out / "eval_results.json").read_text())
    assert REQUIRED_EVAL_KEYS <= stage1_json.keys()

    report = tmp_path / "eval.json"
    run_recipe(
        "recipes/evaluate.py",
        "--checkpoint",
        str(out),
        "--dataset",
        dataset,
        "--max_samples",
        "5",
        "--num_beams",
        "20",
        "--exclude_history",
        "--output_json",
        str(report),
        "--device",
        "cpu",
    )
    results = json.loads(report.read_text())
    assert REQUIRED_EVAL_KEYS <= results.keys()
    assert results["num_samples"] == 5 and results["exclude_history"] is True
    assert results["invalid_rate"] == 0.0 and results["mean_depth"] == 0.0
    assert results["hr@1"] <= results["hr@5"] <= results["hr@10"] <= results["hr@20"]

    # the explicit-CoT baseline from this Stage 1: learns rationale <eot> SID, evaluates with its rationale
    cot_out = tmp_path / "explicit_cot"
    run_recipe(
        "recipes/sft_explicit_cot.py",
        "--config",
        "recipes/sft_explicit_cot.yaml",
        "--model_name_or_path",
        str(out),
        "--dataset",
        dataset,
        "--output_dir",
        str(cot_out),
        "--max_steps",
        "2",
        "--max_train_samples",
        "8",
        "--per_device_train_batch_size",
        "4",
        "--eval_max_samples",
        "4",
        "--eval_num_beams",
        "5",
        "--use_cpu",
        "true",
    )
    cot_json = json.loads((cot_out / "eval_results.json").read_text())
    assert cot_json["mean_rationale_tokens"] >= 1 and cot_json["mean_depth"] == 0.0
    assert cot_json["invalid_rate"] == 0.0 and cot_json["num_samples"] == 4
    assert "<eot>" in (cot_out / "tokenizer_config.json").read_text() + (cot_out / "tokenizer.json").read_text()


def test_labelled_positions_loss_equals_trls(smol_tokenizer, tiny_sid_map, tmp_path):
    """Stage 1's LM head runs on labelled positions only: the same loss and metrics as TRL's fused head."""
    trainer = make_trainer(smol_tokenizer, tiny_sid_map, tmp_path)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    ours = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=None)
    ours_metrics = {key: trainer._metrics["train"][key][-1] for key in ("entropy", "mean_token_accuracy")}
    trls = SFTTrainer.compute_loss(trainer, trainer.model, dict(batch), num_items_in_batch=None)
    assert torch.allclose(ours, trls, atol=1e-5)
    for key, value in ours_metrics.items():
        assert abs(trainer._metrics["train"][key][-1] - value) < 1e-4, key
    ours.backward()  # and it trains the model through the wrapper the Trainer holds
    assert trainer.model.get_input_embeddings().weight.grad.abs().sum() > 0
