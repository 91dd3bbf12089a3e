"""`report_to` reaches the trackers with every custom metric: what a user watches in
TensorBoard (or Weights & Biases) during Stage 2 and GRPO."""

import pytest
from test_grpo import make_trainer as make_grpo_trainer
from test_grpo import save_stage2_checkpoint
from test_lasar_sft import make_trainer as make_sft_trainer

pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install -e '.[dev]')")


def logged_tags(log_dir) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in log_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


@pytest.mark.slow  # over 10 s on 2 cores
def test_stage2_metrics_reach_tensorboard(smol_tokenizer, tiny_sid_map, tmp_path):
    trainer = make_sft_trainer(smol_tokenizer, tiny_sid_map, tmp_path / "run", max_steps=2, report_to="tensorboard")
    trainer.train()
    tags = logged_tags(tmp_path / "run")
    assert {
        "train/loss",
        "train/ce",
        "train/align_kl",
        "train/mean_depth",
        "train/depth_ce",
        "train/depth_accuracy",
        "train/latent_norm_ratio",
    } <= tags, tags


def test_grpo_metrics_reach_tensorboard(smol_tokenizer, tiny_sid_map, tmp_path):
    checkpoint = save_stage2_checkpoint(smol_tokenizer, tiny_sid_map, tmp_path / "stage2")
    trainer = make_grpo_trainer(
        smol_tokenizer, tiny_sid_map, checkpoint, tmp_path / "run", max_steps=2, report_to="tensorboard"
    )
    trainer.train()
    tags = logged_tags(tmp_path / "run")
    depth_histogram = {tag for tag in tags if tag.startswith("train/depth/frac_")}
    assert {
        "train/reward",
        "train/rewards/ranking/mean",
        "train/depth/mean",
        "train/depth/baseline",
        "train/terminal_kl",
        "train/depth/policy_entropy",
        "train/depth/reinforce_loss",
        "train/latent_norm_ratio",
        "train/invalid_rate",
    } <= tags, tags
    assert len(depth_histogram) >= 2, tags
