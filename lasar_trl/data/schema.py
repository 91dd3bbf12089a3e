"""The one in-memory form every loader produces."""

from __future__ import annotations

from dataclasses import dataclass, field

import datasets

SPLITS = ("train", "validation", "test")


class DataFormatError(ValueError):
    """Bad input: the message names the file, line and field at fault."""


@dataclass(frozen=True)
class Window:
    """One training or evaluation sample: up to `max_history` items -> the next item."""

    user_id: str
    history: tuple[str, ...]  # item ids, oldest first; never empty
    target: str


@dataclass
class RecData:
    """An item catalog plus time-ordered interactions, already split.

    `catalog` maps every item id to its text fields (title, brand, categories,
    description, ...); items of datasets without text map to `{}`.
    `sequences` holds each user's full time-ordered item list where the format
    has one (MiniOneRec's CSVs are pre-windowed and have none).
    `shipped_sids` is a precomputed SID map that comes with the data (LETTER,
    MiniOneRec), as item id -> list of SID tokens.
    """

    name: str
    catalog: dict[str, dict[str, str]]
    splits: dict[str, list[Window]]
    sequences: dict[str, list[str]] | None = None
    shipped_sids: dict[str, list[str]] | None = None
    stats: dict[str, int] = field(default_factory=dict)  # counted drops, sizes

    @property
    def has_text(self) -> bool:
        return any(fields.get("title") for fields in self.catalog.values())

    def seen_items(self, split: str, window: Window) -> tuple[str, ...]:
        """Every item the user interacted with before this evaluation target: what
        `exclude_history` bans, as RecBole's full-ranking evaluation does.

        The whole earlier sequence where the format has one (not only the last
        `max_history` items in the prompt); the window's own history for pre-windowed data.
        """
        if self.sequences is None:
            return window.history
        held_out = {"test": 1, "validation": 2}.get(split)
        if held_out is None:
            raise ValueError(f"seen_items is defined for the validation and test splits, not {split!r}")
        return tuple(self.sequences[window.user_id][:-held_out])

    def as_dataset(self, split: str) -> datasets.Dataset:
        """Windows of one split as a `datasets.Dataset` (columns user_id, history, target)."""
        windows = self.splits[split]
        return datasets.Dataset.from_dict(
            {
                "user_id": [w.user_id for w in windows],
                "history": [list(w.history) for w in windows],
                "target": [w.target for w in windows],
            },
            features=datasets.Features(
                {
                    "user_id": datasets.Value("string"),
                    "history": datasets.Sequence(datasets.Value("string")),
                    "target": datasets.Value("string"),
                }
            ),
        )
