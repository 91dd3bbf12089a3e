"""Semantic IDs: item embeddings -> RQ-KMeans codes -> a unique SID per item."""

from .build import build_sid_map
from .rqkmeans import residual_kmeans
from .sid_map import SidMap

__all__ = ["SidMap", "build_sid_map", "residual_kmeans"]
