"""Recommend for a JSON lines file of histories with a trained checkpoint (recipes/recommend.py).

Input: one request per line, `{"history": [item ids, oldest first], ...}`; item ids are strings
or integers (as the dataset's ids, `1` for `"1"`). Blank lines are ignored. Output: one line
per request, the input object with `line` (its 1-based line number in the input, to join on
when lines were skipped), `items`, `titles`, `scores` and `depth` (see `Recommendation`) added.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from itertools import islice
from typing import IO, Any

import torch
from tqdm.auto import tqdm

from ..atomic import DuplicateKeyError, atomic_path, reject_duplicate_keys
from ..configs import check_choices, check_positive
from ..data import DataFormatError, load_dataset_spec
from ..recommender import Recommendation, Recommender

HISTORY_FIELD = "history"
OUTPUT_FIELDS = ("line", *(f.name for f in fields(Recommendation)))
Request = tuple[int, dict[str, Any], list[str]]  # line number, the input object, its history as string ids


@dataclass
class RecommendArguments:
    checkpoint: str = field(metadata={"help": "Checkpoint folder: Stage 1, 2 or 3, a LoRA adapter, or a merged one."})
    input: str = field(metadata={"help": 'JSON lines, one request per line: {"history": [item ids, oldest first]}.'})
    output: str = field(metadata={"help": "JSON lines written: each request with its items, titles, scores, depth."})
    top_k: int = field(default=10, metadata={"help": "Items per request."})
    num_beams: int | None = field(default=None, metadata={"help": "Beams of the search (default: 20, or top_k)."})
    batch_size: int = field(default=8, metadata={"help": "Requests per decoding batch."})
    depth: int | None = field(
        default=None, metadata={"help": "Force this many latent steps instead of the checkpoint's own choice."}
    )
    exclude_seen: bool = field(default=True, metadata={"help": "Never recommend an item of the request's history."})
    max_history: int | None = field(
        default=None,
        metadata={"help": "History items in the prompt (default: the checkpoint's, i.e. its training run's)."},
    )
    dataset: str | None = field(
        default=None,
        metadata={"help": "Dataset spec the checkpoint was trained on, for titles (it must hold every item)."},
    )
    on_unknown: str = field(
        default="stop",
        metadata={
            "help": "A line with an item id the checkpoint does not know: stop with its line number, or skip "
            "it (each reported, then counted).",
            "choices": ["skip", "stop"],
        },
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing output file."})
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu", metadata={"help": "Torch device."})

    def __post_init__(self) -> None:
        """Refuse values that would fail only after the model has loaded."""
        check_choices(self)
        check_positive(self, "top_k", "batch_size", "max_history")
        if self.num_beams is not None and self.num_beams < self.top_k:
            raise ValueError(f"--num_beams ({self.num_beams}) must be >= --top_k ({self.top_k})")


def read_requests(path: str, lines: Iterable[str]) -> Iterator[Request]:
    """(line number, object, history as string ids) per non-blank line; a malformed line
    raises `DataFormatError` naming the file, the line and what is wrong."""
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(text, object_pairs_hook=reject_duplicate_keys)
        except DuplicateKeyError as error:
            raise DataFormatError(f"{where}: {error}") from None
        except json.JSONDecodeError as error:
            raise DataFormatError(f"{where}: not valid JSON ({error})") from None
        if not isinstance(record, dict):
            raise DataFormatError(f"{where}: expected an object with {HISTORY_FIELD!r}, got {type(record).__name__}")
        history = record.get(HISTORY_FIELD)
        if not (
            isinstance(history, list)
            and history
            and all(isinstance(item, (str, int)) and not isinstance(item, bool) for item in history)
        ):
            raise DataFormatError(
                f"{where}: {HISTORY_FIELD!r} must be a non-empty list of item ids (strings or integers), "
                f"got {history!r:.80}"
            )
        clashes = [name for name in OUTPUT_FIELDS if name in record]
        if clashes:
            raise DataFormatError(f"{where}: field {clashes[0]!r} is one the output writes; rename it in the input")
        yield number, record, [str(item) for item in history]


def skip_unknown(
    requests: Iterable[Request], recommender: Recommender, args: RecommendArguments, counts: dict[str, int]
) -> Iterator[Request]:
    """The requests whose items the checkpoint knows. Another stops the run naming its line
    (`--on_unknown stop`), or is reported with its line and counted in `counts["skipped"]`."""
    for number, record, history in requests:
        unknown = recommender.unknown_items(history)
        if not unknown:
            yield number, record, history
            continue
        message = f"{args.input} line {number}: item ids not in the checkpoint's SID map: {unknown[:5]}"
        if args.on_unknown == "stop":
            raise DataFormatError(f"{message}; pass --on_unknown skip to skip such lines")
        tqdm.write(f"{message}; skipped", file=sys.stderr)
        counts["skipped"] += 1


def write_batch(sink: IO[str], recommender: Recommender, batch: Sequence[Request], args: RecommendArguments) -> None:
    recs = recommender.recommend(
        [history for _, _, history in batch],
        top_k=args.top_k,
        depth=args.depth,
        exclude_seen=args.exclude_seen,
        batch_size=args.batch_size,
        num_beams=args.num_beams,
    )
    for (number, record, _), rec in zip(batch, recs):
        sink.write(json.dumps({**record, "line": number, **asdict(rec)}, ensure_ascii=False) + "\n")


def run(args: RecommendArguments) -> dict[str, int]:
    """Stream `args.input` through the checkpoint into `args.output`, written atomically: a run
    that stops leaves no output (and an earlier one as it was). A missing input and an existing
    output (without `overwrite`) are refused before the model loads. Returns the counts of
    requests written and of lines skipped for unknown item ids."""
    if not os.path.isfile(args.input):
        raise FileNotFoundError(f"--input {args.input} does not exist")
    if os.path.exists(args.output) and not args.overwrite:
        raise FileExistsError(f"--output {args.output} already exists: pass --overwrite to replace it")
    catalog = load_dataset_spec(args.dataset).catalog if args.dataset else None
    recommender = Recommender.from_pretrained(
        args.checkpoint, device=args.device, max_history=args.max_history, catalog=catalog
    )
    with open(args.input, encoding="utf-8") as source:
        total = sum(1 for _ in source)
    counts = {"written": 0, "skipped": 0}
    with (
        open(args.input, encoding="utf-8") as source,
        atomic_path(args.output) as temp,
        open(temp, "w", encoding="utf-8") as sink,
    ):
        requests = read_requests(args.input, tqdm(source, total=total, unit="line", desc="recommend"))
        known = skip_unknown(requests, recommender, args, counts)
        while batch := list(islice(known, args.batch_size)):
            write_batch(sink, recommender, batch, args)
            counts["written"] += len(batch)
    print(f"wrote {counts['written']} requests to {args.output}; skipped {counts['skipped']} with unknown item ids")
    return counts
