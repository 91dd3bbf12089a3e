"""Stage 2: latent reasoning SFT from a Stage-1 checkpoint, then evaluate.

    accelerate launch recipes/sft_latent.py --config recipes/sft_latent.yaml

Builds (or reuses from OUTPUT_DIR/cot) one CoT per training sample, splits it into
segments, takes the Stage-1 model's hidden state at the end of each segment as an anchor,
then trains the latent loop, the step-wise alignment and the Policy Head
(`LasarSFTTrainer`). Saves model, tokenizer, sid_map.json, lasar_head.safetensors and
lasar_config.json, and the training rows with their anchors (OUTPUT_DIR/latent_train_data,
where Stage 3 takes its prompts and terminal anchors from), then evaluates at the Policy
Head's depths.
"""

import os

from accelerate import PartialState
from trl import ModelConfig, TrlParser, get_peft_config

from lasar_trl.configs import CotArguments, RecScriptArguments
from lasar_trl.cot.dataset import latent_sft_dataset
from lasar_trl.data import load_dataset_spec
from lasar_trl.tasks import check_items_known, prompt_template_of
from lasar_trl.atomic import save_dataset_atomic
from lasar_trl.pipeline import (
    LATENT_TRAIN_DATA, load_stage1_checkpoint, rationales, setup_run, train_save_and_evaluate,
    training_windows,
)
from lasar_trl.trainers.lasar_sft_config import LasarSFTConfig
from lasar_trl.trainers.lasar_sft_trainer import LasarSFTTrainer


def main(
    script_args: RecScriptArguments, cot_args: CotArguments, training_args: LasarSFTConfig, model_args: ModelConfig
) -> None:
    setup_run(training_args)

    # The Stage-1 checkpoint: its SID map and tokens, and the model the anchors come from.
    model, tokenizer, sid_map = load_stage1_checkpoint(model_args, script_args, training_args.device, "Stage 2")
    data = load_dataset_spec(script_args.dataset, max_history=script_args.max_history)
    check_items_known(data, sid_map)

    # CoT -> segments -> anchors, for exactly the samples trained on; cached for reruns.
    # Every process teaches and extracts its share of the samples, then reads them all.
    windows = training_windows(data, script_args.max_train_samples, training_args.seed)
    cache_dir = cot_args.cot_cache_dir or os.path.join(training_args.output_dir, "cot")
    state = PartialState()
    cots = rationales(cot_args, data, sid_map, windows, cache_dir, state, template=prompt_template_of(model))
    train_dataset = latent_sft_dataset(
        model, tokenizer, sid_map, windows, cots, os.path.join(cache_dir, "anchors"),
        merge_threshold=cot_args.segment_merge_threshold, show_progress=state.is_local_main_process, state=state,
    )
    if training_args.process_index == 0:
        os.makedirs(training_args.output_dir, exist_ok=True)
        save_dataset_atomic(
            train_dataset.select_columns(["prompt", "target", "anchors"]),
            os.path.join(training_args.output_dir, LATENT_TRAIN_DATA),
        )

    trainer = LasarSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset.select_columns(["prompt", "completion", "anchors"]),
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        sid_map=sid_map,
    )
    train_save_and_evaluate(trainer, sid_map, data, script_args, label=f"lasar stage2 ({training_args.depth_mode})")


if __name__ == "__main__":
    parser = TrlParser((RecScriptArguments, CotArguments, LasarSFTConfig, ModelConfig))
    main(*parser.parse_args_and_config())
