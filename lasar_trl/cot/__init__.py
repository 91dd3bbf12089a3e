"""Chain-of-thought data: rationale writers and the segmenter."""

from .anchors import (
    AnchorMismatchError,
    AnchorStore,
    anchor_token_positions,
    anchors_for_samples,
    extract_anchors,
    model_fingerprint,
    sample_key,
)
from .segment import merge_similar, segment, segment_end_offsets, split_sentences
from .teacher import (
    RATIONALE_INSTRUCTION,
    HFTeacher,
    OpenAITeacher,
    Teacher,
    generate_cached,
    rationale_request,
)
from .writer import MetadataRationaleWriter

__all__ = [
    "AnchorMismatchError",
    "AnchorStore",
    "HFTeacher",
    "MetadataRationaleWriter",
    "OpenAITeacher",
    "RATIONALE_INSTRUCTION",
    "Teacher",
    "anchor_token_positions",
    "anchors_for_samples",
    "extract_anchors",
    "generate_cached",
    "merge_similar",
    "model_fingerprint",
    "rationale_request",
    "sample_key",
    "segment",
    "segment_end_offsets",
    "split_sentences",
]
