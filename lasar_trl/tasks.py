"""Prompts and the prompt/completion datasets of the training tasks: built from data and SIDs, so
this module sits above `lasar_trl.data` and `lasar_trl.sid` (data knows no SIDs).

Every SID-producing prompt ends with `<bot>`, so one layout, `P <bot> SID <eos>`,
serves all stages: Stage 1 trains it with N = 0 latent steps.

Two prompt templates exist. `english` wraps the history in a sentence, for backbones that
read English. `compact` is the history's SIDs alone, each followed by `<bot>`
(`s1 <bot> s2 <bot> ... sk <bot>`): the shortest prompt, for a backbone trained from
scratch, and the one whose prompts are prefixes of each other, so Stage 1 can train a
user's whole sequence in one causal pass (`stage1_sequence_dataset`). A trained model
records its template in its config (`prompt_template`), and every later stage and the
evaluation read it from there.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import datasets
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .data.schema import DataFormatError, RecData, Window
from .sid.sid_map import SidMap
from .sid.tokenizer import BOT_TOKEN

logger = logging.getLogger(__name__)

PROMPT_TEMPLATE = "A user interacted with these items, oldest first: {history}\nPredict the next item."
TITLE_TO_SID_TEMPLATE = "Which item has the title: {title}\nName the item."
SID_TO_TITLE_TEMPLATE = "What is the title of item {sid}?\nTitle:"
HISTORY_SEPARATOR = ", "
# template name -> (format string of the history, separator between history items)
PROMPT_TEMPLATES = {"english": (PROMPT_TEMPLATE, HISTORY_SEPARATOR), "compact": ("{history}", BOT_TOKEN)}
PROMPT_TEMPLATE_KEY = "prompt_template"  # where a model's config records its template


def history_prompt(history: Sequence[str], sid_map: SidMap, template: str = "english") -> str:
    """The recommendation prompt for a history of item ids, ending with `<bot>`."""
    if not history:
        raise DataFormatError("empty history: a recommendation prompt needs at least one item")
    if template not in PROMPT_TEMPLATES:
        raise ValueError(f"prompt template must be one of {sorted(PROMPT_TEMPLATES)}, got {template!r}")
    text, separator = PROMPT_TEMPLATES[template]
    return text.format(history=separator.join(sid_map.sid(item) for item in history)) + BOT_TOKEN


def prompt_template_of(model: PreTrainedModel) -> str:
    """The template a model was trained with (checkpoints from before templates: `english`)."""
    return getattr(model.config, PROMPT_TEMPLATE_KEY, None) or "english"


def title_history_prompt(history: Sequence[str], catalog: dict[str, dict[str, str]]) -> str:
    titles = HISTORY_SEPARATOR.join(catalog[item].get("title", "") for item in history)
    return PROMPT_TEMPLATE.format(history=titles) + BOT_TOKEN


def check_items_known(data: RecData, sid_map: SidMap) -> None:
    """The map was built from this dataset (`SidMap.check_built_from`), and every item of every split
    has a SID: fail early, naming one offender."""
    sid_map.check_built_from(data.name, data.catalog)
    known = set(sid_map.item_ids)
    for split, windows in data.splits.items():
        for index, window in enumerate(windows):
            for item in (*window.history, window.target):
                if item not in known:
                    raise DataFormatError(
                        f"{data.name} {split} sample {index} (user {window.user_id}): item {item!r} "
                        f"has no SID in the SID map ({len(known)} items); rebuild the map for this dataset"
                    )


def recommendation_dataset(windows: Sequence[Window], sid_map: SidMap, template: str = "english") -> datasets.Dataset:
    """Main task: history SIDs -> `<bot>` next SID, with the target kept as a column."""
    return datasets.Dataset.from_dict(
        {
            "prompt": [history_prompt(w.history, sid_map, template) for w in windows],
            "completion": [sid_map.sid(w.target) for w in windows],
            "target": [w.target for w in windows],
            "history": [list(w.history) for w in windows],
        }
    )


def title_tasks(data: RecData, sid_map: SidMap) -> list[tuple[str, str]]:
    """(prompt, completion) pairs tying SIDs to text: title -> SID and SID -> title, one each per titled item."""
    titled = [item for item in sid_map.item_ids if data.catalog.get(item, {}).get("title")]
    rows = [(TITLE_TO_SID_TEMPLATE.format(title=data.catalog[i]["title"]) + BOT_TOKEN, sid_map.sid(i)) for i in titled]
    rows += [(SID_TO_TITLE_TEMPLATE.format(sid=sid_map.sid(i)), " " + data.catalog[i]["title"]) for i in titled]
    return rows


def stage1_dataset(
    data: RecData, sid_map: SidMap, *, title_history_fraction: float = 0.25, seed: int = 0, template: str = "english"
) -> datasets.Dataset:
    """Stage-1 task mix: next SID from SIDs (every window), title <-> SID (one each per item),
    next SID from titles (a seeded subsample of windows). Text tasks need item titles."""
    windows = data.splits["train"]
    rows = [(history_prompt(w.history, sid_map, template), sid_map.sid(w.target)) for w in windows]
    if data.has_text:
        rows += title_tasks(data, sid_map)
        rng = random.Random(seed)
        sampled = [w for w in windows if rng.random() < title_history_fraction]
        rows += [(title_history_prompt(w.history, data.catalog), sid_map.sid(w.target)) for w in sampled]
    else:
        logger.info("%s has no item text: Stage 1 uses the history -> next SID task only.", data.name)
    prompts, completions = zip(*rows)
    return datasets.Dataset.from_dict({"prompt": list(prompts), "completion": list(completions)})


def chain_windows(windows: Sequence[Window], max_history: int) -> list[tuple[list[str], int]]:
    """The item sequences the windows were cut from, as (items, index of the first target).

    A window continues the previous chain when it is the same user's and its history is the
    chain's last `max_history` items: exactly what leave-one-out's sliding windows are. Any
    other window (pre-windowed data) starts a chain of its own."""
    chains: list[tuple[list[str], int]] = []
    previous_user = None
    for window in windows:
        items = chains[-1][0] if chains else []
        if window.user_id == previous_user and tuple(items[-max_history:]) == window.history:
            items.append(window.target)
        else:
            chains.append(([*window.history, window.target], len(window.history)))
        previous_user = window.user_id
    return chains


def sequence_chunks(length: int, first_target: int, max_history: int) -> list[tuple[int, int, int]]:
    """Cut a sequence of `length` items into causal passes of at most `max_history` + 1 items.

    Returns (start, end, first_loss): one pass over items[start:end], with the loss on the
    targets items[first_loss:end]. Every target from `first_target` on is in exactly one
    pass. The first pass gives each target all its earlier items, as a window would; later
    passes overlap the previous one so that every target still sees at least half of
    `max_history` items before it, and at most `max_history`."""
    step = max(1, max_history // 2)
    end = min(length, max_history + 1)
    chunks = [(0, end, first_target)]
    while end < length:
        new_end = min(length, end + step)
        chunks.append((max(0, new_end - max_history - 1), new_end, end))
        end = new_end
    return [chunk for chunk in chunks if chunk[2] < chunk[1]]


def tokenized_pair(tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str) -> dict[str, list[int]]:
    """`input_ids` and `labels` (-100 on the prompt) of prompt + completion + eos, as TRL's SFTTrainer
    tokenizes a prompt/completion row."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    input_ids = tokenizer(prompt + completion)["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": input_ids, "labels": [-100] * len(prompt_ids) + input_ids[len(prompt_ids) :]}


