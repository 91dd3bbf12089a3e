"""Merge a LoRA run into a plain recommender checkpoint for serving (recipes/merge_lora.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..configs import check_choices
from ..modeling.checkpoint import load_recommender, require_recommender_folder, save_recommender


@dataclass
class MergeLoraArguments:
    adapter: str = field(metadata={"help": "The LoRA run's output folder."})
    output_dir: str = field(metadata={"help": "Where the merged checkpoint goes."})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "dtype to load and save the merged weights in.",
            "choices": ["auto", "bfloat16", "float16", "float32"],
        },
    )

    def __post_init__(self) -> None:
        check_choices(self)
        require_recommender_folder(self.adapter, "--adapter")


def run(args: MergeLoraArguments) -> None:
    """Load the adapter onto its base model (adapter_config.json's base_model_name_or_path), merge, and
    save an ordinary HF folder that `load_recommender` and any inference server read without PEFT."""
    model, tokenizer, sid_map = load_recommender(args.adapter, dtype=args.dtype)
    save_recommender(model, tokenizer, sid_map, args.output_dir)
    print(f"merged {args.adapter} into {args.output_dir}")
