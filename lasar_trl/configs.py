"""Script options shared by the recipes (TRL's own configs carry the training options)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .data.schema import SPLITS
from .modeling.loading import EMBEDDED_MODEL


@dataclass
class RecScriptArguments:
    """Data, SID and evaluation options of a recommender recipe.

    Parsed with `trl.TrlParser` next to the trainer config and `trl.ModelConfig`,
    so every field is a command-line flag and a YAML key.
    """

    dataset: str = field(
        default="ml-100k",
        metadata={"help": "`ml-100k` (embedded) or KIND:PATH with KIND in recbole, minionerec, letter, p5, amazon."},
    )
    sid_map: str | None = field(
        default=None,
        metadata={"help": "sid_map.json from build_sids.py; when absent, SIDs are built with the defaults."},
    )
    use_shipped_sids: bool = field(
        default=False, metadata={"help": "Use the SID map that ships with the data (LETTER, MiniOneRec)."}
    )
    max_history: int = field(default=10, metadata={"help": "Items of history per sample (sliding windows)."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on a deterministic subset of this many samples (quick runs)."}
    )
    eval_split: str = field(default="test", metadata={"help": f"Split evaluated after training, one of {SPLITS}."})
    eval_max_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on the first N samples of the split (all when unset)."}
    )
    eval_num_beams: int = field(default=20, metadata={"help": "Beams of the constrained beam search."})
    eval_batch_size: int = field(default=8, metadata={"help": "Requests per decoding batch."})
    exclude_history: bool = field(
        default=True, metadata={"help": "Ban each user's history items from their recommendations (RecBole-style)."}
    )

    def __post_init__(self) -> None:
        if self.eval_split not in SPLITS:
            raise ValueError(f"eval_split must be one of {SPLITS}, got {self.eval_split!r}")
        if self.max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {self.max_history}")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(f"max_train_samples must be >= 1, got {self.max_train_samples}")


def default_model(name_or_path: str | None) -> str:
    """The model to start from: the given one, else the offline embedded SmolLM2-135M."""
    return name_or_path or EMBEDDED_MODEL
