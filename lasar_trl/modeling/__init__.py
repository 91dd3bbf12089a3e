"""Model loading, checkpoints and the calls into the decoder."""

from .checkpoint import SID_MAP_FILE, SidMapMismatchError, check_same_sid_map, load_recommender
from .loading import EMBEDDED_MODEL, resolve_model_path

__all__ = [
    "EMBEDDED_MODEL",
    "SID_MAP_FILE",
    "SidMapMismatchError",
    "check_same_sid_map",
    "load_recommender",
    "resolve_model_path",
]
