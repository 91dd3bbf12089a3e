"""The main job (recipes/grpo_lasar.py): Stage 1 SFT -> Stage 2 latent SFT -> Stage 3 GRPO, then one
evaluation table.

Its options are parsed once (`parse_args`); the Stage-1 and Stage-2 yamls it names are read into
their typed configs as their own recipes read them, and the job's data, seed, trackers, folders,
sample counts and `--smoke` are applied with `dataclasses.replace` (`configure`). Each stage is saved
under `run_dir` and marked complete before the next starts, so a second run reuses it (and an
interrupted stage resumes from its last checkpoint).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import torch
import transformers
import trl
from accelerate import PartialState
from transformers import TrainingArguments
from trl import GRPOConfig, ModelConfig, SFTConfig

from ..atomic import write_json_atomic
from ..configs import CotArguments, RecipeParser, RecScriptArguments
from ..data import load_dataset_spec
from ..data.schema import RecData
from ..evaluation.evaluate import (
    depth_histogram,
    evaluate_recommender,
    evaluation_requests,
    format_table,
    most_popular_baseline,
)
from ..evaluation.recommend import policy_depths
from ..modeling.checkpoint import load_recommender
from ..modeling.lasar import has_lasar
from ..modeling.loading import resolve_model_path
from ..rewards import DEFAULT_REWARDS, REWARDS, check_reward_names
from ..trainers.lasar_grpo_config import LasarGRPOConfig
from ..trainers.lasar_sft_config import LasarSFTConfig
from . import stage1, stage2, stage3
from .common import setup_run
from .stage2 import LATENT_TRAIN_DATA

STAGE_DONE = "stage_complete.json"
SMOKE = "16 training rows per SFT stage, 2 GRPO steps, 16 test users, 10 beams"
Args = TypeVar("Args", bound=TrainingArguments)


@dataclass
class PipelineArguments:
    """How the main job chains the stages and what it compares."""

    run_dir: str = field(default="outputs/lasar", metadata={"help": "Stage checkpoints and summary.json go here."})
    stage1_config: str = field(default="recipes/sft_stage1.yaml", metadata={"help": "Stage-1 yaml."})
    stage2_config: str = field(default="recipes/sft_latent.yaml", metadata={"help": "Stage-2 yaml."})
    stage1_max_train_samples: int | None = field(default=None, metadata={"help": "Overrides the Stage-1 yaml's."})
    stage2_max_train_samples: int | None = field(default=None, metadata={"help": "Overrides the Stage-2 yaml's."})
    stage1_checkpoint: str | None = field(
        default=None, metadata={"help": "With --model_name_or_path: the Stage-1 checkpoint to compare with."}
    )
    rl_rows: str | None = field(
        default=None,
        metadata={
            "help": "Stage 3's prompts (and anchors): a saved dataset; default: the Stage-2 checkpoint's "
            f"{LATENT_TRAIN_DATA} (name one to run GRPO on a Stage-1 checkpoint at fixed_depth 0)."
        },
    )
    max_rl_prompts: int | None = field(
        default=None, metadata={"help": "Stage 3 trains on a seeded subset of this many rl_rows (all when unset)."}
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: list(DEFAULT_REWARDS),
        metadata={"help": f"Stage 3's rewards, weighted by reward_weights in this order; any of {list(REWARDS)}."},
    )
    evaluate: bool = field(default=True, metadata={"help": "Evaluate the variants after training."})
    ablation_depth: int = field(default=4, metadata={"help": "The depth LASAR is forced to in the ablation row."})
    smoke: bool = field(default=False, metadata={"help": f"Shrink everything to a few minutes: {SMOKE}."})
    scale: str = field(default="demonstration scale", metadata={"help": "What the table's title calls this run."})

    def __post_init__(self) -> None:
        check_reward_names(self.reward_funcs)
        if self.max_rl_prompts is not None and self.max_rl_prompts < 1:
            raise ValueError(f"max_rl_prompts must be >= 1, got {self.max_rl_prompts}")


ARGUMENTS = (RecScriptArguments, LasarGRPOConfig, ModelConfig, PipelineArguments)


@dataclass
class Stage1Configs:
    """Stage 1's typed configs: its yaml, with the job's settings."""

    script_args: RecScriptArguments
    training_args: SFTConfig
    model_args: ModelConfig


@dataclass
class Stage2Configs:
    """Stage 2's typed configs: its yaml, with the job's settings, starting from the job's Stage 1."""

    script_args: RecScriptArguments
    cot_args: CotArguments
    training_args: LasarSFTConfig
    model_args: ModelConfig


@dataclass
class MainJobConfigs:
    """Every config of the main job, typed; `stage1` and `stage2` are None when it starts from a
    checkpoint (`--model_name_or_path`)."""

    script_args: RecScriptArguments
    training_args: LasarGRPOConfig
    model_args: ModelConfig
    job: PipelineArguments
    stage1: Stage1Configs | None
    stage2: Stage2Configs | None


