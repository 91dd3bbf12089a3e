"""LasarGRPOTrainer.evaluate: TRL's evaluation loop computes the GRPO loss without gradients, on
rollouts of the eval set; the LASAR terms must be computed and logged there too."""

import math

from test_grpo import grpo_args, grpo_dataset, sid_rewards, stage2  # noqa: F401

from lasar_trl.trainers import LasarGRPOTrainer


def test_evaluation_scores_the_sampled_depths(smol_tokenizer, tiny_sid_map, stage2, tmp_path):  # noqa: F811
    """No gradients in evaluation once crashed the REINFORCE term (no depth logits were computed)."""
    trainer = LasarGRPOTrainer(
        model=stage2,
        reward_funcs=sid_rewards(tiny_sid_map, smol_tokenizer),
        args=grpo_args(tmp_path / "out", rollout_depth="sample", per_device_eval_batch_size=8),
        train_dataset=grpo_dataset(tiny_sid_map, rows=8),
        eval_dataset=grpo_dataset(tiny_sid_map, rows=8),
        processing_class=smol_tokenizer,
    )
    metrics = trainer.evaluate()
    for key in ("eval_loss", "eval_depth/reinforce_loss", "eval_depth/policy_entropy", "eval_terminal_kl"):
        assert math.isfinite(metrics[key]), (key, metrics)
    assert metrics["eval_depth/policy_entropy"] > 0 and metrics["eval_invalid_rate"] == 0.0
