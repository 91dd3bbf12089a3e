"""One stage's training rows as a dataset for TRL's own scripts (recipes/prepare_data.py).

The rows are built by the functions the stages themselves train on, and written where
`datasets.load_dataset(DIR)`, hence `--dataset_name DIR` in TRL's sft.py and grpo.py, finds them
(TRL's scripts cannot open a `save_to_disk` folder; parquet files named by their split they can):

    DIR/data/train.parquet         every stage
    DIR/data/validation.parquet    Stage 1 only: what it evaluates on while training
    DIR/sid_map.json               the SID map of the rows (and DIR/sid_stats.json), for the trainer
    DIR/model/                     Stage 1 from a base model: that model with the SID vocabulary

Stages 2 and 3 evaluate only after training (recipes/evaluate.py), so they get no validation file.
TRL's sft.py hands its trainer a model name and nothing else, so Stage 1 needs a model that already
knows the SIDs and carries its map (where `SidSFTTrainer` finds it): DIR/model is that model, built as
recipes/sft_stage1.py builds it.

Columns (docs/data.md, "Datasets for TRL's own scripts"):

    Stage 1: prompt, completion
    Stage 2: prompt, completion, anchors
    Stage 3: prompt, target, and anchors unless --terminal_anchors false
"""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from datasets import Dataset

from ..atomic import atomic_path
from ..configs import CotArguments, RecScriptArguments, check_choices, check_positive
from ..data import load_dataset_spec, training_windows
from ..data.schema import RecData
from ..modeling.checkpoint import SID_MAP_FILE, load_recommender, require_recommender_folder, save_recommender
from ..modeling.lasar import has_lasar
from ..modeling.loading import resolve_model_path
from ..sid.sid_map import MAP_FILE, STATS_FILE, SidMap
from ..tasks import check_items_known, prompt_template_of, recommendation_dataset, stage1_dataset
from ..trainers.lasar_common import ANCHORS_COLUMN
from .stage1 import prepare_sid_map, shuffled_subset, stage1_model, validation_rows
from .stage2 import LATENT_SFT_COLUMNS, RL_COLUMNS, latent_rows

DATA_DIR = "data"
MODEL_DIR = "model"
OUTPUT_ENTRIES = {DATA_DIR, MODEL_DIR, MAP_FILE, STATS_FILE}  # all that a run writes: what --overwrite may replace


