"""Stage 1: ground the SID tokens with plain SFT, then evaluate.

    accelerate launch recipes/sft_stage1.py --config recipes/sft_stage1.yaml

Layout `P <bot> SID <eos>` (N = 0 latent steps), loss on completions only: next SID from
the history, title <-> SID and next SID from titles (`stage1_layout: windows`), or, with
`prompt_template: compact` and `stage1_layout: sequences`, one causal pass per user over
`s1 <bot> s2 <bot> ...` with the loss on every next item, plus title <-> SID.
`--model_name_or_path scratch:tiny` (or `scratch:small`) builds a compact backbone from
scratch, with a tokenizer trained on this dataset's text. Saves model, tokenizer and
sid_map.json.
"""

from trl import ModelConfig, SFTConfig

from lasar_trl.configs import RecipeParser, RecScriptArguments
from lasar_trl.stages import stage1
from lasar_trl.stages.common import end_run

if __name__ == "__main__":
    parser = RecipeParser((RecScriptArguments, SFTConfig, ModelConfig))
    stage1.run(*parser.parse_args_and_config())
    end_run()
