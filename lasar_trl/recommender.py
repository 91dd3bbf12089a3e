"""A trained checkpoint as a recommender: raw item ids in, items with titles, scores and the
reasoning depth out. A thin layer over `lasar_trl.evaluation.recommend.recommend`, so what it
serves is exactly what evaluation measured."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .evaluation.recommend import recommend
from .modeling.checkpoint import load_recommender, max_history_of
from .sid.sid_map import SidMap
from .sid.trie import SidTrie

DEFAULT_NUM_BEAMS = 20  # evaluation's default (`RecScriptArguments.eval_num_beams`)


@dataclass(frozen=True)
class Recommendation:
    """One history's recommendations, best first."""

    items: list[str]  # distinct item ids of the checkpoint's SID map
    titles: list[str | None]  # from the catalog given; None where it has no title, or without a catalog
    scores: list[float]  # the items' SID log-probs under the beam search
    depth: int  # latent steps reasoned: the Policy Head's choice, the fixed depth, or the forced `depth`


class Recommender:
    """A model, its tokenizer and SID map, ready to recommend from histories of raw item ids.

    `max_history`: the items of a history that go into the prompt (its last ones); by default
    the `max_history` the checkpoint was trained with (its config.json records it), or 10, with a
    warning, for a checkpoint from before it was recorded. `catalog`: item id -> fields (a
    `RecData.catalog`, e.g. `load_dataset_spec("ml-100k").catalog`), for the titles; a
    checkpoint folder does not record where its dataset lives. Every item of the SID map must be
    in it, so nothing outside the catalog is ever recommended.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        sid_map: SidMap,
        *,
        max_history: int | None = None,
        catalog: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.max_history = max_history_of(model, max_history, where=model.config._name_or_path or "the model")
        if catalog is not None:
            missing = [item for item in sid_map.item_ids if item not in catalog]
            if missing:
                raise ValueError(
                    f"the catalog lacks {len(missing)} of the checkpoint's {len(sid_map)} items, e.g. {missing[0]!r}: "
                    "pass the catalog of the dataset the checkpoint was trained on"
                )
        self.model, self.tokenizer, self.sid_map = model, tokenizer, sid_map
        self.catalog = catalog
        self.trie = SidTrie.from_sid_map(sid_map, tokenizer).to(model.device)  # built once, not per call

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        max_history: int | None = None,
        catalog: Mapping[str, Mapping[str, str]] | None = None,
    ) -> Recommender:
        """Load a Stage-1, 2 or 3 checkpoint, a LoRA adapter folder (merged onto its base) or a
        merged folder (see `load_recommender`). `device`: CUDA when available, else CPU;
        `dtype`: the checkpoint's own ("auto")."""
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model, tokenizer, sid_map = load_recommender(path, dtype=dtype or "auto", device=device)
        return cls(model, tokenizer, sid_map, max_history=max_history, catalog=catalog)

    def unknown_items(self, history: Sequence[str]) -> list[str]:
        """The distinct items of `history` that the checkpoint's SID map lacks, in order."""
        return list(dict.fromkeys(item for item in history if item not in self.sid_map))

    def title(self, item: str) -> str | None:
        return (self.catalog.get(item, {}).get("title") or None) if self.catalog is not None else None

    def recommend(
        self,
        histories: Sequence[Sequence[str]],
        top_k: int = 10,
        depth: int | None = None,
        exclude_seen: bool = True,
        *,
        batch_size: int = 8,
        num_beams: int | None = None,
        show_progress: bool = False,
    ) -> list[Recommendation]:
        """Top-k items per history (item ids, oldest first), batched.

        The prompt holds each history's last `max_history` items; `exclude_seen` bans all of
        them. `depth` forces that many latent steps (refused above the checkpoint's n_max,
        warned about on a checkpoint without latent steps). `num_beams`: 20, or `top_k` when
        larger. An item the SID map lacks raises ValueError naming it and its history's index."""
        if isinstance(histories, str) or any(isinstance(history, str) for history in histories):
            raise TypeError("histories is a list of histories, each a list of item ids")
        for index, history in enumerate(histories):
            if not history:
                raise ValueError(f"history {index} is empty: a recommendation needs at least one item")
            unknown = self.unknown_items(history)
            if unknown:
                raise ValueError(
                    f"history {index}: item {unknown[0]!r} is not in the checkpoint's SID map "
                    f"({len(unknown)} unknown in this history)"
                )
        recs = recommend(
            self.model,
            self.tokenizer,
            self.sid_map,
            [history[-self.max_history :] for history in histories],
            top_k=top_k,
            num_beams=max(top_k, DEFAULT_NUM_BEAMS) if num_beams is None else num_beams,
            batch_size=batch_size,
            exclude_items=histories if exclude_seen else None,
            trie=self.trie,
            depth=depth,
            show_progress=show_progress,
        )
        return [
            Recommendation(items=items, titles=[self.title(item) for item in items], scores=scores, depth=used)
            for items, scores, used in zip(recs.items, recs.scores, recs.depths)
        ]