def stage1_sequence_dataset(
    data: RecData, sid_map: SidMap, tokenizer: PreTrainedTokenizerBase, max_history: int
) -> datasets.Dataset:
    """Stage 1 as sequence training: one causal pass per user (or per chunk of a long user, see
    `sequence_chunks`) over `s1 <bot> s2 <bot> ...`, with the loss on the SID tokens of every
    item that a training window predicts, plus the title <-> SID rows. Tokenized rows
    (`input_ids`, `labels`) that `SFTTrainer` trains as they are.

    Each window's compact prompt is a prefix of its user's sequence, so a pass computes the
    same per-item losses as the windows it replaces, in one forward instead of one per
    window: each interaction is read once per epoch, as SASRec reads it."""
    bot_id = tokenizer.convert_tokens_to_ids(BOT_TOKEN)
    item_ids = {item: tokenizer.convert_tokens_to_ids(list(sid_map[item])) for item in sid_map.item_ids}
    rows: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
    for items, first_target in chain_windows(data.splits["train"], max_history):
        for start, end, first_loss in sequence_chunks(len(items), first_target, max_history):
            input_ids, labels = [], []
            for index in range(start, end):
                if index > start:
                    input_ids.append(bot_id)
                    labels.append(-100)
                tokens = item_ids[items[index]]
                input_ids += tokens
                labels += tokens if index >= first_loss else [-100] * len(tokens)
            rows["input_ids"].append(input_ids)
            rows["labels"].append(labels)
    if data.has_text:
        for prompt, completion in title_tasks(data, sid_map):
            pair = tokenized_pair(tokenizer, prompt, completion)
            rows["input_ids"].append(pair["input_ids"])
            rows["labels"].append(pair["labels"])
    return datasets.Dataset.from_dict(rows)