def parse_args(
    args: Sequence[str], default_config: str
) -> tuple[RecScriptArguments, LasarGRPOConfig, ModelConfig, PipelineArguments]:
    """The job's options, parsed once from `args` and their `--config` yaml (`default_config` when
    `args` name none)."""
    if "--config" not in args:
        args = ["--config", default_config, *args]
    return RecipeParser(ARGUMENTS).parse_args_and_config(args)


def rebuilt(args: Args, **changes) -> Args:
    """`dataclasses.replace` for training arguments: builds them anew, which also resets Accelerate's
    shared state (the previous stage's Trainer holds it, under DeepSpeed with its plugin), so each
    stage's are rebuilt just before its Trainer. A GRPO config's `generation_batch_size` is cleared:
    its `__post_init__` derives it from `steps_per_generation` (kept) and refuses the two together."""
    if isinstance(args, GRPOConfig):
        changes = {"generation_batch_size": None, **changes}
    return replace(args, **changes)


def read_stage_yaml(types: tuple[type, ...], path: str) -> tuple:
    """A stage's yaml, read into its typed configs exactly as its own recipe's `--config` reads it."""
    return RecipeParser(types).parse_args_and_config(["--config", path])


def for_stage(
    script_args: RecScriptArguments,
    training_args: Args,
    job_script: RecScriptArguments,
    job_training: LasarGRPOConfig,
    output_dir: str,
    max_train_samples: int | None,
) -> tuple[RecScriptArguments, Args]:
    """A stage's data and training configs with the job's dataset, history, seed and trackers, its
    output folder and (when given) sample count, and no evaluation of its own: the job evaluates every
    stage in one table."""
    script_args = replace(
        script_args,
        dataset=job_script.dataset,
        max_history=job_script.max_history,
        evaluate_after_training=False,
        max_train_samples=script_args.max_train_samples if max_train_samples is None else max_train_samples,
    )
    training_args = rebuilt(
        training_args, output_dir=output_dir, seed=job_training.seed, report_to=list(job_training.report_to)
    )
    return script_args, training_args


def configure(
    script_args: RecScriptArguments, training_args: LasarGRPOConfig, model_args: ModelConfig, job: PipelineArguments
) -> MainJobConfigs:
    """The job's configs with `--smoke` applied and, unless it starts from a checkpoint, the Stage-1 and
    Stage-2 yamls read for `run_dir/stage1` and `run_dir/stage2` (Stage 2 starting from Stage 1's)."""
    if script_args.max_train_samples is not None:  # the stage yamls' own counts are not the job's
        raise ValueError(
            "max_train_samples: the main job's RL prompts are max_rl_prompts, and Stage 1's and Stage 2's samples "
            "stage1_max_train_samples and stage2_max_train_samples"
        )
    weights = training_args.reward_weights
    if weights is not None and len(weights) != len(job.reward_funcs):
        raise ValueError(
            f"reward_weights {weights} and reward_funcs {job.reward_funcs}: give one weight per reward, in order"
        )
    if job.smoke:  # the same job, shrunk to minutes on 2 CPU cores (CI runs it)
        job = replace(job, stage1_max_train_samples=16, stage2_max_train_samples=16)
        script_args = replace(script_args, eval_max_samples=16, eval_num_beams=10)
        training_args = rebuilt(training_args, max_steps=2)
    if model_args.model_name_or_path:
        return MainJobConfigs(script_args, training_args, model_args, job, stage1=None, stage2=None)
    stage1_dir, stage2_dir = os.path.join(job.run_dir, "stage1"), os.path.join(job.run_dir, "stage2")

    stage1_script, stage1_training, stage1_model = read_stage_yaml(
        (RecScriptArguments, SFTConfig, ModelConfig), job.stage1_config
    )
    stage1_script, stage1_training = for_stage(
        stage1_script, stage1_training, script_args, training_args, stage1_dir, job.stage1_max_train_samples
    )
    stage2_script, stage2_cot, stage2_training, stage2_model = read_stage_yaml(
        (RecScriptArguments, CotArguments, LasarSFTConfig, ModelConfig), job.stage2_config
    )
    stage2_script, stage2_training = for_stage(
        stage2_script, stage2_training, script_args, training_args, stage2_dir, job.stage2_max_train_samples
    )
    return MainJobConfigs(
        script_args,
        training_args,
        model_args,
        job,
        stage1=Stage1Configs(stage1_script, stage1_training, stage1_model),
        stage2=Stage2Configs(
            stage2_script, stage2_cot, stage2_training, replace(stage2_model, model_name_or_path=stage1_dir)
        ),
    )


def header(text: str) -> None:
    print(f"\n{'=' * 100}\n{text}\n{'=' * 100}", flush=True)


def run_stage(title: str, output_dir: str, train: Callable[[], None]) -> float:
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


