"""Stage 1: ground the SID tokens with plain SFT, then evaluate.

    accelerate launch recipes/sft_stage1.py --config recipes/sft_stage1.yaml

Layout `P <bot> SID <eos>` (N = 0 latent steps), loss on completions only: next SID from
the history, title <-> SID and next SID from titles (`stage1_layout: windows`), or, with
`prompt_template: compact` and `stage1_layout: sequences`, one causal pass per user over
`s1 <bot> s2 <bot> ...` with the loss on every next item, plus title <-> SID.
`--model_name_or_path scratch:tiny` (or `scratch:small`) builds a compact backbone from
scratch, with a tokenizer trained on this dataset's text. Saves model, tokenizer and
sid_map.json.
"""

import logging

from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, SFTConfig, TrlParser, get_peft_config

from lasar_trl.configs import RecScriptArguments, default_model
from lasar_trl.data import load_dataset_spec
from lasar_trl.tasks import (
    PROMPT_TEMPLATE_KEY, check_items_known, recommendation_dataset, stage1_dataset, stage1_sequence_dataset,
)
from lasar_trl.modeling.loading import resolve_model_path
from lasar_trl.modeling.scratch import build_scratch_backbone, is_scratch
from lasar_trl.pipeline import prepare_sid_map, scratch_tokenizer_texts, setup_run, train_save_and_evaluate
from lasar_trl.sid.tokenizer import add_sid_tokens
from lasar_trl.trainers.sft import SidSFTTrainer

logger = logging.getLogger(__name__)


def main(script_args: RecScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> None:
    setup_run(training_args)

    # Data and SIDs.
    data = load_dataset_spec(script_args.dataset, max_history=script_args.max_history)
    model_path = resolve_model_path(default_model(model_args.model_name_or_path))
    sid_map = prepare_sid_map(script_args, data, model_path, training_args.output_dir)
    check_items_known(data, sid_map)

    # Model with the SID vocabulary.
    if is_scratch(model_path):
        if model_args.use_peft:
            raise ValueError(f"--use_peft with --model_name_or_path {model_path}: LoRA on a randomly initialised "
                             "backbone trains adapters over noise; train it whole (LoRA works from its Stage-1 folder)")
        model, tokenizer = build_scratch_backbone(
            model_path, scratch_tokenizer_texts(data, sid_map), seed=training_args.seed
        )
    else:
        tokenizer = AutoTokenizer.from_pretrained(model_path, revision=model_args.model_revision)
        model = AutoModelForCausalLM.from_pretrained(
            model_path, revision=model_args.model_revision, dtype=model_args.dtype,
            attn_implementation=model_args.attn_implementation,
        )
    added = add_sid_tokens(model, tokenizer, sid_map)
    logger.info("Added %d tokens (SID codes and <bot>); vocabulary is now %d", added, len(tokenizer))
    setattr(model.config, PROMPT_TEMPLATE_KEY, script_args.prompt_template)  # what later stages prompt with

    if script_args.stage1_layout == "sequences":
        train_dataset = stage1_sequence_dataset(data, sid_map, tokenizer, script_args.max_history)
    else:
        train_dataset = stage1_dataset(data, sid_map, seed=training_args.seed, template=script_args.prompt_template)
    train_dataset = train_dataset.shuffle(seed=training_args.seed)
    if script_args.max_train_samples:
        train_dataset = train_dataset.select(range(min(script_args.max_train_samples, len(train_dataset))))
    eval_dataset = None
    if training_args.eval_strategy != "no":
        eval_dataset = recommendation_dataset(data.splits["validation"], sid_map, script_args.prompt_template)
        eval_dataset = eval_dataset.select_columns(["prompt", "completion"])

    trainer = SidSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        sid_map=sid_map,
    )

    train_save_and_evaluate(trainer, sid_map, data, script_args, label="stage1 (N=0)")


if __name__ == "__main__":
    parser = TrlParser((RecScriptArguments, SFTConfig, ModelConfig))
    main(*parser.parse_args_and_config())
