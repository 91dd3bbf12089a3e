"""The Stage-2 dataset: recommendation rows with their CoT, segments and anchors."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import datasets
from accelerate import PartialState
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data.schema import RecData, Window
from ..sid.embed import embed_texts
from ..sid.sid_map import SidMap
from ..tasks import HISTORY_SEPARATOR, prompt_template_of, recommendation_dataset
from .anchors import anchors_for_samples
from .segment import merge_similar, split_sentences
from .writer import MetadataRationaleWriter

logger = logging.getLogger(__name__)


def history_text(history: Sequence[str], data: RecData, sid_map: SidMap) -> str:
    """How a teacher sees a history: titles when the catalog has them, else SIDs."""
    names = [data.catalog.get(item, {}).get("title") or sid_map.sid(item) for item in history]
    return HISTORY_SEPARATOR.join(names)


def metadata_rationales(data: RecData, sid_map: SidMap, windows: Sequence[Window]) -> list[str]:
    """The offline default: a weak teacher that restates catalog statistics (see writer.py)."""
    writer = MetadataRationaleWriter(data.catalog, sid_map, data.splits["train"])
    return [writer.write(window.history) for window in windows]


def segment_all(
    cots: Sequence[str], embed: Callable[[list[str]], Tensor] | None = None, threshold: float = 0.8
) -> list[list[str]]:
    """Sentences of every CoT, merged by similarity when `embed` is given. All distinct
    sentences are embedded in one call (loading a sentence encoder per CoT would dominate)."""
    sentences = [split_sentences(cot) for cot in cots]
    if embed is None:
        return sentences
    distinct = list(dict.fromkeys(s for row in sentences for s in row))
    index = {sentence: i for i, sentence in enumerate(distinct)}
    vectors = embed(distinct)

    def lookup(texts: list[str]) -> Tensor:
        return vectors[[index[text] for text in texts]]

    return [merge_similar(row, lookup, threshold) for row in sentences]


def latent_sft_dataset(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sid_map: SidMap,
    windows: Sequence[Window],
    cots: Sequence[str],
    anchor_store: str,
    *,
    merge_threshold: float | None = None,
    embed: Callable[[list[str]], Tensor] = embed_texts,
    batch_size: int = 8,
    show_progress: bool = False,
    state: PartialState | None = None,
) -> datasets.Dataset:
    """prompt / completion / cot / anchors rows for `LasarSFTTrainer`, one per window.

    `model` is the Stage-1 model the anchors come from (and whose prompt template the rows
    use); they are read from, or added to, the store at `anchor_store`, which refuses anchors
    of another model or SID map. With
    `merge_threshold`, neighbouring sentences as similar as that (by `embed`, default
    all-MiniLM-L6-v2) form one segment; without, each sentence is one. With `state`, every
    process calls and each extracts its share of the anchors (see `anchors_for_samples`).
    """
    if len(cots) != len(windows):
        raise ValueError(f"{len(cots)} CoTs for {len(windows)} samples: one per sample")
    for index, cot in enumerate(cots):
        if not cot or not cot.strip():
            raise ValueError(f"sample {index} (user {windows[index].user_id}) has an empty CoT")
    rows = recommendation_dataset(windows, sid_map, prompt_template_of(model))
    segments = segment_all(cots, embed if merge_threshold is not None else None, merge_threshold or 0.0)
    counts = [len(row) for row in segments]
    logger.info(
        "%d samples, %.2f CoT segments on average (max %d)", len(counts), sum(counts) / len(counts), max(counts)
    )
    anchors = anchors_for_samples(
        model,
        tokenizer,
        sid_map,
        rows["prompt"],
        list(cots),
        segments,
        anchor_store,
        batch_size=batch_size,
        show_progress=show_progress,
        state=state,
    )
    features = rows.features.copy()
    features["cot"] = datasets.Value("string")
    features["anchors"] = datasets.List(datasets.List(datasets.Value("float32")))
    return datasets.Dataset.from_dict(
        {**rows.to_dict(), "cot": list(cots), "anchors": [a.tolist() for a in anchors]}, features=features
    )
