"""The main job: LASAR end to end (Stage 1 SFT -> Stage 2 latent SFT -> Stage 3 GRPO), then one
evaluation table.

    accelerate launch recipes/grpo_lasar.py                                   # demonstration scale (the yaml below)
    accelerate launch recipes/grpo_lasar.py --smoke true                      # minutes: CI-sized
    accelerate launch recipes/grpo_lasar.py --config recipes/grpo_lasar_paper.yaml   # paper scale, on GPUs

Without `--config` it runs recipes/grpo_lasar.yaml (ml-100k, the compact scratch:tiny backbone);
recipes/grpo_lasar_smollm2.yaml runs it on the embedded SmolLM2-135M.
Stages 1 and 2 run from their own yamls (`stage1_config`, `stage2_config`), through the
functions their recipes call (`lasar_trl.stages`), unless `--model_name_or_path` names a
Stage-2 checkpoint (or a Stage-1 one, with `--rl_rows` and `--rollout_depth fixed
--fixed_depth 0`: the MiniOneRec recipe); each stage is saved under
`run_dir` and marked complete before the next starts, so a second run reuses it (and an
interrupted stage resumes from its last checkpoint). Stage 3 is `LasarGRPOTrainer` on
prompts and anchors of Stage 2's training rows. The table compares, on the same test
users: LASAR after RL, the same model forced to one depth (an ablation of adaptivity,
not a trained fixed-depth model), Stage 1 (N = 0) and most-popular, and shows the depths
Stage 2 chose before RL.
Everything lands in `run_dir` with `summary.json`.
"""

import os
import sys

from lasar_trl.stages import main_job
from lasar_trl.stages.common import end_run

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grpo_lasar.yaml")

if __name__ == "__main__":
    main_job.run(*main_job.parse_args(sys.argv[1:], DEFAULT_CONFIG))
    end_run()
