"""Script options shared by the recipes (TRL's own configs carry the training options)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available
from trl import TrlParser

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
    prompt_template: str = field(
        default="english",
        metadata={
            "help": "Stage 1 only (later stages read the checkpoint's): `english` wraps the history's SIDs in a "
            "sentence; `compact` is the SIDs alone, each followed by <bot> (for a backbone trained from scratch).",
            "choices": ["english", "compact"],
        },
    )
    stage1_layout: str = field(
        default="windows",
        metadata={
            "help": "Stage 1 only: `windows` trains one row per sliding window; `sequences` trains one causal pass "
            "per user over the compact prompt layout, with the loss on every next item (needs "
            "prompt_template=compact).",
            "choices": ["windows", "sequences"],
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on a deterministic subset of this many samples (quick runs)."}
    )
    eval_split: str = field(
        default="test", metadata={"help": "Split evaluated after training.", "choices": list(SPLITS)}
    )
    eval_max_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on the first N samples of the split (all when unset)."}
    )
    eval_num_beams: int = field(default=20, metadata={"help": "Beams of the constrained beam search."})
    eval_batch_size: int = field(default=8, metadata={"help": "Requests per decoding batch."})
    exclude_history: bool = field(
        default=True, metadata={"help": "Ban each user's history items from their recommendations (RecBole-style)."}
    )
    evaluate_after_training: bool = field(
        default=True, metadata={"help": "Evaluate the saved model on eval_split once training ends."}
    )

    def __post_init__(self) -> None:
        check_choices(self)
        check_positive(
            self, "max_history", "max_train_samples", "eval_max_samples", "eval_num_beams", "eval_batch_size"
        )
        if self.sid_map and not os.path.exists(self.sid_map):
            raise FileNotFoundError(f"--sid_map {self.sid_map} does not exist: build one with recipes/build_sids.py")
        if self.stage1_layout == "sequences" and self.prompt_template != "compact":
            raise ValueError(
                "stage1_layout=sequences needs prompt_template=compact: only compact prompts are "
                "prefixes of a user's sequence"
            )


COT_SOURCES = ("metadata", "file", "hf", "openai")


@dataclass
class CotArguments:
    """Where Stage 2's chains of thought come from, and how they are segmented."""

    cot_source: str = field(
        default="metadata",
        metadata={
            "help": "`metadata`: the offline rationale writer (a weak teacher: it restates catalog statistics); "
            "`file`: a JSON-lines file of {prompt, cot}; `hf`: a Hugging Face causal LM (teacher_model); "
            "`openai`: an OpenAI-compatible endpoint (teacher_base_url, teacher_model, key from the environment).",
            "choices": list(COT_SOURCES),
        },
    )
    cot_file: str | None = field(
        default=None, metadata={"help": "JSON lines with `prompt` and `cot` (cot_source=file)."}
    )
    teacher_model: str | None = field(
        default=None, metadata={"help": "HF model path or hub id (hf), or the served model's name (openai)."}
    )
    teacher_base_url: str | None = field(default=None, metadata={"help": "e.g. http://127.0.0.1:8000/v1 (openai)."})
    teacher_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "Environment variable holding the endpoint's API key."}
    )
    teacher_max_new_tokens: int = field(default=128, metadata={"help": "Longest rationale a teacher may write."})
    teacher_concurrency: int = field(default=4, metadata={"help": "Requests in flight to the endpoint."})
    segment_merge_threshold: float | None = field(
        default=None,
        metadata={
            "help": "Merge neighbouring CoT sentences whose all-MiniLM-L6-v2 embeddings are at least this similar "
            "(the paper's semantic segmentation); unset: one segment per sentence."
        },
    )
    cot_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where teacher answers and anchors are cached (default: OUTPUT_DIR/cot); reused by reruns."},
    )

    def __post_init__(self) -> None:
        check_choices(self)
        if self.cot_source == "file" and not self.cot_file:
            raise ValueError("cot_source=file needs --cot_file")
        if self.cot_source == "file" and not os.path.isfile(self.cot_file):
            raise FileNotFoundError(f"--cot_file {self.cot_file} does not exist (JSON lines of prompt and cot)")
        if self.cot_source in ("hf", "openai") and not self.teacher_model:
            raise ValueError(f"cot_source={self.cot_source} needs --teacher_model")
        if self.cot_source == "openai" and not self.teacher_base_url:
            raise ValueError("cot_source=openai needs --teacher_base_url")
        if self.segment_merge_threshold is not None and not 0 < self.segment_merge_threshold <= 1:
            raise ValueError(f"segment_merge_threshold must be in (0, 1], got {self.segment_merge_threshold}")


