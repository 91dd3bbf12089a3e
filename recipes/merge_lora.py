"""Merge a LoRA run into a plain recommender checkpoint for serving.

    python recipes/merge_lora.py --adapter outputs/stage3 --output_dir outputs/stage3-merged

The adapter folder (adapter_config.json, adapter weights with the trained SID rows, tokenizer,
sid_map.json and, for LASAR, lasar_head.safetensors + lasar_config.json) is loaded onto its base
model (adapter_config.json's base_model_name_or_path), merged, and saved as an ordinary HF folder
that evaluate.py, `load_recommender` and any inference server read without PEFT.
"""

import argparse

from lasar_trl.modeling.checkpoint import load_recommender, save_recommender


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True, help="the LoRA run's output folder")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--dtype", default="auto", help="dtype to load and save the merged weights in")
    args = parser.parse_args()
    model, tokenizer, sid_map = load_recommender(args.adapter, dtype=args.dtype)
    save_recommender(model, tokenizer, sid_map, args.output_dir)
    print(f"merged {args.adapter} into {args.output_dir}")


if __name__ == "__main__":
    main()
