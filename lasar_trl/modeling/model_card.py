"""The model card (README.md) of a recommender checkpoint.

TRL's card (`create_model_card`: hub metadata, framework versions, citations) is kept, less two
parts written for hub chat models: the opening sentence, which links the starting model on the hub
(`None` for a local folder), and the chat quick start. The recommender's sections take the quick
start's place: the stage that produced the checkpoint, where it started from, the dataset, the SID
map, how prompts were built, the evaluation when the run evaluated, and how to load it
(`lasar_trl.Recommender`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MODEL_CARD_FILE = "README.md"
CARD_TAGS = ("lasar-trl", "recommendation", "semantic-ids")
_QUICK_START = re.compile(r"^## Quick start\n.*?(?=^## )", re.MULTILINE | re.DOTALL)
_FINE_TUNED_FROM = re.compile(r"^This model is a fine-tuned version of .*$", re.MULTILINE)
_METRIC = re.compile(r"(hr|ndcg)@(\d+)")


@dataclass(frozen=True)
class CardFacts:
    """What the card says about a checkpoint, as plain data."""

    model_id: str  # what `Recommender.from_pretrained` is given: the folder, or the hub id
    stage: str  # e.g. "Stage 1 SFT"
    started_from: str | None  # the model training started from: a backbone (`scratch:tiny`, a hub id) or a folder
    dataset: str | None
    prompt_template: str
    max_history: int | None  # None: a checkpoint from before it was recorded
    sid_stats: Mapping[str, Any] = field(default_factory=dict)  # the SID map's `stats` (sid_stats.json)
    metrics: Mapping[str, Any] | None = None  # eval_results.json, when the run evaluated


def render_model_card(trl_card: str, facts: CardFacts) -> str:
    """`trl_card` with its quick start replaced by the recommender's sections (appended when
    it has no quick start) and its "fine-tuned version of" sentence by one naming the start."""
    start = f"`{facts.started_from}`" if facts.started_from else "an unrecorded model"
    trl_card = _FINE_TUNED_FROM.sub(
        f"This model is a Semantic-ID recommender fine-tuned from {start}.", trl_card, count=1
    )
    sections = recommender_sections(facts)
    if _QUICK_START.search(trl_card):
        return _QUICK_START.sub(lambda _: sections + "\n", trl_card, count=1)
    return trl_card.rstrip("\n") + "\n\n" + sections


def recommender_sections(facts: CardFacts) -> str:
    history = (
        f"the last {facts.max_history} items of a history (`max_history`)"
        if facts.max_history is not None
        else "`max_history` not recorded (a checkpoint from an older lasar-trl): pass the training run's"
    )
    lines = [
        "## Recommender",
        "",
        f"- Stage: {facts.stage}",
        f"- Started from: `{facts.started_from or 'unknown'}`",
        f"- Dataset: {facts.dataset or 'unknown'}",
        f"- Prompts: `{facts.prompt_template}` template, {history}",
        "",
        "### Semantic IDs",
        "",
        *sid_lines(facts.sid_stats),
        "",
    ]
    if facts.metrics:
        lines += ["### Evaluation", "", *metric_lines(facts.metrics), ""]
    lines += [
        "### Quick start",
        "",
        "```python",
        "from lasar_trl import Recommender",
        "",
        f'recommender = Recommender.from_pretrained("{facts.model_id}")',
        'for rec in recommender.recommend([["item id", "item id"]], top_k=10):  # histories, oldest first',
        "    print(rec.items, rec.scores, rec.depth)",
        "```",
        "",
    ]
    return "\n".join(lines)


def sid_lines(stats: Mapping[str, Any]) -> list[str]:
    """The SID map's size and shape, from whichever statistics it records."""
    entries = [
        ("Items", stats.get("num_items")),
        ("Built from", stats.get("dataset")),
        ("Tokens per SID", stats.get("sid_length")),
        ("Quantised levels", stats.get("levels")),
        ("Codebook size per level", _listed(stats.get("codebook_size_per_level"))),
        ("Codes used per level", _listed(stats.get("codes_used_per_level"))),
        ("Embeddings", stats.get("embedding_source")),
    ]
    if "shared_sids" in stats:
        shared = f"{stats['shared_sids']}, holding {stats.get('items_in_shared_sids')} items, before disambiguation"
        entries.append(("Shared SIDs", shared))
    return [f"- {name}: {value}" for name, value in entries if value is not None] or ["- (no statistics recorded)"]


def metric_lines(results: Mapping[str, Any]) -> list[str]:
    """eval_results.json as a sentence and a table: this model next to its baselines."""
    columns = {"this model": results, **results.get("baselines", {})}
    names = sorted((m for m in results if _METRIC.fullmatch(m)), key=lambda m: (m.split("@")[0], int(m.split("@")[1])))
    names += [m for m in ("invalid_rate", "coverage_at_10", "mean_depth") if m in results]
    where = " ".join(str(results[key]) for key in ("dataset", "split") if key in results)
    lines = [
        f"{where or 'Evaluated'}: {results.get('num_samples')} requests, {results.get('num_beams')} beams, "
        f"exclude_history={results.get('exclude_history')}.",
        "",
        "| metric | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for name in names:
        cells = [_number(column.get(name)) for column in columns.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _listed(values) -> str | None:
    return None if values is None else ", ".join(map(str, values))


def _number(value) -> str:
    return "" if value is None else f"{value:.4f}"