def check_choices(config) -> None:
    """Every field with `choices` holds one of them (or None: unset). TrlParser checks choices on the
    command line only: a yaml's values become the parser's defaults, which argparse does not check."""
    for config_field in fields(config):
        value, choices = getattr(config, config_field.name), config_field.metadata.get("choices")
        if choices is not None and value is not None and value not in choices:
            raise ValueError(f"{config_field.name} must be one of {choices}, got {value!r}")


def check_positive(config, *names: str) -> None:
    """Each named count is unset (None) or >= 1: a 0 or a negative fails later with an unrelated error
    (a reshape for 0 beams, an "empty split" for 0 samples)."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")


def check_learning_rates(options: Mapping[str, object]) -> None:
    """Learning rates (`learning_rate`, `*_learning_rate`) are >= 0 and at least one set is > 0: Adam
    refuses a negative one only when training starts, after the model has loaded, and with every rate
    at 0 nothing trains. A rate of 0 beside another above it is allowed (e.g. `learning_rate 0` with a
    `policy_head_learning_rate` trains the Policy Head alone). `options`: a parsed command line (`vars`
    of the namespace) or a config (`vars(config)`)."""
    rates = {
        name: float(value)
        for name, value in options.items()
        if (name == "learning_rate" or name.endswith("_learning_rate")) and value is not None
    }
    for name, value in rates.items():
        if value < 0:
            raise ValueError(f"--{name} must be >= 0, got {value}")
    if rates and max(rates.values()) == 0:
        flags = ", ".join(f"--{name}" for name in rates)
        raise ValueError(f"{flags}: every learning rate is 0, so nothing would train; set one above 0")


def default_model(name_or_path: str | None) -> str:
    """The model to start from: the given one, else the offline embedded SmolLM2-135M."""
    return name_or_path or EMBEDDED_MODEL


def bf16_supported(use_cpu: bool) -> bool:
    """transformers' own test in `TrainingArguments.__post_init__` (which raises where it fails)."""
    return bool(use_cpu) or is_torch_bf16_gpu_available() or is_torch_xla_available()


class RecipeParser(TrlParser):
    """`TrlParser` for the training recipes. Between the command line (and yaml) and the configs:
    TRL turns `bf16` on by default, and on a machine without bf16 (CPU only) transformers then refuses
    the config, so bf16 is turned off there with a warning; learning rates that `check_learning_rates`
    refuses are refused before any model loads."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, remaining = super().parse_known_args(args, namespace)
        options = vars(namespace)
        check_learning_rates(options)
        if "bf16" in options and not bf16_supported(options.get("use_cpu")):
            wanted = [name for name in ("bf16", "bf16_full_eval") if options.get(name)]
            if options["bf16"] is None and not options.get("fp16"):  # TRL's default: on unless fp16
                wanted.insert(0, "bf16")
            if wanted:
                warnings.warn(
                    f"this machine has no bf16 support (no bf16 GPU): {' and '.join(wanted)} turned off, training in "
                    "float32 (pass --use_cpu true to train in bf16 on the CPU)",
                    stacklevel=2,
                )
                for name in wanted:
                    setattr(namespace, name, False)
        return namespace, remaining
