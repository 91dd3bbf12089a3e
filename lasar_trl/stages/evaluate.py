"""Evaluate a recommender checkpoint with SID-constrained beam search (recipes/evaluate.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from ..configs import RecScriptArguments, check_choices, check_positive
from ..data import SPLITS, load_dataset_spec
from ..evaluation.evaluate import evaluate_and_report
from ..modeling.checkpoint import load_recommender, max_history_of, require_recommender_folder
from ..modeling.lasar import LASAR_CONFIG_FILE, check_forced_depth, has_lasar, read_lasar_config
from ..sid.sid_map import SidMap
from ..tasks import check_items_known


@dataclass
class EvaluateArguments:
    checkpoint: str = field(metadata={"help": "Folder with model, tokenizer and sid_map.json."})
    dataset: str = field(default="ml-100k", metadata={"help": "Dataset spec, as for training."})
    split: str = field(default="test", metadata={"help": "The split to evaluate.", "choices": list(SPLITS)})
    max_samples: int | None = field(default=None, metadata={"help": "Evaluate the first N requests only."})
    num_beams: int = field(default=20, metadata={"help": "Beams of the constrained beam search."})
    batch_size: int = field(default=8, metadata={"help": "Requests per decoding batch."})
    exclude_history: bool = field(default=False, metadata={"help": "Ban each user's history items."})
    max_history: int | None = field(
        default=None,
        metadata={"help": "Items of history per request (default: the checkpoint's, i.e. its training run's)."},
    )
    sid_map: str | None = field(default=None, metadata={"help": "Check the checkpoint against this sid_map.json."})
    output_json: str | None = field(default=None, metadata={"help": "Where to write the results."})
    depth: int | None = field(
        default=None,
        metadata={"help": "Force this many latent steps (0 = none) instead of the checkpoint's own choice."},
    )
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu", metadata={"help": "Torch device."})

    def __post_init__(self) -> None:
        check_choices(self)
        check_positive(self, "max_samples", "num_beams", "batch_size", "max_history")
        require_recommender_folder(self.checkpoint, "--checkpoint")
        n_max = read_lasar_config(self.checkpoint).n_max if has_lasar(self.checkpoint) else None
        check_forced_depth(self.depth, n_max, os.path.join(self.checkpoint, LASAR_CONFIG_FILE), "--depth")


def run(args: EvaluateArguments) -> None:
    """Evaluate the checkpoint next to most-popular on the same requests; print the table, write the JSON."""
    expected_map = SidMap.load(args.sid_map) if args.sid_map else None
    model, tokenizer, sid_map = load_recommender(args.checkpoint, expected_map, device=args.device)
    max_history = max_history_of(model, args.max_history, where=args.checkpoint)
    data = load_dataset_spec(args.dataset, max_history=max_history)
    check_items_known(data, sid_map)
    script_args = RecScriptArguments(
        dataset=args.dataset,
        max_history=max_history,
        eval_split=args.split,
        eval_max_samples=args.max_samples,
        eval_num_beams=args.num_beams,
        eval_batch_size=args.batch_size,
        exclude_history=args.exclude_history,
    )
    label = args.checkpoint if args.depth is None else f"{args.checkpoint} (depth {args.depth})"
    evaluate_and_report(
        model, tokenizer, sid_map, data, script_args, label=label, output_json=args.output_json, depth=args.depth
    )
