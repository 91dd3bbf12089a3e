"""Merge a LoRA run into a plain recommender checkpoint for serving.

    python recipes/merge_lora.py --adapter outputs/stage3 --output_dir outputs/stage3-merged

The adapter folder (adapter_config.json, adapter weights with the trained SID rows, tokenizer,
sid_map.json and, for LASAR, lasar_head.safetensors + lasar_config.json) is loaded onto its base
model (adapter_config.json's base_model_name_or_path), merged, and saved as an ordinary HF folder
that evaluate.py, `load_recommender` and any inference server read without PEFT.
"""

from trl import TrlParser

from lasar_trl.stages import merge_lora

if __name__ == "__main__":
    (args,) = TrlParser(merge_lora.MergeLoraArguments).parse_args_and_config()
    merge_lora.run(args)
