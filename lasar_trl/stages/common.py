"""Run setup and the steps the stages share: seed and threads, train-save-evaluate, and loading the
Stage-1 checkpoint that Stage 2 and the explicit-CoT baseline start from."""

from __future__ import annotations

import logging
import os

import torch
import transformers
from transformers import PreTrainedModel, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from ..atomic import read_json_object
from ..configs import RecScriptArguments
from ..data.schema import RecData
from ..evaluation.evaluate import evaluate_and_report
from ..modeling.checkpoint import MAX_HISTORY_KEY, SID_MAP_FILE, load_recommender
from ..modeling.loading import resolve_model_path
from ..sid.sid_map import SidMap

logger = logging.getLogger(__name__)
EVAL_RESULTS_FILE = "eval_results.json"


def setup_run(training_args: TrainingArguments) -> None:
    """Seed, log format and verbosity of a recipe; on CPU, one process uses every core
    unless the user chose a thread count.

    `accelerate launch` sets OMP_NUM_THREADS=1 unless given `--num_cpu_threads_per_process`
    (or a `use_cpu` config), which halves a 2-core machine's speed for no gain when a
    single process does all the work. A thread count the user set (OMP_NUM_THREADS outside
    `accelerate launch`, or LASAR_NUM_THREADS anywhere) is kept.
    """
    set_seed(training_args.seed)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    torch.set_num_threads(cpu_threads(os.environ, len(os.sched_getaffinity(0)), torch.get_num_threads()))


def end_run() -> None:
    """Close a multi-process run's process group while Python is still whole: gloo's threads left
    to interpreter exit can abort a finished rank ("terminate called without an active exception"),
    failing the launch after everything was saved. No barrier: the other ranks may still be
    evaluating on the main process, for longer than a collective's timeout."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def cpu_threads(environ: dict[str, str], cores: int, current: int) -> int:
    """Torch threads for this process: LASAR_NUM_THREADS if set; the current count on a GPU, under
    several processes, or when the user set OMP_NUM_THREADS; else every core.
    `accelerate launch` exports OMP_NUM_THREADS=1 on its own when the user set nothing
    (ACCELERATE_* variables tell it launched us), and passes a user's value through."""
    if environ.get("LASAR_NUM_THREADS"):
        return int(environ["LASAR_NUM_THREADS"])
    launched_by_accelerate = any(name.startswith("ACCELERATE_") for name in environ)
    user_chose = "OMP_NUM_THREADS" in environ and not (launched_by_accelerate and environ["OMP_NUM_THREADS"] == "1")
    if torch.cuda.is_available() or int(environ.get("LOCAL_WORLD_SIZE", "1")) > 1 or user_chose:
        return current
    return cores


def train_save_and_evaluate(
    trainer: Trainer, sid_map: SidMap, data: RecData, script_args: RecScriptArguments, label: str
) -> None:
    """Train (resuming from the last complete checkpoint of the output folder, or the one
    given), save the final model (with its model card), then (unless `evaluate_after_training` is
    off) evaluate the saved folder, as a user would load it, on the main process into
    eval_results.json, and add those metrics to the card."""
    args = trainer.args
    checkpoint = args.resume_from_checkpoint
    if checkpoint is None and os.path.isdir(args.output_dir):
        checkpoint = get_last_checkpoint(args.output_dir)
    if checkpoint:
        logger.info("Resuming from %s", checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(args.output_dir)
    trainer.save_state()  # trainer_state.json: the logged metrics, for curves (benchmarks/report.py)
    if script_args.evaluate_after_training and trainer.accelerator.is_main_process:
        # Not `trainer.model`: under ZeRO-3 its weights are shards that one process cannot run alone.
        model, tokenizer, _ = load_recommender(args.output_dir, sid_map, dtype=trainer.model.dtype, device=args.device)
        results_file = os.path.join(args.output_dir, EVAL_RESULTS_FILE)
        evaluate_and_report(model, tokenizer, sid_map, data, script_args, label=label, output_json=results_file)
        trainer.create_model_card(metrics=read_json_object(results_file))


def record_max_history(model: PreTrainedModel, max_history: int, start: str) -> None:
    """Record in the model's config the history items per prompt this run trains with, for
    evaluation and `Recommender` to prompt alike; warn when the checkpoint it starts from
    (`start`) was trained with another value."""
    trained = getattr(model.config, MAX_HISTORY_KEY, None)
    if trained is not None and trained != max_history:
        logger.warning(
            "%s was trained with max_history %d; this run builds prompts of up to %d items (--max_history)",
            start,
            trained,
            max_history,
        )
    setattr(model.config, MAX_HISTORY_KEY, max_history)


def load_stage1_checkpoint(model_args, script_args: RecScriptArguments, device, purpose: str):
    """(model, tokenizer, sid_map) of the Stage-1 checkpoint `--model_name_or_path` names (its SID map
    checked against `--sid_map` when given): where Stage 2 and the explicit-CoT baseline start."""
    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path must name a Stage-1 checkpoint (see recipes/sft_stage1.py)")
    model_path = resolve_model_path(model_args.model_name_or_path)
    if not os.path.isfile(os.path.join(model_path, SID_MAP_FILE)):
        raise ValueError(f"{model_path} has no {SID_MAP_FILE}: {purpose} starts from a Stage-1 checkpoint")
    expected_map = SidMap.load(script_args.sid_map) if script_args.sid_map else None
    return load_recommender(model_path, expected_map, dtype=model_args.dtype, device=device)