def run(
    script_args: RecScriptArguments, training_args: LasarGRPOConfig, model_args: ModelConfig, job: PipelineArguments
) -> None:
    """Stages 1 and 2 from their yamls (unless `--model_name_or_path` names a Stage-2 checkpoint, or a
    Stage-1 one with `--rl_rows` and `--rollout_depth fixed --fixed_depth 0`: the MiniOneRec recipe),
    Stage 3 into `output_dir`, then the table on the same test users: LASAR after RL, the same model
    forced to one depth (an ablation of adaptivity, not a trained fixed-depth model), Stage 1 (N = 0)
    and most-popular, with the depths Stage 2 chose before RL; everything in `run_dir/summary.json`."""
    configs = configure(script_args, training_args, model_args, job)
    script_args, training_args, job = configs.script_args, configs.training_args, configs.job
    setup_run(training_args)
    start = time.perf_counter()
    minutes = {}
    if configs.stage1 is None:  # Stage 3 only: from Stage 2 (or Stage 1 with --rl_rows, at fixed depth 0)
        stage2_dir, stage1_dir = resolve_model_path(model_args.model_name_or_path), job.stage1_checkpoint
    else:
        first, second = configs.stage1, configs.stage2
        stage1_dir, stage2_dir = first.training_args.output_dir, second.training_args.output_dir
        minutes["stage1"] = run_stage(
            "Stage 1: SID grounding (SFT)",
            stage1_dir,
            lambda: stage1.run(first.script_args, rebuilt(first.training_args), first.model_args),
        )
        minutes["stage2"] = run_stage(
            "Stage 2: latent reasoning SFT",
            stage2_dir,
            lambda: stage2.run(second.script_args, second.cot_args, rebuilt(second.training_args), second.model_args),
        )
    grpo_dir = training_args.output_dir
    minutes["stage3"] = run_stage(
        f"Stage 3: GRPO ({training_args.rollout_depth} latent depth, G = {training_args.num_generations})",
        grpo_dir,
        lambda: stage3.run(  # evaluated below, next to the other variants
            replace(script_args, evaluate_after_training=False),
            rebuilt(training_args),
            replace(model_args, model_name_or_path=stage2_dir),
            rl_rows=job.rl_rows,
            max_rl_prompts=job.max_rl_prompts,
            reward_funcs=job.reward_funcs,
        ),
    )
    if not (job.evaluate and PartialState().is_main_process):
        return
    header("Evaluation")
    data = load_dataset_spec(script_args.dataset, max_history=script_args.max_history)
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
        "command": " ".join(sys.argv),
        "dataset": data.name,
        "split": script_args.eval_split,
        "checkpoints": {**{label: path for label, (path, _) in variants.items()}, "Stage 2": stage2_dir},
        "train_minutes": minutes,
        "total_minutes": (time.perf_counter() - start) / 60,
        "pipeline": asdict(job),
        "results": results,
        "stage2_before_rl": before_rl,
        "grpo_exact_match_per_logged_window": logged_values(
            os.path.join(grpo_dir, "trainer_state.json"), "rewards/exact_match/mean"
        ),
        "machine": machine_record(),
    }
    write_json_atomic(os.path.join(job.run_dir, "summary.json"), summary)
    print(f"\nSummary: {os.path.join(job.run_dir, 'summary.json')} ({summary['total_minutes']:.1f} min)", flush=True)


def logged_values(trainer_state: str, key: str) -> list[float]:
    """One metric over the logged training windows of a finished Trainer (empty if never logged)."""
    if not os.path.isfile(trainer_state):
        return []
    with open(trainer_state) as file:
        return [entry[key] for entry in json.load(file)["log_history"] if key in entry]


def machine_record() -> dict:
    """Where the job ran, so a number copied from summary.json keeps its machine."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return {
        "cpu": names[0] if names else platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "date": datetime.date.today().isoformat(),
    }


def evaluate_variants(
    variants: dict, stage2_dir: str | None, data: RecData, script_args: RecScriptArguments, scale: str
) -> tuple[dict, dict | None, str]:
    """Every (checkpoint, forced depth) variant and most-popular on the same requests, and the
    depths Stage 2 chose before RL, given `stage2_dir` (its Policy Head on the same prompts)."""
    windows, exclude = evaluation_requests(data, script_args)
    results = {}
    for label, (path, depth) in variants.items():
        print(f"-- {label}", flush=True)
        model, tokenizer, sid_map = load_recommender(path)
        results[label] = evaluate_recommender(
            model,
            tokenizer,
            sid_map,
            windows,
            num_beams=script_args.eval_num_beams,
            batch_size=script_args.eval_batch_size,
            exclude_items=exclude,
            depth=depth,
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
        lines.append(
            f"  depths Stage 2 chose before RL: {before_rl['depth_histogram']} (mean {before_rl['mean_depth']:.2f})"
        )
    return results, before_rl, "\n".join(lines)
