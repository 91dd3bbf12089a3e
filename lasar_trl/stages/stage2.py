"""Stage 2: latent reasoning SFT from a Stage-1 checkpoint (`LasarSFTTrainer`)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from accelerate import PartialState
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import ModelConfig, get_peft_config

from ..atomic import save_dataset_atomic
from ..configs import CotArguments, RecScriptArguments
from ..cot.dataset import latent_sft_dataset
from ..cot.sources import rationales
from ..data import load_dataset_spec, training_windows
from ..data.schema import RecData, Window
from ..sid.sid_map import SidMap
from ..tasks import check_items_known, prompt_template_of
from ..trainers.lasar_sft_config import LasarSFTConfig
from ..trainers.lasar_sft_trainer import LasarSFTTrainer
from .common import load_stage1_checkpoint, record_max_history, setup_run, train_save_and_evaluate

LATENT_TRAIN_DATA = "latent_train_data"  # Stage 2's rows with anchors, saved beside its checkpoint for Stage 3
LATENT_SFT_COLUMNS = ["prompt", "completion", "anchors"]  # what LasarSFTTrainer trains on
RL_COLUMNS = ["prompt", "target", "anchors"]  # what Stage 3 takes: its prompts, the rewards' items, terminal anchors


def run(
    script_args: RecScriptArguments, cot_args: CotArguments, training_args: LasarSFTConfig, model_args: ModelConfig
) -> None:
    """Stage 2 (recipes/sft_latent.py): from the Stage-1 checkpoint, one CoT per training sample, its
    segments and anchors, then `LasarSFTTrainer`; saves the rows with their anchors beside the model
    (OUTPUT_DIR/latent_train_data: Stage 3's prompts and terminal anchors), then evaluates."""
    setup_run(training_args)

    # The Stage-1 checkpoint: its SID map and tokens, and the model the anchors come from.
    model, tokenizer, sid_map = load_stage1_checkpoint(model_args, script_args, training_args.device, "Stage 2")
    data = load_dataset_spec(script_args.dataset, max_history=script_args.max_history)
    check_items_known(data, sid_map)
    record_max_history(model, script_args.max_history, model_args.model_name_or_path)

    # CoT -> segments -> anchors, for exactly the samples trained on; cached for reruns.
    windows = training_windows(data, script_args.max_train_samples, training_args.seed)
    cache_dir = cot_args.cot_cache_dir or os.path.join(training_args.output_dir, "cot")
    train_dataset = latent_rows(model, tokenizer, sid_map, data, windows, cot_args, cache_dir)
    if training_args.process_index == 0:
        os.makedirs(training_args.output_dir, exist_ok=True)
        save_dataset_atomic(
            train_dataset.select_columns(RL_COLUMNS), os.path.join(training_args.output_dir, LATENT_TRAIN_DATA)
        )

    trainer = LasarSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset.select_columns(LATENT_SFT_COLUMNS),
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        sid_map=sid_map,
        stage=f"Stage 2 latent SFT (depth_mode={training_args.depth_mode})",
        dataset_name=data.name,
    )
    train_save_and_evaluate(trainer, sid_map, data, script_args, label=f"lasar stage2 ({training_args.depth_mode})")


def latent_rows(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sid_map: SidMap,
    data: RecData,
    windows: Sequence[Window],
    cot_args: CotArguments,
    cache_dir: str,
) -> Dataset:
    """Stage 2's rows for `windows` (`latent_sft_dataset`): one CoT each from `cot_args`'s source,
    its segments, and `model`'s (the Stage-1 model's) anchors; teacher answers and anchors are
    cached in `cache_dir`, so a rerun computes only what is missing. Every process calls: each
    teaches and extracts its share of the windows, then reads them all."""
    state = PartialState()
    cots = rationales(cot_args, data, sid_map, windows, cache_dir, state, template=prompt_template_of(model))
    return latent_sft_dataset(
        model,
        tokenizer,
        sid_map,
        windows,
        cots,
        os.path.join(cache_dir, "anchors"),
        merge_threshold=cot_args.segment_merge_threshold,
        show_progress=state.is_local_main_process,
        state=state,
    )
