"""The project's file I/O rules in one place.

Writes are atomic: a file or folder is written under a temporary name beside its target
and renamed into place only once complete, so a crash never leaves a half-written output
for a later run to trust. JSON is read strictly: `json` keeps the last of two equal keys
without a word, which would hide a corrupt or hand-edited file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def move_into_place(source: str | os.PathLike, target: str | os.PathLike, *, replace: bool = True) -> None:
    """`os.replace` for files and folders alike. `os.replace` cannot put a folder over a
    non-empty one, so an existing target folder is removed first (the target is briefly
    absent, never partial). With `replace=False` an existing target is kept and `source`
    is left where it is, for the caller to drop."""
    target = Path(target)
    if target.exists():
        if not replace:
            return
        if target.is_dir():
            shutil.rmtree(target)
    os.replace(source, target)


@contextmanager
def _private_folder_beside(target: Path) -> Iterator[Path]:
    """An empty uniquely named folder in `target`'s folder (the same file system, so a
    rename is atomic; unique across processes and hosts), removed with what is left in it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def atomic_path(target: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Yield a path, not yet existing, to write a file or a folder to; when the block ends
    without an error it is renamed to `target`, otherwise removed. The path has `target`'s
    name (inside a private folder beside it), so writers that look at the suffix behave.

    `replace=False`: an existing target wins (e.g. a concurrent writer finished first) and
    what was written is dropped."""
    target = Path(target)
    with _private_folder_beside(target) as folder:
        yield folder / target.name
        move_into_place(folder / target.name, target, replace=replace)


@contextmanager
def atomic_entries(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty folder inside `folder`; when the block ends without an error each
    entry written there is moved into `folder` (replacing one of the same name), so each
    appears whole or not at all while the rest of `folder` stays: for writers that fill a
    folder holding other things, such as a run folder with its checkpoints."""
    folder = Path(folder)
    with _private_folder_beside(folder / ".entries") as staging:
        yield staging
        for entry in staging.iterdir():
            move_into_place(entry, folder / entry.name)


def write_json_atomic(path: str | os.PathLike, obj: object) -> None:
    """`obj` as indented UTF-8 JSON at `path`, atomically."""
    with atomic_path(path) as temp, open(temp, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=1, ensure_ascii=False)
        handle.write("\n")


def save_dataset_atomic(dataset, path: str | os.PathLike) -> None:
    """`datasets.Dataset.save_to_disk` at `path`, atomically (an existing dataset there is replaced)."""
    with atomic_path(path) as temp:
        dataset.save_to_disk(str(temp))


class DuplicateKeyError(ValueError):
    """A JSON object names `key` twice."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key {key!r} appears more than once")
        self.key = key


def reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook` for `json`: raise `DuplicateKeyError` where `json` would keep the
    last of two equal keys. For readers that need their own error context (a line number);
    `read_json_object` is the plain case."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise DuplicateKeyError(next(key for key, count in Counter(key for key, _ in pairs).items() if count > 1))
    return result


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in `path`; every error names the file (bad JSON, not an object, a
    key repeated at any depth)."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"), object_pairs_hook=reject_duplicate_keys)
    except DuplicateKeyError as error:
        raise ValueError(f"{path}: {error}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj
