"""Atomic file writes: a crash never leaves a half-written output behind."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def write_json_atomic(path: str | os.PathLike, obj: object) -> None:
    """Write JSON to a temp file in the target folder, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump(obj, handle, indent=1, ensure_ascii=False)
            handle.write("\n")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def save_dataset_atomic(dataset, path: str | os.PathLike) -> None:
    """`datasets.Dataset.save_to_disk` into a temp folder beside `path`, then renamed into place."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    dataset.save_to_disk(str(temp))
    if path.exists():
        shutil.rmtree(path)
    os.replace(temp, path)
