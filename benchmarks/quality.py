"""Recommendation quality of every variant, per dataset and seed, on one budget.

    python benchmarks/quality.py --budget smoke                  # minutes: CI-sized (the main job's --smoke)
    python benchmarks/quality.py --budget full                   # hours on 2 CPU cores: the main job's yaml

Per dataset and seed, the main job (recipes/grpo_lasar.py) trains Stage 1, Stage 2 and
Stage 3 into `variants_dir/DATASET/seedS` (outputs/quality; outputs/quality_smoke for smoke); then,
from the same Stage-1 checkpoint, on the same Stage-2 rows and CoTs, the recipes train:

- "Stage 1 + GRPO, N=0": GRPO without latent steps (`rollout_depth fixed`, `fixed_depth 0`),
  the MiniOneRec recipe, with the main job's GRPO settings;
- "fixed depth N=4": Stage 2 with `depth_mode fixed`, `fixed_depth 4`;
- "explicit CoT": recipes/sft_explicit_cot.py (rationale as text, then the SID).

Every variant, and most-popular, is evaluated by the same code on the same test users with
`exclude_history`. Each trained folder is reused when complete, and a (dataset, seed) already in
`--output_json` at the same budget is kept: an interrupted benchmark resumes where it stopped.
Results are per seed, with mean and spread (max - min) over the seeds a dataset has, and each variant's
training minutes (the Trainer's `train_runtime`, on top of the shared Stage 1; LASAR's are
Stage 2 + Stage 3).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import statistics
import subprocess
import sys

import torch
import yaml
from common import command_line, machine_info
from datasets import load_from_disk

from lasar_trl.atomic import write_json_atomic
from lasar_trl.data import load_dataset_spec
from lasar_trl.evaluation.evaluate import evaluate_recommender, most_popular_baseline
from lasar_trl.modeling.checkpoint import load_recommender
from lasar_trl.stages.stage2 import LATENT_TRAIN_DATA

RECIPES = os.path.relpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "recipes"))
SHARED_DATA = os.environ.get("LASAR_SHARED_DATA", "../shared/data")  # where the Amazon sets are unpacked
# The main job's own sizes (`--smoke true`, or recipes/grpo_lasar.yaml), the evaluation it would run, and
# a folder per budget (completed folders are reused: a smoke run must never stand in for a full one).
BUDGETS = {
    "smoke": dict(
        main_job=["--smoke", "true"],
        seeds=[42],
        datasets=["ml-100k"],
        eval_users=16,
        num_beams=10,
        variants_dir="outputs/quality_smoke",
    ),
    "full": dict(
        main_job=[],
        seeds=[42, 43, 44],
        datasets=["ml-100k", f"minionerec:{SHARED_DATA}/amazon18_industrial"],
        eval_users=None,
        num_beams=20,
        variants_dir="outputs/quality",
    ),
}
METRICS = [
    "hr@5",
    "hr@10",
    "hr@20",
    "ndcg@5",
    "ndcg@10",
    "ndcg@20",
    "mean_depth",
    "mean_rationale_tokens",
    "invalid_rate",
    "train_minutes",
]
DONE = "stage_complete.json"
with open(os.path.join(RECIPES, "grpo_lasar.yaml")) as main_yaml:
    MAIN_JOB_MAX_HISTORY = yaml.safe_load(main_yaml)["max_history"]
YAMLS = ["grpo_lasar.yaml", "sft_stage1.yaml", "sft_latent.yaml", "sft_explicit_cot.yaml"]


def recipes_fingerprint() -> str:
    """sha256 of the yamls every variant trains from: a report only resumes runs made with the same ones."""
    digest = hashlib.sha256()
    for name in YAMLS:
        with open(os.path.join(RECIPES, name), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()  # what the main job writes into a finished stage's folder


def launch(recipe: str, flags: list[str]) -> list[str]:
    """Run a recipe under `accelerate launch` (one process); returns the command as a user types it."""
    command = ["accelerate", "launch", "--num_processes", "1", os.path.join(RECIPES, recipe), *flags]
    subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *command[2:]], check=True)
    return command


def train_minutes(folder: str) -> float:
    """The Trainer's own training time (`train_runtime`, in trainer_state.json): the same clock for
    every variant, without process start-up, data preparation or saving."""
    with open(os.path.join(folder, "trainer_state.json")) as f:
        history = json.load(f)["log_history"]
    return next(entry["train_runtime"] for entry in reversed(history) if "train_runtime" in entry) / 60


def train_variants(dataset: str, seed: int, run_dir: str, args) -> tuple[dict, dict, dict]:
    """Train (or reuse) every variant of one dataset and seed: checkpoints, commands and training minutes."""
    job = [
        *BUDGETS[args.budget]["main_job"],
        "--dataset",
        dataset,
        "--seed",
        str(seed),
        "--run_dir",
        run_dir,
        "--output_dir",
        os.path.join(run_dir, "stage3"),
        "--evaluate",
        "false",
        *args.main_job_flags,
    ]
    stage1, stage2, stage3 = (os.path.join(run_dir, stage) for stage in ("stage1", "stage2", "stage3"))
    commands = {}
    if not os.path.isfile(os.path.join(stage3, DONE)):
        commands["main job"] = launch("grpo_lasar.py", job)
    rows = os.path.join(stage2, LATENT_TRAIN_DATA)
    same_rows = [
        "--dataset",
        dataset,
        "--seed",
        str(seed),
        "--max_train_samples",
        str(len(load_from_disk(rows))),
        "--cot_cache_dir",
        os.path.join(stage2, "cot"),
        "--evaluate_after_training",
        "false",
        "--model_name_or_path",
        stage1,
        *args.sft_flags,
    ]
    extra = {
        "Stage 1 + GRPO, N=0": (
            "grpo_lasar.py",
            [
                *job[: job.index("--run_dir")],
                "--run_dir",
                os.path.join(run_dir, "grpo_n0"),
                "--output_dir",
                os.path.join(run_dir, "grpo_n0"),
                "--evaluate",
                "false",
                "--model_name_or_path",
                stage1,
                "--rl_rows",
                rows,
                "--rollout_depth",
                "fixed",
                "--fixed_depth",
                "0",
                "--terminal_align_weight",
                "0",
                *args.main_job_flags,
            ],
        ),
        "fixed depth N=4": (
            "sft_latent.py",
            [
                "--config",
                os.path.join(RECIPES, "sft_latent.yaml"),
                *same_rows,
                "--output_dir",
                os.path.join(run_dir, "fixed_n4"),
                "--depth_mode",
                "fixed",
                "--fixed_depth",
                "4",
            ],
        ),
        "explicit CoT": (
            "sft_explicit_cot.py",
            [
                "--config",
                os.path.join(RECIPES, "sft_explicit_cot.yaml"),
                *same_rows,
                "--output_dir",
                os.path.join(run_dir, "explicit_cot"),
            ],
        ),
    }
    checkpoints = {"Stage 1 (N=0)": stage1, "LASAR without RL (Stage 2)": stage2, "LASAR (Stage 2 + GRPO)": stage3}
    minutes = {
        "Stage 1 (N=0)": 0.0,
        "LASAR without RL (Stage 2)": train_minutes(stage2),
        "LASAR (Stage 2 + GRPO)": train_minutes(stage2) + train_minutes(stage3),
    }
    for name, (recipe, flags) in extra.items():
        folder = flags[flags.index("--output_dir") + 1]
        marker = os.path.join(folder, "variant_complete.json")
        if not os.path.isfile(marker):
            commands[name] = launch(recipe, flags)
            write_json_atomic(marker, {"command": commands[name]})
        checkpoints[name], minutes[name] = folder, train_minutes(folder)
    return checkpoints, commands, {**minutes, "_stage1": train_minutes(stage1)}


def summarize(per_seed: dict[int, dict]) -> tuple[dict, dict]:
    """Mean and spread (max - min) over seeds of every metric."""
    mean, spread = {}, {}
    for metric in METRICS:
        values = [result[metric] for result in per_seed.values() if result.get(metric) is not None]
        if values:
            mean[metric], spread[metric] = statistics.fmean(values), max(values) - min(values)
    return mean, spread


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (`argv`, else sys.argv); tests parse the documented commands with it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=list(BUDGETS), default="smoke")
    parser.add_argument("--datasets", nargs="+", help="dataset specs (default: by budget)")
    parser.add_argument("--seeds", nargs="+", type=int, help="default: by budget")
    parser.add_argument("--variants_dir", help="default: by budget")
    parser.add_argument(
        "--main_job_flags",
        type=shlex.split,
        default=[],
        help='extra flags for recipes/grpo_lasar.py, one string: --main_job_flags="--x 1"',
    )
    parser.add_argument("--sft_flags", type=shlex.split, default=[], help="extra flags for the SFT variants' recipes")
    parser.add_argument("--output_json", default="benchmarks/results/quality.json")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    budget = BUDGETS[args.budget]
    seeds, dataset_specs = args.seeds or budget["seeds"], args.datasets or budget["datasets"]
    variants_dir = args.variants_dir or budget["variants_dir"]
    torch.set_num_threads(len(os.sched_getaffinity(0)))

    # Seeds outer, datasets inner, and the JSON rewritten after every finished run: a run stopped early
    # (or a budget that allows only one seed of a dataset) leaves a valid report of what was measured,
    # and running the same budget again into the same JSON measures only the runs it lacks.
    # Recorded per seed (`measured_by`): seeds kept from an earlier run keep the command and machine that measured them.
    this_run = {"command": command_line(), "machine": machine_info("cpu", torch.float32)}
    report = {
        "budget": args.budget,
        "recipes_sha256": recipes_fingerprint(),
        "seeds": seeds,
        "complete": False,
        "datasets": {},
    }
    if os.path.isfile(args.output_json):
        with open(args.output_json) as f:
            earlier = json.load(f)
        if (earlier["budget"], earlier.get("recipes_sha256")) == (args.budget, report["recipes_sha256"]):
            report["datasets"] = {spec: r for spec, r in earlier["datasets"].items() if spec in dataset_specs}
    for seed in seeds:
        for spec in dataset_specs:
            result = report["datasets"].setdefault(
                spec, {"seeds": [], "evaluation": {}, "variants": {}, "commands": {}, "run_dirs": {}, "measured_by": {}}
            )
            if seed in result["seeds"]:
                print(f"{spec} seed {seed}: already in {args.output_json}", flush=True)
                continue
            run_dir = os.path.join(variants_dir, os.path.basename(spec.split(":", 1)[-1].rstrip("/")), f"seed{seed}")
            checkpoints, result["commands"][seed], minutes = train_variants(spec, seed, run_dir, args)
            data = load_dataset_spec(spec, max_history=MAIN_JOB_MAX_HISTORY)  # the histories the models saw
            windows = data.splits["test"][: budget["eval_users"]]
            exclude = [data.seen_items("test", w) for w in windows]
            result["evaluation"] = {
                "split": "test",
                "users": len(windows),
                "num_beams": budget["num_beams"],
                "exclude_history": True,
                "stage1_train_minutes": minutes["_stage1"],
            }
            per_variant = {}
            for name, path in checkpoints.items():
                model, tokenizer, sid_map = load_recommender(path)
                per_variant[name] = evaluate_recommender(
                    model, tokenizer, sid_map, windows, num_beams=budget["num_beams"], exclude_items=exclude
                )
                per_variant[name].update(train_minutes=minutes[name], checkpoint=path)
                print(
                    f"{spec} seed {seed} {name:28s} HR@10 {per_variant[name]['hr@10']:.4f} "
                    f"NDCG@10 {per_variant[name]['ndcg@10']:.4f} depth {per_variant[name]['mean_depth']:.2f}",
                    flush=True,
                )
            per_variant["most-popular"] = most_popular_baseline(data, windows, exclude_items=exclude)
            for name, metrics in per_variant.items():
                variant = result["variants"].setdefault(name, {"per_seed": {}})
                variant["per_seed"][seed] = metrics
                variant["mean"], variant["spread"] = summarize(variant["per_seed"])
            result["seeds"].append(seed)
            result["run_dirs"][seed] = run_dir
            result["measured_by"][seed] = this_run
            report["complete"] = all(
                s in report["datasets"].get(d, {"seeds": []})["seeds"] for s in seeds for d in dataset_specs
            )
            write_json_atomic(args.output_json, report)
            print(f"wrote {args.output_json} ({spec}, seed {seed})", flush=True)


if __name__ == "__main__":
    main()
