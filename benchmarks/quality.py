"""Does RL help, and does it cut depth? Four variants from one Stage-1 checkpoint, one budget.

    python benchmarks/quality.py      # after the main job (accelerate launch recipes/grpo_lasar.py)

Every variant starts from the same Stage-1 checkpoint and is trained on the same Stage-2
rows (`--train_samples`, seed 42) with the same recipe (recipes/sft_latent.py and its yaml):

- Stage 1 + N = 0 SFT on those rows (`depth_mode=fixed`, `fixed_depth=0`, no alignment): the
  no-reasoning model given the same extra SFT budget;
- fixed depth N = 4 (`depth_mode=fixed`, `fixed_depth=4`);
- Stage 2 adaptive (`depth_mode=cot`, the main job's Stage 2);
- LASAR: that Stage 2 after the main job's GRPO (the only variant with the RL steps on top).

Reused when present (so the main job's Stage 2 and Stage 3 are not trained again). Each is
evaluated on the same test users with `exclude_history`. Targets (issue 4): LASAR's NDCG@10 >=
the fixed-depth model's and >= Stage 2's, and LASAR's mean depth <= 60% of Stage 2's. The JSON
records what was measured, met or not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from common import command_line, machine_info
from lasar_trl.atomic import write_json_atomic
from lasar_trl.data import load_dataset_spec
from lasar_trl.evaluation.evaluate import evaluate_recommender
from lasar_trl.modeling.checkpoint import load_recommender

RECIPES = os.path.relpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "recipes"))
TRAINED = {  # variant -> the Stage-2 recipe flags that make it
    "stage1 + N=0 SFT": ["--depth_mode", "fixed", "--fixed_depth", "0", "--align_weight", "0"],
    "fixed depth N=4": ["--depth_mode", "fixed", "--fixed_depth", "4"],
}


def train_variant(flags: list[str], stage1: str, output_dir: str, args) -> list[str]:
    """Run recipes/sft_latent.py for one variant unless its folder holds a finished model."""
    command = [
        "accelerate", "launch", "--num_processes", "1", os.path.join(RECIPES, "sft_latent.py"),
        "--config", os.path.join(RECIPES, "sft_latent.yaml"),
        "--model_name_or_path", stage1, "--output_dir", output_dir, "--dataset", args.dataset,
        "--max_train_samples", str(args.train_samples), "--evaluate_after_training", "false",
        "--cot_cache_dir", os.path.join(args.run_dir, "stage2", "cot"), *flags,  # the same rows' CoTs and anchors
    ]
    if not os.path.isfile(os.path.join(output_dir, "lasar_config.json")):
        subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *command[2:]], check=True)
    return command  # as a user would type it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--run_dir", default="outputs/lasar", help="the main job's run_dir (stage1, stage2, stage3)")
    parser.add_argument("--variants_dir", default="outputs/quality", help="where the extra variants are trained")
    parser.add_argument("--train_samples", type=int, default=160, help="Stage-2 rows per variant (the main job's)")
    parser.add_argument("--eval_users", type=int, default=200)
    parser.add_argument("--num_beams", type=int, default=20)
    parser.add_argument("--output_json", default="benchmarks/results/quality_ml100k.json")
    args = parser.parse_args()

    stage1 = os.path.join(args.run_dir, "stage1")
    checkpoints = {name: os.path.join(args.variants_dir, name.replace(" ", "_").replace("=", "")) for name in TRAINED}
    commands = {name: train_variant(flags, stage1, checkpoints[name], args) for name, flags in TRAINED.items()}
    checkpoints["Stage 2 adaptive"] = os.path.join(args.run_dir, "stage2")
    checkpoints["LASAR (after GRPO)"] = os.path.join(args.run_dir, "stage3")
    for name, path in checkpoints.items():
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"{name}: no model in {path}; run the main job first (recipes/grpo_lasar.py)")

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    data = load_dataset_spec(args.dataset)
    windows = data.splits["test"][: args.eval_users]
    exclude = [data.seen_items("test", w) for w in windows]
    results = {}
    for name, path in checkpoints.items():
        model, tokenizer, sid_map = load_recommender(path)
        start = time.perf_counter()
        result = evaluate_recommender(model, tokenizer, sid_map, windows, num_beams=args.num_beams,
                                      exclude_items=exclude)
        results[name] = {**result, "eval_seconds": time.perf_counter() - start, "checkpoint": path}
        print(f"{name:24s} HR@10 {result['hr@10']:.4f} NDCG@10 {result['ndcg@10']:.4f} "
              f"mean depth {result['mean_depth']:.2f} {result['depth_histogram']}", flush=True)

    lasar, fixed, stage2 = results["LASAR (after GRPO)"], results["fixed depth N=4"], results["Stage 2 adaptive"]
    targets = {
        "lasar_ndcg10_ge_fixed_depth": lasar["ndcg@10"] >= fixed["ndcg@10"],
        "lasar_ndcg10_ge_stage2": lasar["ndcg@10"] >= stage2["ndcg@10"],
        "lasar_mean_depth_le_60pct_of_stage2": lasar["mean_depth"] <= 0.6 * stage2["mean_depth"],
    }
    with open(os.path.join(args.run_dir, "summary.json")) as f:
        main_job = json.load(f)
    payload = {
        "command": command_line(), "machine": machine_info("cpu", torch.float32), "dataset": data.name,
        "eval": {"split": "test", "users": len(windows), "num_beams": args.num_beams, "exclude_history": True},
        "train_samples_per_variant": args.train_samples, "variant_commands": commands,
        "main_job": {"command": main_job["command"], "train_minutes": main_job["train_minutes"]},
        "mean_depth_after_over_before_rl": lasar["mean_depth"] / stage2["mean_depth"],
        "targets_met": targets, "results": results,
    }
    write_json_atomic(args.output_json, payload)
    print(json.dumps({"targets_met": targets, "depth_ratio": payload["mean_depth_after_over_before_rl"]}, indent=1))


if __name__ == "__main__":
    main()
