"""The explicit chain-of-thought baseline: the rationale written as text, then `<eot>`, then the SID."""

from __future__ import annotations

import os

from accelerate import PartialState
from datasets import Dataset
from trl import ModelConfig, SFTConfig, get_peft_config

from ..configs import CotArguments, RecScriptArguments
from ..cot.sources import rationales
from ..data import load_dataset_spec, training_windows
from ..modeling.lasar import get_lasar
from ..sid.tokenizer import EOT_TOKEN, add_eot_token
from ..tasks import check_items_known, history_prompt, prompt_template_of
from ..trainers.sft import SidSFTTrainer
from .common import load_stage1_checkpoint, record_max_history, setup_run, train_save_and_evaluate


def run(
    script_args: RecScriptArguments, cot_args: CotArguments, training_args: SFTConfig, model_args: ModelConfig
) -> None:
    """The explicit-CoT baseline (recipes/sft_explicit_cot.py): from a Stage-1 checkpoint, on the samples
    and CoTs Stage 2 trains on, SFT on `P <bot> rationale <eot> SID <eos>`, then the evaluation."""
    setup_run(training_args)
    model, tokenizer, sid_map = load_stage1_checkpoint(
        model_args, script_args, training_args.device, "the explicit-CoT baseline"
    )
    if get_lasar(model) is not None:
        raise ValueError(
            f"{model_args.model_name_or_path} is a LASAR checkpoint: start the explicit-CoT baseline from Stage 1"
        )
    add_eot_token(model, tokenizer)
    data = load_dataset_spec(script_args.dataset, max_history=script_args.max_history)
    check_items_known(data, sid_map)
    record_max_history(model, script_args.max_history, model_args.model_name_or_path)

    # The samples and CoTs Stage 2 trains on (same seed and count), shared through the teacher cache.
    windows = training_windows(data, script_args.max_train_samples, training_args.seed)
    cache_dir = cot_args.cot_cache_dir or os.path.join(training_args.output_dir, "cot")
    template = prompt_template_of(model)
    cots = rationales(cot_args, data, sid_map, windows, cache_dir, PartialState(), template=template)
    train_dataset = Dataset.from_dict(
        {
            "prompt": [history_prompt(w.history, sid_map, template) for w in windows],
            "completion": [cot + EOT_TOKEN + sid_map.sid(w.target) for w, cot in zip(windows, cots)],
        }
    )
    trainer = SidSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        sid_map=sid_map,
        stage="explicit-CoT SFT (baseline)",
        dataset_name=data.name,
    )
    train_save_and_evaluate(trainer, sid_map, data, script_args, label="explicit CoT")
