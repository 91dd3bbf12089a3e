"""The main job: LASAR end to end (Stage 1 SFT -> Stage 2 latent SFT -> Stage 3 GRPO), then one
evaluation table.

    accelerate launch recipes/grpo_lasar.py                                   # demonstration scale (the yaml below)
    accelerate launch recipes/grpo_lasar.py --smoke true                      # minutes: CI-sized
    accelerate launch recipes/grpo_lasar.py --config recipes/grpo_lasar_paper.yaml   # paper scale, on GPUs

Without `--config` it runs recipes/grpo_lasar.yaml (ml-100k, the compact scratch:tiny backbone);
recipes/grpo_lasar_smollm2.yaml runs it on the embedded SmolLM2-135M.
Stages 1 and 2 run from their own recipes and configs (`stage1_config`, `stage2_config`)
unless `--model_name_or_path` names a Stage-2 checkpoint (or a Stage-1 one, with `--rl_rows`
and `--rollout_depth fixed --fixed_depth 0`: the MiniOneRec recipe); each stage is saved under
`run_dir` and marked complete before the next starts, so a second run reuses it (and an
interrupted stage resumes from its last checkpoint). Stage 3 is `LasarGRPOTrainer` on
prompts and anchors of Stage 2's training rows. The table compares, on the same test
users: LASAR after RL, the same model forced to one depth (an ablation of adaptivity,
not a trained fixed-depth model), Stage 1 (N = 0) and most-popular, and shows the depths
Stage 2 chose before RL.
Everything lands in `run_dir` with `summary.json`.
"""

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace

from accelerate import PartialState
from datasets import load_from_disk
from transformers import TrainingArguments
from trl import ModelConfig, SFTConfig, TrlParser, get_peft_config

from lasar_trl.atomic import write_json_atomic
from lasar_trl.configs import CotArguments, RecScriptArguments
from lasar_trl.data import load_dataset_spec
from lasar_trl.evaluation.evaluate import depth_histogram, evaluate_recommender, format_table, most_popular_baseline
from lasar_trl.evaluation.recommend import policy_depths
from lasar_trl.modeling.checkpoint import load_recommender
from lasar_trl.modeling.lasar import has_lasar
from lasar_trl.modeling.loading import resolve_model_path
from lasar_trl.pipeline import LATENT_TRAIN_DATA, setup_run, train_save_and_evaluate
from lasar_trl.rewards import ExactMatchReward, PrefixMatchReward, RankingReward
from lasar_trl.trainers.lasar_grpo_config import LasarGRPOConfig
from lasar_trl.trainers.lasar_grpo_trainer import LasarGRPOTrainer
from lasar_trl.trainers.lasar_sft_config import LasarSFTConfig

RECIPES = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(RECIPES, "grpo_lasar.yaml")
STAGE_DONE = "stage_complete.json"
# --smoke: the same job, shrunk to minutes on 2 CPU cores (CI runs it)
SMOKE = dict(stage1_max_train_samples=16, stage2_max_train_samples=16, max_steps=2, eval_max_samples=16,
             eval_num_beams=10)
logger = logging.getLogger(__name__)


@dataclass
class PipelineArguments:
    """How the main job chains the stages and what it compares."""

    run_dir: str = field(default="outputs/lasar", metadata={"help": "Stage checkpoints and summary.json go here."})
    stage1_config: str = field(default=os.path.join(RECIPES, "sft_stage1.yaml"), metadata={"help": "Stage-1 yaml."})
    stage2_config: str = field(default=os.path.join(RECIPES, "sft_latent.yaml"), metadata={"help": "Stage-2 yaml."})
    stage1_max_train_samples: int | None = field(default=None, metadata={"help": "Overrides the Stage-1 yaml's."})
    stage2_max_train_samples: int | None = field(default=None, metadata={"help": "Overrides the Stage-2 yaml's."})
    stage1_checkpoint: str | None = field(
        default=None, metadata={"help": "With --model_name_or_path: the Stage-1 checkpoint to compare with."}
    )
    rl_rows: str | None = field(
        default=None,
        metadata={"help": "Stage 3's prompts (and anchors): a saved dataset; default: the Stage-2 checkpoint's "
                  f"{LATENT_TRAIN_DATA} (name one to run GRPO on a Stage-1 checkpoint at fixed_depth 0)."},
    )
    evaluate: bool = field(default=True, metadata={"help": "Evaluate the variants after training."})
    ablation_depth: int = field(default=4, metadata={"help": "The depth LASAR is forced to in the ablation row."})
    smoke: bool = field(default=False, metadata={"help": f"Shrink everything to a few minutes: {SMOKE}."})
    scale: str = field(default="demonstration scale", metadata={"help": "What the table's title calls this run."})


def header(text: str) -> None:
    print(f"\n{'=' * 100}\n{text}\n{'=' * 100}", flush=True)


