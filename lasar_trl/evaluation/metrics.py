"""Ranking metrics for next-item recommendation (pure functions).

`ranked` holds, per request, item ids best first; `targets` the true next item.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

DEFAULT_KS = (1, 5, 10, 20)


def _target_rank(ranked: Sequence[str], target: str, k: int) -> int | None:
    """1-based rank of `target` within the first k items, or None."""
    for rank, item in enumerate(ranked[:k], start=1):
        if item == target:
            return rank
    return None


def hit_rate_at_k(ranked: Sequence[Sequence[str]], targets: Sequence[str], k: int) -> float:
    """Fraction of requests whose target is in the top k."""
    _check_lengths(ranked, targets)
    return sum(_target_rank(r, t, k) is not None for r, t in zip(ranked, targets)) / len(targets)


def ndcg_at_k(ranked: Sequence[Sequence[str]], targets: Sequence[str], k: int) -> float:
    """NDCG@k with one relevant item: 1 / log2(rank + 1) if the target ranks within k, else 0."""
    _check_lengths(ranked, targets)
    gains = (_target_rank(r, t, k) for r, t in zip(ranked, targets))
    return sum(1.0 / math.log2(rank + 1) for rank in gains if rank is not None) / len(targets)


def ranking_metrics(
    ranked: Sequence[Sequence[str]], targets: Sequence[str], ks: Iterable[int] = DEFAULT_KS
) -> dict[str, float]:
    """`hr@k` and `ndcg@k` for every k."""
    metrics = {}
    for k in ks:
        metrics[f"hr@{k}"] = hit_rate_at_k(ranked, targets, k)
        metrics[f"ndcg@{k}"] = ndcg_at_k(ranked, targets, k)
    return metrics


def invalid_rate(generated_sids: Sequence[str], valid_sids: set[str]) -> float:
    """Fraction of generated SID strings that name no item (0 under the trie constraint)."""
    if not generated_sids:
        return 0.0
    return sum(sid not in valid_sids for sid in generated_sids) / len(generated_sids)


def catalog_coverage(ranked: Sequence[Sequence[str]], num_catalog_items: int, k: int) -> float:
    """Share of the catalog that appears in at least one top-k list."""
    if num_catalog_items <= 0:
        raise ValueError("num_catalog_items must be positive")
    return len({item for r in ranked for item in r[:k]}) / num_catalog_items


def _check_lengths(ranked: Sequence, targets: Sequence) -> None:
    if len(ranked) != len(targets):
        raise ValueError(f"{len(ranked)} ranked lists for {len(targets)} targets")
    if not targets:
        raise ValueError("no requests to score")
