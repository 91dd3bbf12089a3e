"""The steps every recipe shares: pick the SID map, evaluate and report."""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Sequence

import torch
import transformers
from accelerate import PartialState
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from .configs import CotArguments, RecScriptArguments
from .cot.dataset import history_text, metadata_rationales
from .cot.teacher import HFTeacher, OpenAITeacher, generate_cached, rationale_request
from .data.schema import DataFormatError, RecData, Window
from .tasks import history_prompt, title_history_prompt, title_tasks
from .atomic import write_json_atomic
from .evaluation.evaluate import evaluate_recommender, format_table, most_popular_baseline
from .modeling.checkpoint import SID_MAP_FILE, check_same_sid_map, load_recommender
from .modeling.loading import resolve_model_path
from .sid.build import build_sid_map
from .sid.sid_map import SidMap

logger = logging.getLogger(__name__)
LATENT_TRAIN_DATA = "latent_train_data"  # Stage 2's rows with anchors, saved beside its checkpoint for Stage 3


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


def prepare_sid_map(script_args: RecScriptArguments, data: RecData, model_path: str, output_dir: str) -> SidMap:
    """The SID map to train with: `--sid_map`, else the starting checkpoint's, else the one an
    interrupted run left in `output_dir`, else a new one (saved there before training starts).

    A starting checkpoint that has its own map must agree with `--sid_map`:
    its SID token rows mean those items and no others.
    """
    checkpoint_file = os.path.join(model_path, SID_MAP_FILE)
    checkpoint_map = SidMap.load(checkpoint_file) if os.path.isfile(checkpoint_file) else None
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


def evaluate_and_report(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sid_map: SidMap,
    data: RecData,
    script_args: RecScriptArguments,
    label: str,
    output_json: str | None = None,
    depth: int | None = None,
) -> dict:
    """Evaluate the model (at `depth` latent steps if given, else its own choice) and the
    most-popular baseline on the same requests; print and save."""
    windows = data.splits[script_args.eval_split][: script_args.eval_max_samples]
    if not windows:
        raise ValueError(f"{data.name} has no {script_args.eval_split} samples to evaluate")
    exclude_items = None
    if script_args.exclude_history:
        exclude_items = [data.seen_items(script_args.eval_split, w) for w in windows]
    results = {
        label: evaluate_recommender(
            model, tokenizer, sid_map, windows, num_beams=script_args.eval_num_beams,
            batch_size=script_args.eval_batch_size, exclude_items=exclude_items, depth=depth,
        ),
        "most-popular": most_popular_baseline(data, windows, exclude_items=exclude_items),
    }
    title = (
        f"{data.name} {script_args.eval_split}: {len(windows)} requests, beams {script_args.eval_num_beams}, "
        f"exclude_history={script_args.exclude_history}"
    )
    print(format_table(results, title), flush=True)
    if output_json:
        payload = {**results[label], "variant": label, "dataset": data.name, "split": script_args.eval_split}
        payload["baselines"] = {"most-popular": results["most-popular"]}
        write_json_atomic(output_json, payload)
    return results


def train_save_and_evaluate(
    trainer: Trainer, sid_map: SidMap, data: RecData, script_args: RecScriptArguments, label: str
) -> None:
    """Train (resuming from the last complete checkpoint of the output folder, or the one
    given), save the final model, then (unless `evaluate_after_training` is off) evaluate the
    saved folder, as a user would load it, on the main process into eval_results.json."""
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
        evaluate_and_report(
            model, tokenizer, sid_map, data, script_args, label=label,
            output_json=os.path.join(args.output_dir, "eval_results.json"),
        )


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


def training_windows(data: RecData, max_samples: int | None, seed: int) -> list[Window]:
    """The training windows, or a seeded random subset of `max_samples` of them (in data order)."""
    windows = data.splits["train"]
    if max_samples is None or max_samples >= len(windows):
        return list(windows)
    return [windows[i] for i in sorted(random.Random(seed).sample(range(len(windows)), max_samples))]


def read_cot_file(path: str, prompts: Sequence[str]) -> list[str]:
    """CoTs from JSON lines `{"prompt": ..., "cot": ...}`, looked up by prompt; every
    prompt must have one."""
    by_prompt = {}
    with open(path) as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                by_prompt[row["prompt"]] = row["cot"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                expected = '{"prompt": ..., "cot": ...}'
                raise DataFormatError(f"{path} line {line_number}: expected {expected} ({error})") from None
    missing = [p for p in prompts if p not in by_prompt]
    if missing:
        raise DataFormatError(f"{path} has no CoT for {len(missing)} of {len(prompts)} prompts, e.g. {missing[0]!r}")
    return [by_prompt[p] for p in prompts]


def rationales(
    cot_args: CotArguments,
    data: RecData,
    sid_map: SidMap,
    windows: Sequence[Window],
    cache_dir: str,
    state: PartialState | None = None,
    template: str = "english",
) -> list[str]:
    """One CoT per window from the configured source; teacher answers are cached in
    `cache_dir/teacher.jsonl`, so an interrupted run resumes where it stopped. A CoT file is
    keyed by the prompts of the model's `template`. With `state`
    (every process calling), each process asks the teacher its share of the windows, an HF
    teacher on that process's device."""
    if cot_args.cot_source == "metadata":
        return metadata_rationales(data, sid_map, windows)
    if cot_args.cot_source == "file":
        return read_cot_file(cot_args.cot_file, [history_prompt(w.history, sid_map, template) for w in windows])
    if cot_args.cot_source == "hf":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        teacher = HFTeacher(
            AutoModelForCausalLM.from_pretrained(cot_args.teacher_model, dtype="auto").to(
                (state or PartialState()).device
            ),
            AutoTokenizer.from_pretrained(cot_args.teacher_model),
            max_new_tokens=cot_args.teacher_max_new_tokens,
        )
    else:
        teacher = OpenAITeacher(
            cot_args.teacher_base_url, cot_args.teacher_model, api_key_env=cot_args.teacher_api_key_env,
            concurrency=cot_args.teacher_concurrency, max_tokens=cot_args.teacher_max_new_tokens,
        )
    requests = [rationale_request(history_text(w.history, data, sid_map)) for w in windows]
    os.makedirs(cache_dir, exist_ok=True)
    return generate_cached(
        teacher, requests, os.path.join(cache_dir, "teacher.jsonl"), show_progress=True, state=state
    )
