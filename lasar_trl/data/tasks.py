"""Prompt/completion datasets for the training tasks (DESIGN.md sections 2, 4, 11).

Every SID-producing prompt ends with `<bot>`, so one layout, `P <bot> SID <eos>`,
serves all stages: Stage 1 trains it with N = 0 latent steps.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import datasets

from ..sid.sid_map import SidMap
from ..sid.tokenizer import BOT_TOKEN
from .schema import DataFormatError, RecData, Window

logger = logging.getLogger(__name__)

PROMPT_TEMPLATE = "A user interacted with these items, oldest first: {history}\nPredict the next item."
TITLE_TO_SID_TEMPLATE = "Which item has the title: {title}\nName the item."
SID_TO_TITLE_TEMPLATE = "What is the title of item {sid}?\nTitle:"
HISTORY_SEPARATOR = ", "


def history_prompt(history: Sequence[str], sid_map: SidMap, template: str = PROMPT_TEMPLATE) -> str:
    """The recommendation prompt for a history of item ids, ending with `<bot>`."""
    if not history:
        raise DataFormatError("empty history: a recommendation prompt needs at least one item")
    return template.format(history=HISTORY_SEPARATOR.join(sid_map.sid(item) for item in history)) + BOT_TOKEN


def title_history_prompt(history: Sequence[str], catalog: dict[str, dict[str, str]]) -> str:
    titles = HISTORY_SEPARATOR.join(catalog[item].get("title", "") for item in history)
    return PROMPT_TEMPLATE.format(history=titles) + BOT_TOKEN


def check_items_known(data: RecData, sid_map: SidMap) -> None:
    """Every item of every split must have a SID: fail early, naming one offender."""
    known = set(sid_map.item_ids)
    for split, windows in data.splits.items():
        for index, window in enumerate(windows):
            for item in (*window.history, window.target):
                if item not in known:
                    raise DataFormatError(
                        f"{data.name} {split} sample {index} (user {window.user_id}): item {item!r} "
                        f"has no SID in the SID map ({len(known)} items); rebuild the map for this dataset"
                    )


def recommendation_dataset(windows: Sequence[Window], sid_map: SidMap) -> datasets.Dataset:
    """Main task: history SIDs -> `<bot>` next SID, with the target kept as a column."""
    return datasets.Dataset.from_dict(
        {
            "prompt": [history_prompt(w.history, sid_map) for w in windows],
            "completion": [sid_map.sid(w.target) for w in windows],
            "target": [w.target for w in windows],
            "history": [list(w.history) for w in windows],
        }
    )


def stage1_dataset(
    data: RecData, sid_map: SidMap, *, title_history_fraction: float = 0.25, seed: int = 0
) -> datasets.Dataset:
    """Stage-1 task mix: next SID from SIDs (every window), title <-> SID (one each per item),
    next SID from titles (a seeded subsample of windows). Text tasks need item titles."""
    windows = data.splits["train"]
    rows = [(history_prompt(w.history, sid_map), sid_map.sid(w.target)) for w in windows]
    if data.has_text:
        titled = [item for item in sid_map.item_ids if data.catalog.get(item, {}).get("title")]
        rows += [
            (TITLE_TO_SID_TEMPLATE.format(title=data.catalog[i]["title"]) + BOT_TOKEN, sid_map.sid(i)) for i in titled
        ]
        rows += [(SID_TO_TITLE_TEMPLATE.format(sid=sid_map.sid(i)), " " + data.catalog[i]["title"]) for i in titled]
        rng = random.Random(seed)
        sampled = [w for w in windows if rng.random() < title_history_fraction]
        rows += [(title_history_prompt(w.history, data.catalog), sid_map.sid(w.target)) for w in sampled]
    else:
        logger.info("%s has no item text: Stage 1 uses the history -> next SID task only.", data.name)
    prompts, completions = zip(*rows)
    return datasets.Dataset.from_dict({"prompt": list(prompts), "completion": list(completions)})