@dataclass
class PrepareDataArguments:
    """Options of recipes/prepare_data.py: which stage's rows, from which data and checkpoint; the
    subset, seed, history length and dtype must be the training run's for its rows to be these."""

    stage: int = field(metadata={"help": "The stage whose training rows to write.", "choices": [1, 2, 3]})
    output_dir: str = field(metadata={"help": "Folder written: data/*.parquet and sid_map.json."})
    dataset: str = field(
        default="ml-100k",
        metadata={"help": "`ml-100k` (embedded) or KIND:PATH with KIND in recbole, minionerec, letter, p5, amazon."},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Stages 2 and 3: the Stage-1 checkpoint (recipes/sft_stage1.py's output_dir), whose hidden "
            "states are the anchors and whose config holds the prompt template. Stage 1 (optional): the model it "
            "starts from; a recommender checkpoint gives the rows its SID map, and any other model (a hub id, a "
            "folder, embedded:SmolLM2-135M-Instruct, scratch:<preset>) is written to output_dir/model with the "
            "SID vocabulary, for TRL's sft.py --model_name_or_path."
        },
    )
    sid_map: str | None = field(
        default=None,
        metadata={
            "help": "sid_map.json from build_sids.py (it must agree with the checkpoint's); when neither is "
            "there, SIDs are built with the defaults."
        },
    )
    use_shipped_sids: bool = field(
        default=False, metadata={"help": "Build from the SID map that ships with the data (LETTER, MiniOneRec)."}
    )
    max_history: int = field(
        default=10, metadata={"help": "Items of history per sample: the training run's max_history."}
    )
    prompt_template: str | None = field(
        default=None,
        metadata={
            "help": "Stage 1 only (default english; stages 2 and 3 use the checkpoint's): `english` or `compact`.",
            "choices": ["english", "compact"],
        },
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={
            "help": "A seeded subset of this many rows (Stage 1: of its task mix; stages 2 and 3: of the training "
            "windows), as the training run's max_train_samples picks it."
        },
    )
    terminal_anchors: bool = field(
        default=True,
        metadata={
            "help": "Stage 3 only: write the anchors column that the terminal alignment reads; false for "
            "terminal_align_weight 0 (no CoT is written and no anchor extracted)."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed of the subsets and task mix: the training run's seed."})
    dtype: str = field(
        default="float32",
        metadata={
            "help": "dtype the model is loaded in: Stage 1's base model to write, or the Stage-1 checkpoint "
            "whose hidden states are the anchors; the training run's dtype.",
            "choices": ["auto", "bfloat16", "float16", "float32"],
        },
    )
    device: str = field(
        default="cuda" if torch.cuda.is_available() else "cpu", metadata={"help": "Where the anchors are computed."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an earlier output of this recipe."})

    def __post_init__(self) -> None:
        """Refuse, before anything loads, what would fail or be ignored later."""
        check_choices(self)
        check_positive(self, "max_history", "max_train_samples")
        if self.sid_map and not os.path.exists(self.sid_map):
            raise FileNotFoundError(f"--sid_map {self.sid_map} does not exist: build one with recipes/build_sids.py")
        if not self.terminal_anchors and self.stage != 3:
            raise ValueError(f"--terminal_anchors is Stage 3's, not --stage {self.stage}'s")
        if self.stage != 1:
            self._check_stage1_checkpoint()
        self._check_output_dir()

    @property
    def makes_anchors(self) -> bool:
        return self.stage == 2 or (self.stage == 3 and self.terminal_anchors)

    @property
    def stage1_template(self) -> str:
        return self.prompt_template or "english"

    @property
    def writes_model(self) -> bool:
        """Stage 1 from a model without SIDs: TRL's sft.py needs one with them (output_dir/model)."""
        if self.stage != 1 or not self.model_name_or_path:
            return False
        return not os.path.isfile(os.path.join(self.model_name_or_path, SID_MAP_FILE))

    def _check_stage1_checkpoint(self) -> None:
        if not self.model_name_or_path:
            raise ValueError(
                f"--stage {self.stage} needs --model_name_or_path: the Stage-1 checkpoint (recipes/sft_stage1.py's "
                "output_dir), whose hidden states are the anchors and whose config holds the prompt template"
            )
        require_recommender_folder(self.model_name_or_path, "--model_name_or_path")
        if self.makes_anchors and has_lasar(self.model_name_or_path):
            raise ValueError(
                f"--model_name_or_path {self.model_name_or_path} is a Stage-2 or 3 checkpoint: anchors are the "
                "Stage-1 model's hidden states, so pass the Stage-1 checkpoint that Stage 2 started from"
            )
        if self.prompt_template is not None:
            raise ValueError(
                f"--prompt_template is Stage 1's: --stage {self.stage} prompts as its checkpoint was trained to"
            )

    def _check_output_dir(self) -> None:
        """An existing output is replaced only when asked, and only if it is this recipe's: never a
        checkpoint or another folder that happens to be named."""
        if not os.path.exists(self.output_dir):
            return
        if not self.overwrite:
            raise FileExistsError(f"--output_dir {self.output_dir} already exists: pass --overwrite to replace it")
        if not os.path.isdir(self.output_dir):
            raise FileExistsError(f"--output_dir {self.output_dir} is a file: name a folder")
        foreign = sorted(set(os.listdir(self.output_dir)) - OUTPUT_ENTRIES)
        if foreign:
            raise FileExistsError(
                f"--output_dir {self.output_dir} holds {foreign[:3]}, which this recipe does not write and "
                "--overwrite would delete: choose another folder"
            )


def run(args: PrepareDataArguments, cot_args: CotArguments | None = None) -> dict[str, Dataset]:
    """Write `args.stage`'s rows (and its SID map) to `args.output_dir`, atomically: a run that
    fails leaves no output, and an earlier one as it was. `cot_args`: where Stage 2's and
    Stage 3's CoTs come from (default: the offline metadata writer). Returns the splits written."""
    cot_args = cot_args or CotArguments()
    if not args.makes_anchors and cot_args != CotArguments():
        raise ValueError(
            "the CoT options (--cot_source, --segment_merge_threshold, ...) make the anchors: they apply to "
            "--stage 2, and to --stage 3 with --terminal_anchors true"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = load_dataset_spec(args.dataset, max_history=args.max_history)
    with atomic_path(args.output_dir) as staging:
        if args.stage == 1:
            sid_map, splits = stage1_splits(args, data, str(staging))
            if args.writes_model:
                save_stage1_model(args, data, sid_map, str(staging / MODEL_DIR))
        else:
            sid_map, splits = latent_splits(args, cot_args, data)
        (staging / DATA_DIR).mkdir(parents=True)
        for split, rows in splits.items():
            rows.to_parquet(str(staging / DATA_DIR / f"{split}.parquet"))
        sid_map.save(staging)
    for split, rows in splits.items():
        print(f"wrote {len(rows)} {split} rows ({', '.join(rows.column_names)}) to {args.output_dir}/{DATA_DIR}")
    if args.writes_model:
        print(f"wrote {args.model_name_or_path} with the SID vocabulary to {args.output_dir}/{MODEL_DIR}")
    return splits


def stage1_splits(args: PrepareDataArguments, data: RecData, output_dir: str) -> tuple[SidMap, dict[str, Dataset]]:
    """Stage 1's task mix (train) and the validation rows it evaluates on, as recipes/sft_stage1.py
    builds them (its `windows` layout); the SID map is chosen, or built into `output_dir`, as there."""
    script_args = RecScriptArguments(dataset=args.dataset, sid_map=args.sid_map, use_shipped_sids=args.use_shipped_sids)
    sid_map = prepare_sid_map(script_args, data, args.model_name_or_path, output_dir)
    check_items_known(data, sid_map)
    train = stage1_dataset(data, sid_map, seed=args.seed, template=args.stage1_template)
    return sid_map, {
        "train": shuffled_subset(train, args.max_train_samples, args.seed),
        "validation": validation_rows(data, sid_map, args.stage1_template),
    }


def save_stage1_model(args: PrepareDataArguments, data: RecData, sid_map: SidMap, folder: str) -> None:
    """`args.model_name_or_path` as recipes/sft_stage1.py prepares it (`stage1_model`), saved as a
    recommender folder (its SID map inside)."""
    model, tokenizer = stage1_model(
        resolve_model_path(args.model_name_or_path),
        data,
        sid_map,
        template=args.stage1_template,
        max_history=args.max_history,
        seed=args.seed,
        dtype=args.dtype,
    )
    save_recommender(model, tokenizer, sid_map, folder)


def latent_splits(
    args: PrepareDataArguments, cot_args: CotArguments, data: RecData
) -> tuple[SidMap, dict[str, Dataset]]:
    """Stage 2's rows with their anchors, or Stage 3's prompts and targets (with the terminal
    anchors when asked), from the Stage-1 checkpoint, as recipes/sft_latent.py builds them.
    Without `cot_cache_dir`, teacher answers and anchors are cached in a folder removed afterwards."""
    expected_map = SidMap.load(args.sid_map) if args.sid_map else None
    model, tokenizer, sid_map = load_recommender(
        args.model_name_or_path, expected_map, dtype=args.dtype, device=args.device
    )
    check_items_known(data, sid_map)
    windows = training_windows(data, args.max_train_samples, args.seed)
    if args.makes_anchors:
        cache = nullcontext(cot_args.cot_cache_dir) if cot_args.cot_cache_dir else tempfile.TemporaryDirectory()
        with cache as cache_dir:
            rows = latent_rows(model, tokenizer, sid_map, data, windows, cot_args, cache_dir)
        columns = LATENT_SFT_COLUMNS if args.stage == 2 else RL_COLUMNS
    else:  # Stage 3 without the terminal alignment: no CoT, no anchors
        rows = recommendation_dataset(windows, sid_map, prompt_template_of(model))
        columns = [column for column in RL_COLUMNS if column != ANCHORS_COLUMN]
    return sid_map, {"train": rows.select_columns(columns)}
