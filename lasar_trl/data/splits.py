"""Leave-one-out splitting of time-ordered user sequences, and the seeded subset of training
windows a run trains on."""

from __future__ import annotations

import random

from .schema import SPLITS, RecData, Window


def leave_one_out(sequences: dict[str, list[str]], max_history: int) -> dict[str, list[Window]]:
    """Split each user's time-ordered items: last -> test, second last -> validation, rest -> train.

    Users are visited in the dict's order (loaders insert them in order of first appearance), so
    the result is deterministic. Every target sees at most `max_history` preceding items. Training
    samples are sliding windows over the prefix before the validation item, so no training target
    is an item held out for evaluation. A user with one item contributes nothing, with two items
    only a test sample, with three a test and a validation sample.
    """
    if max_history < 1:
        raise ValueError(f"max_history must be at least 1, got {max_history}")
    splits: dict[str, list[Window]] = {split: [] for split in SPLITS}
    for user_id, items in sequences.items():
        n = len(items)
        for i in range(1, n - 2):
            splits["train"].append(_window(user_id, items, i, max_history))
        if n >= 3:
            splits["validation"].append(_window(user_id, items, n - 2, max_history))
        if n >= 2:
            splits["test"].append(_window(user_id, items, n - 1, max_history))
    return splits


def _window(user_id: str, items: list[str], target_index: int, max_history: int) -> Window:
    """The sample predicting items[target_index] from up to `max_history` items before it."""
    history = items[max(0, target_index - max_history) : target_index]
    return Window(user_id=user_id, history=tuple(history), target=items[target_index])


def training_windows(data: RecData, max_samples: int | None, seed: int) -> list[Window]:
    """The training windows, or a seeded random subset of `max_samples` of them (in data order)."""
    windows = data.splits["train"]
    if max_samples is None or max_samples >= len(windows):
        return list(windows)
    return [windows[i] for i in sorted(random.Random(seed).sample(range(len(windows)), max_samples))]