def run_stage(title: str, output_dir: str, train) -> float:
    """Run `train()` unless `output_dir` holds a completed run of this stage; the minutes it took."""
    marker = os.path.join(output_dir, STAGE_DONE)
    if os.path.isfile(marker):
        with open(marker) as f:
            minutes = json.load(f)["train_minutes"]
        header(f"{title}: reusing the completed run in {output_dir} ({minutes:.1f} min when it ran)")
        return minutes
    header(title)
    start = time.perf_counter()
    train()
    minutes = (time.perf_counter() - start) / 60
    state = PartialState()
    if state.is_main_process:
        write_json_atomic(marker, {"title": title, "train_minutes": minutes})
    state.wait_for_everyone()
    return minutes


def stage_args(types: tuple, config: str, output_dir: str, script_args: RecScriptArguments, samples: int | None,
               training_args: LasarGRPOConfig):
    """A stage's configs: its yaml, with this job's data, seed, trackers, output folder and (optionally)
    sample count."""
    overrides = ["--config", config, "--output_dir", output_dir, "--dataset", script_args.dataset,
                 "--max_history", str(script_args.max_history), "--evaluate_after_training", "false",
                 "--seed", str(training_args.seed)]
    if samples is not None:
        overrides += ["--max_train_samples", str(samples)]
    configs = TrlParser(types).parse_args_and_config(overrides)
    for config in configs:
        if isinstance(config, TrainingArguments):  # a list: the command line takes only one tracker
            config.report_to = list(training_args.report_to)
    return configs


def train_sft_stages(script_args: RecScriptArguments, job: PipelineArguments,
                     training_args: LasarGRPOConfig) -> tuple[str, str, dict]:
    """Stage 1 then Stage 2 through their own recipes; their folders and training minutes."""
    from sft_latent import main as stage2_main  # the recipes beside this one
    from sft_stage1 import main as stage1_main

    stage1_dir, stage2_dir = os.path.join(job.run_dir, "stage1"), os.path.join(job.run_dir, "stage2")
    minutes = {}
    stage1 = stage_args((RecScriptArguments, SFTConfig, ModelConfig), job.stage1_config, stage1_dir, script_args,
                        job.stage1_max_train_samples, training_args)
    minutes["stage1"] = run_stage("Stage 1: SID grounding (SFT)", stage1_dir, lambda: stage1_main(*stage1))
    stage2 = stage_args((RecScriptArguments, CotArguments, LasarSFTConfig, ModelConfig), job.stage2_config,
                        stage2_dir, script_args, job.stage2_max_train_samples, training_args)
    stage2[3].model_name_or_path = stage1_dir
    minutes["stage2"] = run_stage("Stage 2: latent reasoning SFT", stage2_dir, lambda: stage2_main(*stage2))
    return stage1_dir, stage2_dir, minutes


def rl_prompts(path: str, script_args: RecScriptArguments, training_args: LasarGRPOConfig):
    """Stage 3's prompts and terminal anchors: a seeded subset of Stage 2's training rows (at `path`)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"{path} is missing: Stage 3 takes its prompts and anchors from the Stage-2 rows that "
            "recipes/sft_latent.py saves (OUTPUT_DIR/latent_train_data)"
        )
    rows = load_from_disk(path).shuffle(seed=training_args.seed)
    if script_args.max_train_samples:
        rows = rows.select(range(min(script_args.max_train_samples, len(rows))))
    return rows if training_args.terminal_align_weight > 0 else rows.remove_columns("anchors")


def train_grpo(stage2_dir, rows: str, script_args, training_args: LasarGRPOConfig, model_args: ModelConfig, data):
    model, tokenizer, sid_map = load_recommender(stage2_dir, dtype=model_args.dtype, device=training_args.device)
    group = training_args.num_generations
    trainer = LasarGRPOTrainer(
        model=model,
        reward_funcs=[RankingReward(sid_map, tokenizer, group), ExactMatchReward(sid_map, tokenizer),
                      PrefixMatchReward(sid_map, tokenizer)],
        args=training_args,
        train_dataset=rl_prompts(rows, script_args, training_args),
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        sid_map=sid_map,
    )
    # evaluated below, next to the other variants
    train_save_and_evaluate(trainer, sid_map, data, replace(script_args, evaluate_after_training=False), "lasar")


def evaluate_variants(variants: dict, stage2_dir: str | None, data, script_args: RecScriptArguments, scale: str):
    """Every (checkpoint, forced depth) variant and most-popular on the same requests, and the
    depths Stage 2 chose before RL, given `stage2_dir` (its Policy Head on the same prompts)."""
    windows = data.splits[script_args.eval_split][: script_args.eval_max_samples]
    exclude = [data.seen_items(script_args.eval_split, w) for w in windows] if script_args.exclude_history else None
    results = {}
    for label, (path, depth) in variants.items():
        print(f"-- {label}", flush=True)
        model, tokenizer, sid_map = load_recommender(path)
        results[label] = evaluate_recommender(
            model, tokenizer, sid_map, windows, num_beams=script_args.eval_num_beams,
            batch_size=script_args.eval_batch_size, exclude_items=exclude, depth=depth,
        )
    results["most-popular"] = most_popular_baseline(data, windows, exclude_items=exclude)
    before_rl = None
    if stage2_dir:  # None for GRPO from a Stage-1 checkpoint: no Policy Head to ask
        model, tokenizer, sid_map = load_recommender(stage2_dir)
        depths = policy_depths(model, tokenizer, sid_map, [w.history for w in windows], script_args.eval_batch_size)
        before_rl = {"mean_depth": sum(depths) / len(depths), "depth_histogram": depth_histogram(depths)}
    title = (
        f"{scale.upper()}: {data.name} {script_args.eval_split}, {len(windows)} users, "
        f"{script_args.eval_num_beams} beams, exclude_history={script_args.exclude_history}"
    )
    lines = [format_table(results, title)]
    lines += [f"  depths of {label}: {r['depth_histogram']}" for label, r in results.items()]
    if before_rl:
        lines.append(f"  depths Stage 2 chose before RL: {before_rl['depth_histogram']} "
                     f"(mean {before_rl['mean_depth']:.2f})")
    return results, before_rl, "\n".join(lines)


def parse_job(argv: list[str]) -> tuple:
    """The job's five argument groups from `argv` (`--config` yaml and flags), smoke-sized with `--smoke`."""
    parser = TrlParser((RecScriptArguments, CotArguments, LasarGRPOConfig, ModelConfig, PipelineArguments))
    script_args, cot_args, training_args, model_args, job = parser.parse_args_and_config(argv)
    if job.smoke:
        for key, value in SMOKE.items():
            for target in (job, script_args, training_args):
                if hasattr(target, key):
                    setattr(target, key, value)
    return script_args, cot_args, training_args, model_args, job


