"""Stage 2: latent reasoning SFT from a Stage-1 checkpoint, then evaluate.

    accelerate launch recipes/sft_latent.py --config recipes/sft_latent.yaml

Builds (or reuses from OUTPUT_DIR/cot) one CoT per training sample, splits it into
segments, takes the Stage-1 model's hidden state at the end of each segment as an anchor,
then trains the latent loop, the step-wise alignment and the Policy Head
(`LasarSFTTrainer`). Saves model, tokenizer, sid_map.json, lasar_head.safetensors and
lasar_config.json, and the training rows with their anchors (OUTPUT_DIR/latent_train_data,
where Stage 3 takes its prompts and terminal anchors from), then evaluates at the Policy
Head's depths.
"""

from trl import ModelConfig

from lasar_trl.configs import CotArguments, RecipeParser, RecScriptArguments
from lasar_trl.stages import stage2
from lasar_trl.stages.common import end_run
from lasar_trl.trainers.lasar_sft_config import LasarSFTConfig

if __name__ == "__main__":
    parser = RecipeParser((RecScriptArguments, CotArguments, LasarSFTConfig, ModelConfig))
    stage2.run(*parser.parse_args_and_config())
    end_run()
