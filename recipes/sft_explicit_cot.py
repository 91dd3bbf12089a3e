"""The explicit chain-of-thought baseline: from a Stage-1 checkpoint, on the same samples and
CoTs as Stage 2, learn to write the rationale as text, then `<eot>`, then the SID; then evaluate.

    accelerate launch recipes/sft_explicit_cot.py --config recipes/sft_explicit_cot.yaml

Layout `P <bot> rationale <eot> SID <eos>`, loss on the completion (rationale and SID).
`recommend` on the saved checkpoint writes the rationale greedily, then runs the same
constrained beam search over SIDs as every other variant: what LASAR's latent steps
replace, and what its latency is compared with (benchmarks/latency.py).
"""

from trl import ModelConfig, SFTConfig

from lasar_trl.configs import CotArguments, RecipeParser, RecScriptArguments
from lasar_trl.stages import explicit_cot
from lasar_trl.stages.common import end_run

if __name__ == "__main__":
    parser = RecipeParser((RecScriptArguments, CotArguments, SFTConfig, ModelConfig))
    explicit_cot.run(*parser.parse_args_and_config())
    end_run()
