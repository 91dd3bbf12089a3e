"""One tiny training scenario, run by tests/test_distributed.py in one process or, under
torchrun, in two CPU processes (gloo) sharing the same global batch; each process writes what
it saw to OUT_DIR/rank{i}.json.

    python tests/distributed_worker.py SCENARIO OUT_DIR
    python -m torch.distributed.run --nproc_per_node 2 tests/distributed_worker.py SCENARIO OUT_DIR
"""

import json
import os
import sys

import torch
from test_grpo import grpo_args, grpo_dataset, save_stage2_checkpoint, sid_rewards
from test_lasar_sft import make_trainer as make_sft_trainer
from transformers import AutoTokenizer

from lasar_trl.modeling.checkpoint import load_recommender
from lasar_trl.modeling.loading import EMBEDDED_MODEL, resolve_model_path
from lasar_trl.sid import SidMap
from lasar_trl.stages.common import end_run
from lasar_trl.trainers import LasarGRPOTrainer

GLOBAL_BATCH = 8
SCENARIOS = {
    # Stage 2 at one fixed depth, and GRPO with argmax depth and greedy decoding: deterministic,
    # so one and two processes must take the same first step
    "stage2_fixed": dict(stage=2, depth_mode="fixed", fixed_depth=2, max_steps=1),
    "stage2_vocab": dict(stage=2, depth_mode="fixed", fixed_depth=2, align_space="vocab", max_steps=1),
    "grpo_greedy": dict(stage=3, rollout_depth="argmax", temperature=0.0, max_steps=1),
    # depths differ between the ranks within a step: nothing may hang
    "stage2_cot": dict(stage=2, max_steps=3),
    "grpo_sample": dict(stage=3, max_steps=3),
}


def deepspeed_config(stage: int) -> dict:
    """ZeRO on CPU (DS_ACCELERATOR=cpu): the Trainer fills the "auto" fields from its arguments."""
    return {
        "zero_optimization": {"stage": stage, "stage3_gather_16bit_weights_on_model_save": True},
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": False},
        "fp16": {"enabled": False},
    }


def main(scenario: str, out_dir: str, zero_stage: int = 0) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    settings = dict(SCENARIOS[scenario])
    stage = settings.pop("stage")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(EMBEDDED_MODEL))
    codes = torch.randint(0, 4, (40, 3), generator=torch.Generator().manual_seed(0))
    sid_map = SidMap.from_codes([str(i) for i in range(40)], codes)
    common = dict(per_device_train_batch_size=GLOBAL_BATCH // world, **settings)
    if world > 1:
        common["ddp_backend"] = "gloo"
    if zero_stage:
        common["deepspeed"] = deepspeed_config(zero_stage)
    folder = os.path.join(out_dir, f"stage2-rank{rank}")  # the same weights on every rank (seeded)
    if stage == 2:
        trainer = make_sft_trainer(tokenizer, sid_map, os.path.join(out_dir, "run"), **common)
    else:
        # model and tokenizer before the config: once it exists, ZeRO-3 shards every model built
        model, tokenizer, _ = load_recommender(save_stage2_checkpoint(tokenizer, sid_map, folder))
        args = grpo_args(os.path.join(out_dir, "run"), num_generations=4, **common)
        trainer = LasarGRPOTrainer(
            model=model,
            reward_funcs=sid_rewards(sid_map, tokenizer),
            args=args,
            train_dataset=grpo_dataset(sid_map),
            processing_class=tokenizer,
        )
    depth_maxima = []
    max_steps = trainer._max_steps

    def recording(depths):
        depth_maxima.append(int(depths.max()))
        return max_steps(depths)

    trainer._max_steps = recording
    trainer.train()
    trainer.save_model(os.path.join(out_dir, "final"))  # under ZeRO-3: consolidated from the shards
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"world": world, "logs": logs, "local_depth_maxima": depth_maxima}, f)
    end_run()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
