"""Stage 3: GRPO with adaptive latent depth (`LasarGRPOTrainer`) on prompts and anchors of Stage 2's rows."""

from __future__ import annotations

import os
from collections.abc import Sequence

from datasets import Dataset, load_from_disk
from trl import ModelConfig, get_peft_config

from ..configs import RecScriptArguments
from ..data import load_dataset_spec
from ..modeling.checkpoint import load_recommender
from ..modeling.loading import resolve_model_path
from ..rewards import DEFAULT_REWARDS
from ..tasks import check_items_known
from ..trainers.lasar_grpo_config import LasarGRPOConfig
from ..trainers.lasar_grpo_trainer import LasarGRPOTrainer
from .common import setup_run, train_save_and_evaluate
from .stage2 import LATENT_TRAIN_DATA


def run(
    script_args: RecScriptArguments,
    training_args: LasarGRPOConfig,
    model_args: ModelConfig,
    rl_rows: str | None = None,
    max_rl_prompts: int | None = None,
    reward_funcs: Sequence[str] = DEFAULT_REWARDS,
) -> None:
    """GRPO from the checkpoint `model_args.model_name_or_path` names (Stage 2's; or Stage 1's at
    fixed_depth 0, with `rl_rows`), on `max_rl_prompts` prompts of `rl_rows` (default: the
    checkpoint's own latent_train_data), with the rewards `reward_funcs` names (weighted by
    `reward_weights`), then the evaluation unless `evaluate_after_training` is off."""
    setup_run(training_args)
    model_path = resolve_model_path(model_args.model_name_or_path)
    model, tokenizer, sid_map = load_recommender(model_path, dtype=model_args.dtype, device=training_args.device)
    data = load_dataset_spec(script_args.dataset, max_history=script_args.max_history)
    check_items_known(data, sid_map)
    trainer = LasarGRPOTrainer(
        model=model,
        reward_funcs=list(reward_funcs),
        args=training_args,
        train_dataset=rl_prompts(rl_rows or os.path.join(model_path, LATENT_TRAIN_DATA), max_rl_prompts, training_args),
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        sid_map=sid_map,
        stage=f"Stage 3 GRPO (rollout_depth={training_args.rollout_depth})",
        dataset_name=data.name,
    )
    train_save_and_evaluate(trainer, sid_map, data, script_args, "lasar")


def rl_prompts(path: str, max_prompts: int | None, training_args: LasarGRPOConfig) -> Dataset:
    """Stage 3's prompts and terminal anchors: a seeded subset of `max_prompts` of Stage 2's
    training rows (at `path`; all of them when unset)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"{path} is missing: Stage 3 takes its prompts and anchors from the Stage-2 rows that "
            "recipes/sft_latent.py saves (OUTPUT_DIR/latent_train_data)"
        )
    rows = load_from_disk(path).shuffle(seed=training_args.seed)
    if max_prompts:
        rows = rows.select(range(min(max_prompts, len(rows))))
    return rows if training_args.terminal_align_weight > 0 else rows.remove_columns("anchors")
