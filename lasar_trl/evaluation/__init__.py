"""Recommendation (with the constrained beam search of `lasar_trl.decoding`), metrics and evaluation runs."""

from .evaluate import evaluate_recommender, format_table, most_popular_baseline
from .metrics import catalog_coverage, hit_rate_at_k, invalid_rate, ndcg_at_k, ranking_metrics
from .recommend import Recommendations, recommend

__all__ = [
    "Recommendations",
    "catalog_coverage",
    "evaluate_recommender",
    "format_table",
    "hit_rate_at_k",
    "invalid_rate",
    "most_popular_baseline",
    "ndcg_at_k",
    "ranking_metrics",
    "recommend",
]
