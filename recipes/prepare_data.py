"""Write one stage's training rows as a dataset that TRL's own scripts load with `--dataset_name DIR`.

    python recipes/prepare_data.py --dataset ml-100k --stage 1 --model_name_or_path embedded:SmolLM2-135M-Instruct \
        --output_dir outputs/data/stage1
    python recipes/prepare_data.py --dataset ml-100k --stage 2 --model_name_or_path outputs/stage1 \
        --output_dir outputs/data/stage2
    python recipes/prepare_data.py --dataset ml-100k --stage 3 --model_name_or_path outputs/stage1 \
        --output_dir outputs/data/stage3

Writes DIR/data/train.parquet (Stage 1 also DIR/data/validation.parquet) and DIR/sid_map.json; for
Stage 1 from a base model also DIR/model, that model with the SID vocabulary, which TRL's sft.py
trains as `--model_name_or_path DIR/model`.
Stage 1 rows: prompt, completion; Stage 2: prompt, completion, anchors; Stage 3: prompt, target,
and anchors unless `--terminal_anchors false` (docs/data.md lists what each column holds). Stages
2 and 3 take the Stage-1 checkpoint (its hidden states are the anchors) and the CoT options of
recipes/sft_latent.py. The output is written atomically, and an existing one is refused unless
`--overwrite`.
"""

from trl import TrlParser

from lasar_trl.configs import CotArguments
from lasar_trl.stages import prepare_data

if __name__ == "__main__":
    prepare_data.run(*TrlParser((prepare_data.PrepareDataArguments, CotArguments)).parse_args_and_config())
