"""The explicit chain-of-thought baseline: from a Stage-1 checkpoint, on the same samples and
CoTs as Stage 2, learn to write the rationale as text, then `<eot>`, then the SID; then evaluate.

    accelerate launch recipes/sft_explicit_cot.py --config recipes/sft_explicit_cot.yaml

Layout `P <bot> rationale <eot> SID <eos>`, loss on the completion (rationale and SID).
`recommend` on the saved checkpoint writes the rationale greedily, then runs the same
constrained beam search over SIDs as every other variant: what LASAR's latent steps
replace, and what its latency is compared with (benchmarks/latency.py).
"""

import os

from accelerate import PartialState
from datasets import Dataset
from trl import ModelConfig, SFTConfig, TrlParser, get_peft_config

from lasar_trl.configs import CotArguments, RecScriptArguments
from lasar_trl.data import load_dataset_spec
from lasar_trl.tasks import check_items_known, history_prompt, prompt_template_of
from lasar_trl.modeling.lasar import get_lasar
from lasar_trl.pipeline import (
    load_stage1_checkpoint, rationales, setup_run, train_save_and_evaluate,
    training_windows,
)
from lasar_trl.sid.tokenizer import EOT_TOKEN, add_eot_token
from lasar_trl.trainers.sft import SidSFTTrainer


def main(script_args: RecScriptArguments, cot_args: CotArguments, training_args: SFTConfig, model_args: ModelConfig):
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

    # The samples and CoTs Stage 2 trains on (same seed and count), shared through the teacher cache.
    windows = training_windows(data, script_args.max_train_samples, training_args.seed)
    cache_dir = cot_args.cot_cache_dir or os.path.join(training_args.output_dir, "cot")
    template = prompt_template_of(model)
    cots = rationales(cot_args, data, sid_map, windows, cache_dir, PartialState(), template=template)
    train_dataset = Dataset.from_dict({
        "prompt": [history_prompt(w.history, sid_map, template) for w in windows],
        "completion": [cot + EOT_TOKEN + sid_map.sid(w.target) for w, cot in zip(windows, cots)],
    })
    trainer = SidSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        sid_map=sid_map,
    )
    train_save_and_evaluate(trainer, sid_map, data, script_args, label="explicit CoT")


if __name__ == "__main__":
    parser = TrlParser((RecScriptArguments, CotArguments, SFTConfig, ModelConfig))
    main(*parser.parse_args_and_config())
