"""Stage 1: ground the SID tokens with plain SFT (layout `P <bot> SID <eos>`, N = 0 latent steps)."""

from __future__ import annotations

import logging
import os

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from trl import ModelConfig, SFTConfig, get_peft_config

from ..configs import RecScriptArguments, default_model
from ..cot.dataset import metadata_rationales
from ..data import load_dataset_spec
from ..data.schema import RecData
from ..modeling.checkpoint import SID_MAP_FILE, check_same_sid_map
from ..modeling.loading import resolve_model_path
from ..modeling.scratch import build_scratch_backbone, is_scratch
from ..sid.build import build_sid_map
from ..sid.sid_map import SidMap
from ..sid.tokenizer import add_sid_tokens
from ..tasks import (
    PROMPT_TEMPLATE_KEY,
    check_items_known,
    recommendation_dataset,
    stage1_dataset,
    stage1_sequence_dataset,
    title_history_prompt,
    title_tasks,
)
from ..trainers.sft import SidSFTTrainer
from .common import record_max_history, setup_run, train_save_and_evaluate

logger = logging.getLogger(__name__)


def run(script_args: RecScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> None:
    """Stage 1 (recipes/sft_stage1.py): the SID map, the backbone with the SID vocabulary, the task mix
    (`stage1_layout`), SFT, then the evaluation of the saved model."""
    setup_run(training_args)

    # Data and SIDs.
    data = load_dataset_spec(script_args.dataset, max_history=script_args.max_history)
    model_path = resolve_model_path(default_model(model_args.model_name_or_path))
    sid_map = prepare_sid_map(script_args, data, model_path, training_args.output_dir)
    check_items_known(data, sid_map)

    # Model with the SID vocabulary.
    if is_scratch(model_path) and model_args.use_peft:
        raise ValueError(
            f"--use_peft with --model_name_or_path {model_path}: LoRA on a randomly initialised "
            "backbone trains adapters over noise; train it whole (LoRA works from its Stage-1 folder)"
        )
    model, tokenizer = stage1_model(
        model_path,
        data,
        sid_map,
        template=script_args.prompt_template,
        max_history=script_args.max_history,
        seed=training_args.seed,
        revision=model_args.model_revision,
        dtype=model_args.dtype,
        attn_implementation=model_args.attn_implementation,
    )

    if script_args.stage1_layout == "sequences":
        train_dataset = stage1_sequence_dataset(data, sid_map, tokenizer, script_args.max_history)
    else:
        train_dataset = stage1_dataset(data, sid_map, seed=training_args.seed, template=script_args.prompt_template)
    train_dataset = shuffled_subset(train_dataset, script_args.max_train_samples, training_args.seed)
    eval_dataset = None
    if training_args.eval_strategy != "no":
        eval_dataset = validation_rows(data, sid_map, script_args.prompt_template)

    trainer = SidSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        sid_map=sid_map,
        stage="Stage 1 SFT",
        dataset_name=data.name,
    )

    train_save_and_evaluate(trainer, sid_map, data, script_args, label="stage1 (N=0)")


def stage1_model(
    model_path: str, data: RecData, sid_map: SidMap, *, template: str, max_history: int, seed: int, **load_kwargs
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model Stage 1 trains: `model_path` (a `scratch:` preset, built from `seed` with a tokenizer
    trained on the data's text, or a pretrained model loaded with `load_kwargs`) with the SID tokens
    and `<bot>` added, and the prompt template and history length that later stages read recorded."""
    if is_scratch(model_path):
        model, tokenizer = build_scratch_backbone(model_path, scratch_tokenizer_texts(data, sid_map), seed=seed)
    else:
        revision = load_kwargs.get("revision")
        tokenizer = AutoTokenizer.from_pretrained(model_path, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(model_path, **load_kwargs)
    added = add_sid_tokens(model, tokenizer, sid_map)
    logger.info("Added %d tokens (SID codes and <bot>); vocabulary is now %d", added, len(tokenizer))
    setattr(model.config, PROMPT_TEMPLATE_KEY, template)  # what later stages prompt with
    record_max_history(model, max_history, model_path)
    return model, tokenizer


def shuffled_subset(rows: Dataset, max_samples: int | None, seed: int) -> Dataset:
    """`rows` shuffled with `seed`, then the first `max_samples` of them (all when unset)."""
    rows = rows.shuffle(seed=seed)
    return rows.select(range(min(max_samples, len(rows)))) if max_samples else rows


def validation_rows(data: RecData, sid_map: SidMap, template: str) -> Dataset:
    """What Stage 1 evaluates on while it trains: the validation windows as prompt/completion rows."""
    return recommendation_dataset(data.splits["validation"], sid_map, template).select_columns(["prompt", "completion"])


def prepare_sid_map(script_args: RecScriptArguments, data: RecData, model_path: str | None, output_dir: str) -> SidMap:
    """The SID map to train with: `--sid_map`, else the starting checkpoint's (`model_path`, when
    given), else the one an interrupted run left in `output_dir`, else a new one (saved there
    before training starts).

    A starting checkpoint that has its own map must agree with `--sid_map`:
    its SID token rows mean those items and no others.
    """
    checkpoint_file = os.path.join(model_path, SID_MAP_FILE) if model_path else None
    checkpoint_map = SidMap.load(checkpoint_file) if checkpoint_file and os.path.isfile(checkpoint_file) else None
    if script_args.sid_map:
        sid_map = SidMap.load(script_args.sid_map)
        if checkpoint_map is not None:
            check_same_sid_map(sid_map, checkpoint_map, model_path)
        return sid_map
    if checkpoint_map is not None:
        logger.info("Using the SID map of the starting checkpoint %s", model_path)
        return checkpoint_map
    previous_run_file = os.path.join(output_dir, SID_MAP_FILE)
    if os.path.isfile(previous_run_file):
        logger.info("Reusing %s from an earlier run of this output_dir", previous_run_file)
        return SidMap.load(previous_run_file)
    logger.info("No --sid_map given: building SIDs for %s with the defaults", data.name)
    sid_map = build_sid_map(data, use_shipped=script_args.use_shipped_sids)
    sid_map.save(output_dir)
    return sid_map


def scratch_tokenizer_texts(data: RecData, sid_map: SidMap, max_rationales: int = 2000) -> list[str]:
    """What a tokenizer trained from scratch must read well: the prompt templates with the
    catalog's titles and categories, and the offline CoT writer's sentences (on a fixed
    sample of the training windows)."""
    windows = data.splits["train"]
    sample = windows[:: max(1, len(windows) // max_rationales)]
    texts = metadata_rationales(data, sid_map, sample)
    if data.has_text:
        texts += [prompt + completion for prompt, completion in title_tasks(data, sid_map)]
        texts += [title_history_prompt(w.history, data.catalog) for w in sample]
        texts += [" ".join(fields.values()) for fields in data.catalog.values() if fields]
    return texts
