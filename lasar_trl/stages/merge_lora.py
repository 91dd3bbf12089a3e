"""Merge a LoRA run into a plain recommender checkpoint for serving (recipes/merge_lora.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_path, read_json_object
from ..configs import check_choices
from ..modeling.checkpoint import MAX_HISTORY_KEY, load_recommender, require_recommender_folder, save_recommender
from ..modeling.model_card import MODEL_CARD_FILE, CardFacts, render_model_card
from ..tasks import prompt_template_of


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
    results = os.path.join(args.adapter, "eval_results.json")
    facts = CardFacts(
        model_id=args.output_dir,
        stage=f"a LoRA run merged into its base (recipes/merge_lora.py --adapter {args.adapter})",
        started_from=args.adapter,
        dataset=sid_map.stats.get("dataset"),
        prompt_template=prompt_template_of(model),
        max_history=getattr(model.config, MAX_HISTORY_KEY, None),
        sid_stats=sid_map.stats,
        metrics=read_json_object(results) if os.path.isfile(results) else None,  # the adapter's: same weights
    )
    with atomic_path(os.path.join(args.output_dir, MODEL_CARD_FILE)) as card:
        card.write_text(render_model_card(f"# {Path(args.output_dir).name}\n", facts), encoding="utf-8")
    print(f"merged {args.adapter} into {args.output_dir}")
