"""lasar-trl: TRL trainers for LLM recommenders over Semantic IDs with latent reasoning.

`lasar_trl.Recommender` serves a trained checkpoint. It is imported on first use, so that
`import lasar_trl.<module>` (e.g. the data or file helpers) does not load torch and transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .recommender import Recommender

__all__ = ["Recommender"]


def __getattr__(name: str):
    if name == "Recommender":
        from .recommender import Recommender

        return Recommender
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