def main(argv: list[str]) -> None:
    script_args, cot_args, training_args, model_args, job = parse_job(argv)
    setup_run(training_args)
    start = time.perf_counter()
    data = load_dataset_spec(script_args.dataset, max_history=script_args.max_history)
    if model_args.model_name_or_path:  # Stage 3 only: from Stage 2 (or Stage 1 with --rl_rows, at fixed depth 0)
        stage2_dir, stage1_dir = resolve_model_path(model_args.model_name_or_path), job.stage1_checkpoint
        minutes = {}
    else:
        stage1_dir, stage2_dir, minutes = train_sft_stages(script_args, job, training_args)
        # Building training arguments resets accelerate's shared state, and the Stage-1/2 Trainers
        # hold it now (under DeepSpeed with their plugin): Stage 3's must be built after theirs.
        training_args = parse_job(argv)[2]
        setup_run(training_args)  # the stage recipes set their own seeds
    grpo_dir = training_args.output_dir
    minutes["stage3"] = run_stage(
        f"Stage 3: GRPO ({training_args.rollout_depth} latent depth, "
        f"G = {training_args.num_generations})", grpo_dir,
        lambda: train_grpo(stage2_dir, job.rl_rows or os.path.join(stage2_dir, LATENT_TRAIN_DATA), script_args,
                           training_args, model_args, data),
    )
    if not (job.evaluate and PartialState().is_main_process):
        return
    header("Evaluation")
    latent = has_lasar(stage2_dir)
    if latent:
        variants = {
            "LASAR (Stage 3, Policy Head depth)": (grpo_dir, None),
            f"LASAR forced to N={job.ablation_depth} (ablation)": (grpo_dir, job.ablation_depth),
        }
    else:  # GRPO from a Stage-1 checkpoint: no latent steps to ablate
        variants = {"Stage 1 + GRPO (N=0)": (grpo_dir, None)}
    if stage1_dir:
        variants["Stage 1 (N=0)"] = (stage1_dir, None)
    scale = "smoke test" if job.smoke else job.scale
    results, before_rl, table = evaluate_variants(variants, stage2_dir if latent else None, data, script_args, scale)
    print(table, flush=True)
    summary = {
        "scale": scale,
        "command": " ".join(sys.argv), "dataset": data.name, "split": script_args.eval_split,
        "checkpoints": {**{label: path for label, (path, _) in variants.items()}, "Stage 2": stage2_dir},
        "train_minutes": minutes, "total_minutes": (time.perf_counter() - start) / 60,
        "pipeline": asdict(job), "results": results, "stage2_before_rl": before_rl,
    }
    write_json_atomic(os.path.join(job.run_dir, "summary.json"), summary)
    print(f"\nSummary: {os.path.join(job.run_dir, 'summary.json')} ({summary['total_minutes']:.1f} min)", flush=True)


if __name__ == "__main__":
    if "--config" not in sys.argv:
        sys.argv[1:1] = ["--config", os.path.relpath(DEFAULT_CONFIG)]
    main(sys.argv[1:])
