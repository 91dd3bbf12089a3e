"""Build the Semantic ID map of a dataset and save it for training and evaluation (recipes/build_sids.py)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

from ..configs import check_choices
from ..data import load_dataset_spec
from ..sid.build import KMEANS_CHOICES, build_sid_map, resolve_codebook_size
from ..sid.sid_map import LEVEL_LETTERS, MAP_FILE

# What marks a folder as holding a SID map or a model that a new map would overwrite or orphan
CHECKPOINT_FILES = (MAP_FILE, "config.json", "model.safetensors", "adapter_config.json", "lasar_config.json")


@dataclass
class BuildSidsArguments:
    dataset: str = field(
        metadata={"help": "Dataset: ml-100k, recbole:DIR, minionerec:DIR, letter:DIR, p5:DIR or amazon:DIR."},
    )
    output_dir: str = field(metadata={"help": "Folder for sid_map.json and sid_stats.json."})
    levels: int = field(default=3, metadata={"help": "RQ-KMeans levels before the disambiguation level."})
    codebook_size: str = field(
        default="256",
        metadata={
            "help": "Codes per level, the disambiguation level included: an integer, or 'auto' for the smallest "
            "power of two k with k^levels >= 16 x catalog size (docs/sids.md)."
        },
    )
    kmeans: str = field(
        default="standard",
        metadata={
            "help": "k-means per level: standard (Lloyd) or balanced (clusters capped at ceil(items / codebook_size)).",
            "choices": list(KMEANS_CHOICES),
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of k-means++ and of the interaction SVD."})
    use_shipped_sids: bool = field(
        default=False,
        metadata={"help": "Use the SID map shipped with the data (LETTER, MiniOneRec) when there is one."},
    )
    encoder: str | None = field(
        default=None,
        metadata={"help": "Text encoder, a local folder or hub id; default: the packaged all-MiniLM-L6-v2."},
    )
    overwrite: bool = field(
        default=False,
        metadata={"help": "Write into an output_dir that already holds a SID map or a model (replacing its map)."},
    )

    def __post_init__(self) -> None:
        check_choices(self)
        if not 1 <= self.levels < len(LEVEL_LETTERS):
            raise ValueError(f"--levels must be from 1 to {len(LEVEL_LETTERS) - 1}, got {self.levels}")
        if self.codebook_size != "auto":
            resolve_codebook_size(self.codebook_size, num_items=1, levels=self.levels)
        found = [name for name in CHECKPOINT_FILES if os.path.isfile(os.path.join(self.output_dir, name))]
        if found and not self.overwrite:
            raise FileExistsError(
                f"--output_dir {self.output_dir} already holds {', '.join(found)}: a new SID map would replace its "
                f"{MAP_FILE} (and a checkpoint there would no longer load); choose an empty folder, or pass "
                "--overwrite"
            )


def run(args: BuildSidsArguments) -> None:
    """Build the SID map of `args.dataset` into `args.output_dir` (sid_map.json, sid_stats.json); print the stats."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = load_dataset_spec(args.dataset)
    sid_map = build_sid_map(
        data,
        levels=args.levels,
        codebook_size=args.codebook_size,
        kmeans=args.kmeans,
        seed=args.seed,
        use_shipped=args.use_shipped_sids,
        encoder=args.encoder,
    )
    sid_map.save(args.output_dir)
    print(json.dumps(sid_map.stats, indent=2))
